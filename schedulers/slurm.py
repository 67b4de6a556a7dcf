"""The Slurm scheduler: ``sbatch`` submits, one ``squeue`` call reports, ``scancel`` cancels."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from launcher.nodes import expand_hostlist
from schedulers.base import AllocationState, AllocationStatus, Scheduler, SchedulerError, SubmitRequest, run_command

DEFAULT_TIMEOUT_S = 30.0
NO_PROJECT = "none"  # a site's placeholder project: sbatch gets no -A (the user's default account is charged)
DEFAULT_QUEUE = "default"  # sbatch gets no -p (Slurm's default partition)

# Every job state squeue knows (22.05: `squeue -t BOGUS` lists them) and what it means for the allocation.
STATES: dict[str, AllocationState] = {
    "PENDING": "queued",
    "CONFIGURING": "queued",  # nodes allocated but still booting: the job script has not started
    "REQUEUED": "queued",
    "REQUEUE_HOLD": "queued",
    "REQUEUE_FED": "queued",
    "RESV_DEL_HOLD": "queued",
    "SPECIAL_EXIT": "queued",  # requeued and held: still in the queue until released or cancelled
    "RUNNING": "running",
    "COMPLETING": "running",  # the script ended but processes or the epilog may still run on the nodes
    "SUSPENDED": "running",
    "STOPPED": "running",
    "RESIZING": "running",
    "SIGNALING": "running",
    "STAGE_OUT": "running",
    "COMPLETED": "finished",
    "CANCELLED": "finished",
    "FAILED": "finished",
    "TIMEOUT": "finished",
    "NODE_FAIL": "finished",
    "PREEMPTED": "finished",
    "BOOT_FAIL": "finished",
    "DEADLINE": "finished",
    "OUT_OF_MEMORY": "finished",
    "REVOKED": "finished",
}

# squeue --Format fields, '|'-separated and unpadded; the job name comes last so that it may contain '|'.
# exit_code is the raw wait status (768 for `exit 3`, 15 for SIGTERM), which spares a second call to scontrol.
_FIELDS = ("JobID", "State", "StartTime", "EndTime", "NodeList", "exit_code", "Reason")
SQUEUE_FORMAT = ",".join(f"{field}:|" for field in _FIELDS) + ",Name:"
_ID = re.compile(r"(\d+)\S*")  # 123, 123_4 (array), 123+0 (heterogeneous)
_STATE = re.compile(r"[A-Z][A-Z_]*")
_SBATCH_ID = re.compile(r"(\d+)(?:;\S+)?")
_GONE = ("Invalid job id", "already completing or completed")  # scancel of a job Slurm no longer runs


class SlurmScheduler(Scheduler):
    """Submits with sbatch, follows with squeue (finished jobs stay visible for Slurm's MinJobAge), cancels."""

    kind: ClassVar[str] = "slurm"

    def __init__(self, site_path: Path, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(site_path)
        self.timeout = timeout

    def submit_command(self, req: SubmitRequest) -> list[str]:
        """``sbatch --parsable``; no ``-p`` for the ``default`` queue, no ``-A`` for the ``none`` project."""
        argv = ["sbatch", "--parsable", "--job-name", req.job_name, "-N", str(req.num_nodes)]
        argv += ["-t", str(req.wall_time_min)]
        if req.queue != DEFAULT_QUEUE:
            argv += ["-p", req.queue]
        if req.project != NO_PROJECT:
            argv += ["-A", req.project]
        argv += ["--output", str(req.output_dir / f"{req.job_name}.%j.out"), *req.extra_args, str(req.script_path)]
        return argv

    def submit(self, req: SubmitRequest) -> str:
        """Submit the job script; SchedulerError carries sbatch's own words when it refuses."""
        argv = self.submit_command(req)
        req.output_dir.mkdir(parents=True, exist_ok=True)
        stdout = self._run(argv).stdout
        lines = stdout.strip().splitlines()
        match = _SBATCH_ID.fullmatch(lines[-1].strip()) if lines else None
        if match is None:
            raise SchedulerError(argv, 0, f"unexpected sbatch output: {stdout!r}")
        return match.group(1)

    def status(self, scheduler_ids: Sequence[str]) -> dict[str, AllocationStatus]:
        """One ``squeue -t all -j ...``; when it refuses an id (22.05 does so only for a lone unknown id), the
        unfiltered ``squeue -t all``. A requested id whose line cannot be parsed raises rather than go missing."""
        wanted = list(dict.fromkeys(scheduler_ids))
        if not wanted:
            return {}
        argv = ["squeue", "-h", "-t", "all", "-j", ",".join(wanted), "-O", SQUEUE_FORMAT]
        try:
            text = self._run(argv).stdout
        except SchedulerError as exc:
            if exc.returncode is None or "Invalid job id" not in exc.stderr:
                raise
            argv = ["squeue", "-h", "-t", "all", "-O", SQUEUE_FORMAT]
            text = self._run(argv).stdout
        statuses, unparsed = parse_squeue(text)
        for line in unparsed:
            if line.split("|", 1)[0].strip() in wanted:
                raise SchedulerError(argv, 0, f"cannot parse squeue line {line!r}")
        return {sid: statuses[sid] for sid in wanted if sid in statuses}

    def cancel(self, scheduler_id: str) -> None:
        """``scancel ID``; a job Slurm no longer knows or that already ends is a no-op."""
        try:
            self._run(["scancel", scheduler_id])
        except SchedulerError as exc:
            if exc.returncode is None or not any(words in exc.stderr for words in _GONE):
                raise

    def find_by_name(self, job_name: str) -> str | None:
        """The newest allocation called ``job_name`` that Slurm still shows, finished ones included."""
        stdout = self._run(["squeue", "-h", "-n", job_name, "-o", "%i", "-t", "all"]).stdout
        ids = {int(match[1]): match[0] for match in map(_ID.fullmatch, stdout.split()) if match}
        return ids[max(ids)] if ids else None

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return run_command(argv, timeout=self.timeout)


def parse_squeue(text: str) -> tuple[dict[str, AllocationStatus], list[str]]:
    """Statuses by id from ``squeue -h -O SQUEUE_FORMAT`` output, and the non-blank lines that are not such a line.

    Never raises. A state missing from :data:`STATES` is kept, with a message: "running" if the job has started,
    else "queued". Times are squeue's local times as aware UTC; exit codes only for finished jobs, 128 + N for a
    job killed by signal N (as a shell reports it).
    """
    statuses: dict[str, AllocationStatus] = {}
    unparsed: list[str] = []
    for line in text.split("\n"):
        fields = [field.strip() for field in line.split("|", len(_FIELDS))]
        if len(fields) == len(_FIELDS) + 1 and _ID.fullmatch(fields[0]) and _STATE.fullmatch(fields[1]):
            statuses[fields[0]] = _status(*fields[: len(_FIELDS)])
        elif line.strip():
            unparsed.append(line)
    return statuses, unparsed


def _status(
    sid: str, raw_state: str, start_text: str, end_text: str, nodelist: str, wait_text: str, reason: str
) -> AllocationStatus:
    nodes, notes = _nodes(nodelist)
    start, end, exit_code = _time(start_text), _time(end_text), None
    state = STATES.get(raw_state)
    if state is None:
        state = "running" if start is not None and start <= datetime.now(UTC) else "queued"
        notes.insert(0, f"unknown Slurm state {raw_state}")
    if state == "queued":
        start = end = None  # a pending job's StartTime is a forecast
        if reason not in ("", "None"):
            notes.append(f"reason {reason}")
    elif state == "running":
        end = None  # a running job's EndTime is its time limit
    else:
        start = start if nodelist else None  # a job cancelled while pending gets the cancel time as StartTime
        exit_code, note = _exit_code(wait_text)
        notes += [note] if note else []
    return AllocationStatus(sid, state, raw_state, start, end, exit_code, nodes, "; ".join(notes))


def _exit_code(text: str) -> tuple[int | None, str]:
    """The exit code from a raw wait status (``768`` -> 3; 128 + N for signal N) and a note; None if garbage."""
    try:
        wait_status = int(text)
    except ValueError:
        return None, ""
    signal = wait_status & 0x7F
    if signal:
        return 128 + signal, f"killed by signal {signal}"
    code = (wait_status >> 8) & 0xFF
    return code, f"exit code {code}"


def _time(text: str) -> datetime | None:
    """A squeue time (local time without a zone) as aware UTC; None for ``N/A``, ``Unknown`` and the like."""
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _nodes(nodelist: str) -> tuple[tuple[str, ...], list[str]]:
    """The expanded node list, and a note if it cannot be expanded."""
    if not nodelist:
        return (), []
    try:
        return tuple(expand_hostlist(nodelist)), []
    except ValueError:
        return (), [f"cannot expand node list {nodelist!r}"]
