"""Starting and reaping Job processes: shared by the mpi mode and the serial-mode workers.

A :class:`Task` is everything needed to run one Job (it crosses MPI between serial-mode ranks, so it is plain
data); a :class:`ProcessGroup` runs Tasks as process groups of their own and reports their outcomes.

A Job's process group stays in the launcher's session (the allocation's), never a session of its own: whatever
ends an allocation (the local scheduler, or a batch scheduler's end of job) ends every process of its session,
Jobs included, so a Job never outlives the allocation that ran it, not even after its launcher was SIGKILLed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from balsamctl.site.joboutput import output_path, read_tail

if TYPE_CHECKING:  # the local worker imports this module: it stays free of pydantic and the rest
    from balsamctl.launcher.nodes import Node
    from balsamctl.launcher.placement import Placement

TAIL_BYTES = 2000
"""The end of a failed run's output kept in the store (its message, ``describe job``)."""
DONE_TAIL_BYTES = 512
"""The end of a successful run's output kept in the store: ``logs`` of a site on another machine shows it."""
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\\*?\[\]~{}#\n]|^\s*\w+=")


@dataclass(frozen=True)
class Task:
    """One Job to run: its command line, workdir, own environment variables and attempt number."""

    job_id: int
    name: str
    argv: tuple[str, ...]
    workdir: str
    env: tuple[tuple[str, str], ...]
    attempt: int
    cpus: tuple[int, ...] = ()
    """CPUs to pin the process to (empty: not pinned)."""
    via_mpi: bool = False
    """``argv[0]`` is the allocation's MPI launch command, not the App's own program."""


class Pinning:
    """Which CPUs a Job is pinned to: its placement's, on a node whose every CPU id is one of this process's (its
    CPU mask, read once). An emulated node with more CPUs than the host pins nothing: half its Jobs pinned and half
    not would share the same few CPUs anyway."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        available = os.sched_getaffinity(0)
        self.nodes = frozenset(n.name for n in nodes if available.issuperset(n.cpu_ids))

    def cpus(self, placement: Placement) -> tuple[int, ...]:
        """The CPUs to pin a Job placed so to (empty: not pinned)."""
        return placement.cpu_ids if placement.hosts[0] in self.nodes else ()


@contextlib.contextmanager
def _pinned(cpus: tuple[int, ...], own: set[int]) -> Iterator[None]:
    """Pin this thread to ``cpus`` while a child is forked, then back to ``own``: the child inherits the mask from
    its first instruction (pinning it after the start would race with the children it forks at once), and no
    preexec_fn slows every launch down. Empty ``cpus``: nothing changes."""
    if not cpus:
        yield
        return
    try:
        os.sched_setaffinity(0, cpus)
    except OSError:  # CPUs this host cannot give: run unpinned
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


@dataclass(frozen=True)
class Outcome:
    """How one Task ended: its return code (None if it could not start), the tail of its output, why, and when
    (epoch seconds: where it was reaped, not when its launcher heard of it). ``cause``: why it could not start when
    the allocation or the site is to blame, not the Job (a CamelCase reason, see :func:`start_failure`)."""

    job_id: int
    name: str
    return_code: int | None
    tail: str
    killed: str = ""
    end_time: float = field(default_factory=time.time)
    cause: str = ""


class CannotStart(Exception):
    """A Task that could not start; ``cause`` says whether the node or site is to blame (see
    :func:`start_failure`)."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


NODE_LOST = "NodeLost"
"""The cause of the Outcomes of the Tasks a lost serial-mode worker had started (or may have): such a run counts as
one lost with its launcher (a crash, ``launcher.crash_limit``), and the node is fenced at once."""
WORKER_UNREACHABLE = "WorkerUnreachable"
"""The cause of the Outcomes of Tasks that never reached their node's worker (it was lost): a start failure, and the
node is fenced at once."""

#: A start refused by the node whatever the command: no process, memory or descriptor to be had.
_NODE_REFUSED = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})
#: A file system that refuses every Job's files alike: full, over quota, read-only, failing.
_FILE_SYSTEM_REFUSED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def start_failure(exc: OSError, step: str, via_mpi: bool) -> str:
    """Who is to blame for a start that failed with ``exc`` at ``step`` (``output``: making the Job's workdir or
    opening its output file; ``exec``: starting its process). The rule of failure classes for starts (what becomes
    of each class is :func:`balsamctl.launcher.pilot.result_of`'s):

    - the allocation or the site (an *infrastructure* failure, never charged to the Job; returns its class):
      ``WorkdirRefused`` (the file system refused the workdir or the output file as it would any Job's: full, over
      quota, read-only, I/O error), ``ForkRefused`` (no process, memory or descriptor to be had: EAGAIN, ENOMEM,
      EMFILE, ENFILE), ``MPICommandNotFound`` / ``MPICommandNotExecutable`` (the allocation's MPI launch command);
    - the Job (returns ``""``, charged to ``max_retries``): its own workdir refused for its own sake (a file in the
      way, no permission, a symlink loop, a name too long), its App's own program missing or not executable. A
      process that started and exited non-zero, or was killed by a signal its launcher did not send, is the Job's
      too (that is not a start failure at all).
    """
    if exc.errno in _NODE_REFUSED:
        return "ForkRefused"
    if step == "output":
        return "WorkdirRefused" if exc.errno in _FILE_SYSTEM_REFUSED else ""
    if via_mpi:
        return "MPICommandNotFound" if exc.errno == errno.ENOENT else "MPICommandNotExecutable"
    return ""


@functools.lru_cache(maxsize=1024)
def shell_argv(command: str) -> tuple[str, ...]:
    """The argv of a shell command: exec'd directly when it is a plain command line, else through bash."""
    if not _SHELL_SYNTAX.search(command):
        with contextlib.suppress(ValueError):
            words = shlex.split(command)
            if words:
                return tuple(words)
    return ("bash", "-c", command)


class _Spawned:
    """A child started with ``posix_spawn``: what a ProcessGroup asks of a Popen (pid, poll, wait, returncode)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Its exit code (negative: the signal that ended it) once it ended, else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code once it ends; TimeoutExpired after ``timeout`` seconds."""
        if timeout is None and self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        deadline = time.monotonic() + (timeout or 0.0)
        while (rc := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.005)
        return rc


_Proc = subprocess.Popen[bytes] | _Spawned


@dataclass
class _Running:
    task: Task
    proc: _Proc
    output: str
    pidfd: int


#: What Python ignores and a Job must not inherit ignored (as Popen's restore_signals).
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
_FOUND: dict[tuple[str, str], str] = {}


def _executable(name: str, path: str) -> str:
    """``name`` looked up on ``path`` (the Job's own PATH), as Popen would; found ones are remembered."""
    if "/" in name:
        return name
    key = (name, path)
    if key not in _FOUND:
        found = shutil.which(name, path=path)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        _FOUND[key] = found
    return _FOUND[key]


_OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


@functools.cache
def _devnull() -> int:
    """One ``/dev/null`` for every Task's stdin (``subprocess.DEVNULL`` opens and closes one per process)."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


class ProcessGroup:
    """The Job processes of one launcher or worker.

    ``dedicated``: this process does nothing but start Jobs (serial mode's local worker), so it may change its own
    working directory to each Job's and start it with ``posix_spawn`` (no cwd of its own): cheaper than Popen,
    and its descriptors are all close-on-exec. Elsewhere Jobs start with Popen(cwd=...).
    """

    def __init__(self, base_env: dict[str, str] | None = None, dedicated: bool = False) -> None:
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.dedicated = dedicated
        self.own_cpus = os.sched_getaffinity(0)  # what a pinned launch restores (read once, not per launch)
        self.running: dict[int, _Running] = {}
        self.job_of: dict[int, int] = {}  # pidfd -> job id
        self.poller = select.poll()
        self.watched: set[int] = set()

    def start(self, task: Task) -> None:
        """Start one Task in its workdir, output appended to ``job.out``; :class:`CannotStart` if it cannot."""
        output = output_path(task.workdir, task.attempt)
        try:
            out = _open_output(task.workdir, output)
        except OSError as exc:
            raise CannotStart(str(exc), start_failure(exc, "output", task.via_mpi)) from None
        try:
            env = self.base_env.copy()
            env.update(task.env)
            with _pinned(task.cpus, self.own_cpus):
                proc = self._spawn(task.argv, task.workdir, env, out)
        except OSError as exc:
            raise CannotStart(str(exc), start_failure(exc, "exec", task.via_mpi)) from None
        finally:
            os.close(out)
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError as exc:  # no descriptor to follow it by: it must not run on unseen while it runs elsewhere
            _signal(proc, signal.SIGKILL)
            proc.wait()
            raise CannotStart(str(exc), start_failure(exc, "exec", task.via_mpi)) from None
        self.running[task.job_id] = _Running(task, proc, output, pidfd)
        self.job_of[pidfd] = task.job_id
        self.poller.register(pidfd, select.POLLIN)

    def _spawn(self, argv: tuple[str, ...], workdir: str, env: dict[str, str], out: int) -> _Proc:
        """Start ``argv`` in ``workdir``: stdin /dev/null, stdout and stderr to ``out``, a process group of its own
        (killpg stops all of it) in the allocation's session."""
        if self.dedicated:
            os.chdir(workdir)
            actions = [
                (os.POSIX_SPAWN_DUP2, _devnull(), 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
            ]
            executable = _executable(argv[0], env.get("PATH", os.defpath))
            pid = os.posix_spawn(executable, argv, env, file_actions=actions, setpgroup=0, setsigdef=_DEFAULT_SIGNALS)
            return _Spawned(pid)
        return subprocess.Popen(
            argv, cwd=workdir, env=env, stdin=_devnull(), stdout=out, stderr=subprocess.STDOUT, process_group=0
        )

    def watch(self, fd: int) -> None:
        """Also end :meth:`wait` when ``fd`` becomes readable (a worker's link to its launcher)."""
        self.watched.add(fd)
        self.poller.register(fd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        """Block until a process ends, a watched descriptor is readable, or ``timeout`` seconds pass."""
        if self.running or self.watched:
            self.poller.poll(timeout * 1000)
        else:
            time.sleep(timeout)

    def poll(self) -> list[Outcome]:
        """Outcomes of the processes that ended since the last call (only those whose pidfd says so are asked)."""
        done = []
        for fd, _ in self.poller.poll(0) if self.running else ():
            job_id = self.job_of.get(fd)
            if job_id is None:  # a watched descriptor
                continue
            rc = self.running[job_id].proc.poll()
            if rc is not None:
                done.append(self._reaped(job_id, rc))
        return done

    def kill(self, job_id: int, why: str) -> Outcome | None:
        """Kill one Task's whole process group at once."""
        run = self.running.get(job_id)
        if run is None:
            return None
        _signal(run.proc, signal.SIGKILL)
        return self._reaped(job_id, run.proc.wait(), why)

    def terminate_all(self, why: str, grace: float) -> list[Outcome]:
        """SIGTERM every Task, SIGKILL those still alive after ``grace`` seconds."""
        for run in self.running.values():
            _signal(run.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes = {}
        for job_id, run in self.running.items():
            try:
                codes[job_id] = run.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(run.proc, signal.SIGKILL)
                codes[job_id] = run.proc.wait()
        return [self._reaped(job_id, rc, why) for job_id, rc in codes.items()]

    def _reaped(self, job_id: int, rc: int, killed: str = "") -> Outcome:
        run = self.running.pop(job_id)
        self.poller.unregister(run.pidfd)
        del self.job_of[run.pidfd]
        os.close(run.pidfd)
        tail = _tail(run.output, TAIL_BYTES if rc != 0 else DONE_TAIL_BYTES)
        return Outcome(job_id, run.task.name, rc, tail, killed)


def _open_output(workdir: str, output: str) -> int:
    """The Job's output file, opened to append (stage-in made the workdir and the file: only opened here); the
    child's copy is all it needs, so the caller closes it at once."""
    try:
        return os.open(output, _OUTPUT_FLAGS, 0o666)
    except FileNotFoundError:
        os.makedirs(workdir, exist_ok=True)
        return os.open(output, _OUTPUT_FLAGS, 0o666)


def _tail(path: str, size: int) -> str:
    try:
        return read_tail(path, size)
    except OSError:
        return ""


def _signal(proc: _Proc, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
