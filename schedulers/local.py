"""The local scheduler: the OS process manager takes the place of the resource manager."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import psutil

from balsamctl.schedulers.base import AllocationStatus, Host, Scheduler, SchedulerError, SubmitRequest

if TYPE_CHECKING:
    from balsamctl.schemas.settings import LocalNodes

# The allocation wrapper, `bash <state dir>/allocation.sh <script> <state dir>`: it runs the script, records its exit
# code in <state dir>/<pid>.exit (a stale one from an earlier process with this pid is removed first), then ends
# every other process of its session, as a batch scheduler does at the end of an allocation: SIGTERM, then SIGKILL
# to what is left after a grace. The wrapper leads the allocation's session, and everything started inside stays in
# it: the launcher, and its Jobs in process groups of their own. So once the wrapper is gone, no process of the
# allocation runs any more, and a Job it ran may safely run again elsewhere, even if its launcher was SIGKILLed. The
# TERM trap keeps the wrapper alive until the script and the session are gone, so "leader alive" means "allocation
# alive"; the script itself gets the default TERM handler. A TERM that arrives before the script starts means it
# never starts. (A file rather than `bash -c`: short command lines and events; replaced atomically when it changes.)
WRAPPER_NAME = "allocation.sh"
_SESSION_GRACE_TICKS = 40  # of 0.05 s: SIGTERM to SIGKILL for what outlives the script
_WRAPPER = "\n".join(
    [
        "# balsamctl: runs one job script of the local scheduler (see schedulers/local.py)",
        "trap stop=1 TERM",
        'rm -f "$2/$$.exit"',
        "export BALSAM_SCHEDULER_ID=$$",
        '[ -z "$stop" ] || exit',
        'bash "$1"',
        'echo $? > "$2/$$.exit"',
        "# others SIG: send SIG to every live process of this session but this one; false if there is none.",
        '# Builtins only (no fork per process); /proc/PID/stat is "pid (comm) state ppid pgrp session ...".',
        "others() {",
        "  local stat line rest pid found=1",
        "  local -a fields",
        "  for stat in /proc/[0-9]*/stat; do",
        '    { read -r line < "$stat"; } 2>/dev/null || continue',
        "    rest=${line##*) }; fields=($rest)",
        "    pid=${stat#/proc/}; pid=${pid%/stat}",
        "    case ${fields[0]} in Z | X) continue ;; esac  # zombie or dead: nothing left to end",
        '    if [ "${fields[3]}" = $$ ] && [ "$pid" != $$ ]; then',
        '      kill -"$1" "$pid" 2>/dev/null && found=0',
        "    fi",
        "  done",
        "  return $found",
        "}",
        "if others TERM; then",
        f"  for ((i = 0; i < {_SESSION_GRACE_TICKS}; i++)); do sleep 0.05; others 0 || break; done",
        "  while others KILL; do sleep 0.05; done",
        "fi",
        "",
    ]
)
KILL_GRACE_S = 30.0  # seconds between SIGTERM and SIGKILL
_SESSION_KILL_WAIT_S = 2.0  # how long a status call waits for SIGKILLed leftovers to be gone
# psutil's create_time is boot time (whole seconds) + ticks since boot; a small wall clock step shifts the boot time.
_CREATE_TIME_TOLERANCE_S = 1.5

EndReason = Literal["cancelled", "timeout"]


@dataclass(frozen=True)
class _Record:
    """What submit() remembers about an allocation, in <site>/qsubmit/.local/<id>.json."""

    pid: int
    create_time: float
    job_name: str
    wall_time_min: int
    submit_time: float
    exit_file: str
    term_sent_at: float | None = None
    end_reason: EndReason | None = None


class LocalScheduler(Scheduler):
    """Runs each job script as a detached process session on this machine; the scheduler id is its pid."""

    kind: ClassVar[str] = "local"

    def __init__(self, site_path: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(site_path)
        self.clock = clock
        self.state_dir = site_path / "qsubmit" / ".local"

    @classmethod
    def hosts_from_environment(cls, env: Mapping[str, str], local: LocalNodes) -> list[Host]:
        """The allocation's ``BALSAM_NUM_NODES`` of the site's ``local.count`` emulated nodes ``local0..``
        (``localhost`` if the site has one), each with ``local``'s CPUs and GPUs."""
        count = min(local.count, int(env.get("BALSAM_NUM_NODES") or local.count))  # the allocation's share
        names = ["localhost"] if local.count == 1 else [f"local{i}" for i in range(count)]
        return [Host(name, local.cpus_per_node, local.gpus_per_node) for name in names]

    def submit_command(self, req: SubmitRequest) -> list[str]:
        """``bash <state dir>/allocation.sh <script> <state dir>``: the wrapper runs the script, records its exit
        code and ends what is left of the allocation."""
        return ["bash", str(self.state_dir / WRAPPER_NAME), str(req.script_path), str(self.state_dir)]

    def submit(self, req: SubmitRequest) -> str:
        """Start the job script as a new session, output to ``<output_dir>/<job_name>.out`` (appended)."""
        argv = self.submit_command(req)
        if not req.script_path.is_file():
            raise SchedulerError(argv, 1, f"job script not found: {req.script_path}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._install_wrapper()
        req.output_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "BALSAM_JOB_NAME": req.job_name,
            "BALSAM_NUM_NODES": str(req.num_nodes),
            "BALSAM_WALL_TIME_MIN": str(req.wall_time_min),
        }
        try:
            with open(req.output_dir / f"{req.job_name}.out", "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise SchedulerError(argv, 127, str(exc)) from exc
        create_time = psutil.Process(proc.pid).create_time()  # before reaping: a zombie still has it
        threading.Thread(target=proc.wait, name=f"reap-local-{proc.pid}", daemon=True).start()
        record = _Record(
            pid=proc.pid,
            create_time=create_time,
            job_name=req.job_name,
            wall_time_min=req.wall_time_min,
            submit_time=self.clock(),
            exit_file=str(self.state_dir / f"{proc.pid}.exit"),
        )
        self._save(record)
        return str(proc.pid)

    def status(self, scheduler_ids: Sequence[str]) -> dict[str, AllocationStatus]:
        """Status of each known id, enforcing walltimes and the SIGKILL grace on the way.

        An allocation is finished only once no process of its session runs: what outlived its session leader
        (which normally ends them itself) is killed first.
        """
        result: dict[str, AllocationStatus] = {}
        ended: list[tuple[str, _Record]] = []
        for scheduler_id in scheduler_ids:
            record = self._load(scheduler_id)
            if record is None:
                continue
            if _alive(record):
                result[scheduler_id] = self._running(scheduler_id, self._enforce(record))
            else:
                ended.append((scheduler_id, record))
        _kill_sessions([record for _, record in ended])
        for scheduler_id, record in ended:
            result[scheduler_id] = _finished(scheduler_id, record)
        return result

    def cancel(self, scheduler_id: str) -> None:
        """SIGTERM the allocation's process group (script, launcher), then SIGCONT as scancel does (a stopped process
        gets its SIGTERM); SIGKILL to its whole session after the grace."""
        record = self._load(scheduler_id)
        if record is None or not _alive(record):
            return
        _terminate(record)
        self._save(
            replace(
                record,
                term_sent_at=record.term_sent_at or self.clock(),
                end_reason=record.end_reason or "cancelled",
            )
        )

    def find_by_name(self, job_name: str) -> str | None:
        """The id of the newest allocation with this job name, finished ones included."""
        if not self.state_dir.is_dir():
            return None
        records = (self._load(path.stem) for path in self.state_dir.glob("*.json"))
        mine = [r for r in records if r is not None and r.job_name == job_name]
        if mine:
            return str(max(mine, key=lambda r: r.submit_time).pid)
        adopted = self._unrecorded(job_name)
        return str(adopted.pid) if adopted else None

    def _unrecorded(self, job_name: str) -> _Record | None:
        """A live allocation started before its record could be written (a controller killed in between): found
        by its wrapper's command line and its environment, and recorded now."""
        wrapper = str(self.state_dir / WRAPPER_NAME)
        for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
            try:
                if wrapper not in (proc.info["cmdline"] or []) or proc.pid != os.getsid(proc.pid):
                    continue
                env = proc.environ()
            except (psutil.Error, OSError):
                continue
            if env.get("BALSAM_JOB_NAME") == job_name:
                record = _Record(
                    pid=proc.pid,
                    create_time=proc.info["create_time"],
                    job_name=job_name,
                    wall_time_min=int(env.get("BALSAM_WALL_TIME_MIN") or 0),
                    submit_time=proc.info["create_time"],
                    exit_file=str(self.state_dir / f"{proc.pid}.exit"),
                )
                self._save(record)
                return record
        return None

    def _enforce(self, record: _Record) -> _Record:
        """SIGTERM an allocation past its walltime; SIGKILL one still alive a grace period after SIGTERM."""
        now = self.clock()
        if record.term_sent_at is None:
            if now - record.submit_time > record.wall_time_min * 60:
                _terminate(record)
                record = replace(record, term_sent_at=now, end_reason="timeout")
                self._save(record)
        elif now - record.term_sent_at >= KILL_GRACE_S:
            _kill_sessions([record])
        return record

    def _running(self, scheduler_id: str, record: _Record) -> AllocationStatus:
        message = ""
        if record.term_sent_at is not None:
            message = f"{record.end_reason}: SIGTERM sent, SIGKILL {KILL_GRACE_S:.0f} s later if still alive"
        return AllocationStatus(
            scheduler_id=scheduler_id,
            state="running",
            raw_state="RUNNING",
            start_time=_utc(record.create_time),
            nodes=(socket.gethostname(),),
            message=message,
        )

    def _install_wrapper(self) -> None:
        """Write the allocation wrapper if it is missing or differs; a new inode, so running wrappers read on."""
        path = self.state_dir / WRAPPER_NAME
        with contextlib.suppress(OSError):
            if path.read_text() == _WRAPPER:
                return
        tmp = path.with_name(f".{WRAPPER_NAME}.{os.getpid()}.tmp")
        tmp.write_text(_WRAPPER)
        os.replace(tmp, path)

    def _record_path(self, scheduler_id: str) -> Path:
        return self.state_dir / f"{scheduler_id}.json"

    def _load(self, scheduler_id: str) -> _Record | None:
        if not scheduler_id.isdigit():
            return None
        try:
            data = json.loads(self._record_path(scheduler_id).read_text())
        except FileNotFoundError:
            return None
        return _Record(**data)

    def _save(self, record: _Record) -> None:
        path = self._record_path(str(record.pid))
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)


def _alive(record: _Record) -> bool:
    """True if the recorded session leader still runs: same pid, same create_time, not a zombie."""
    try:
        proc = psutil.Process(record.pid)
        return _is_recorded(proc, record) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_recorded(proc: psutil.Process, record: _Record) -> bool:
    """Whether ``proc`` is the recorded process, not a later one that got its pid."""
    return abs(proc.create_time() - record.create_time) < _CREATE_TIME_TOLERANCE_S


def _signal_group(record: _Record, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, sig)


def _terminate(record: _Record) -> None:
    """SIGTERM to the allocation's process group, then SIGCONT: a stopped process (SIGSTOP, a debugger) gets the
    SIGTERM too, instead of waiting for the SIGKILL."""
    _signal_group(record, signal.SIGTERM)
    _signal_group(record, signal.SIGCONT)


def _kill_sessions(records: Sequence[_Record]) -> None:
    """SIGKILL every process of these allocations' sessions (their leaders too), and wait until they are gone.

    A session id cannot be reused while any process still has it, so the processes whose session id is a recorded
    pid belong to that allocation, unless another process now has that pid (the session is then long gone).
    """
    sessions = {r.pid for r in records if _session_is_ours(r)}
    if not sessions:
        return
    doomed = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()
                doomed.append(proc)
        except (OSError, psutil.Error):
            continue
    deadline = time.monotonic() + _SESSION_KILL_WAIT_S
    while doomed and time.monotonic() < deadline:
        doomed = [p for p in doomed if _still_running(p)]
        if doomed:
            time.sleep(0.01)


def _session_is_ours(record: _Record) -> bool:
    """Whether the session the record's pid leads (or led) is still this allocation's, not a recycled pid's."""
    try:
        return _is_recorded(psutil.Process(record.pid), record)
    except psutil.NoSuchProcess:
        return True


def _still_running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _finished(scheduler_id: str, record: _Record) -> AllocationStatus:
    exit_file = Path(record.exit_file)
    try:
        exit_code: int | None = int(exit_file.read_text().strip())
        end_time = _utc(exit_file.stat().st_mtime)
    except (FileNotFoundError, ValueError):
        exit_code, end_time = None, None
    if record.end_reason is not None:
        raw_state = record.end_reason.upper()
    else:
        raw_state = "COMPLETED" if exit_code == 0 else "FAILED"
    return AllocationStatus(
        scheduler_id=scheduler_id,
        state="finished",
        raw_state=raw_state,
        start_time=_utc(record.create_time),
        end_time=end_time,
        exit_code=exit_code,
        nodes=(socket.gethostname(),),
        message="killed before its exit code was recorded" if exit_code is None else f"exit code {exit_code}",
    )


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)
