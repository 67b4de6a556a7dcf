"""The scheduler adapter interface: how to get, watch and give back an allocation, and which nodes it holds."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from balsamctl.schemas.settings import LocalNodes

AllocationState = Literal["queued", "running", "finished"]

# Seconds to collect the output of a timed-out command after its process group was killed.
_DRAIN_TIMEOUT = 5.0


@dataclass(frozen=True)
class SubmitRequest:
    """Everything a scheduler needs to submit one BatchJob's job script."""

    script_path: Path
    job_name: str
    num_nodes: int
    wall_time_min: int
    queue: str
    project: str
    output_dir: Path
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class AllocationStatus:
    """What the scheduler says about one allocation; times are timezone-aware UTC."""

    scheduler_id: str
    state: AllocationState
    raw_state: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    nodes: tuple[str, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class Host:
    """One node of the allocation a process runs in, as its scheduler's environment names it, with the CPUs and
    GPUs the scheduler gives the job there (None: it does not say)."""

    name: str
    cpus: int | None = None
    gpus: int | None = None


class SchedulerError(Exception):
    """A scheduler command failed, was refused (``returncode`` set) or timed out (``returncode`` None)."""

    def __init__(self, command: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(self.command, returncode, stderr)

    def __str__(self) -> str:
        outcome = "timed out" if self.returncode is None else f"failed with exit code {self.returncode}"
        detail = "; ".join(line.strip() for line in self.stderr.splitlines() if line.strip())
        summary = f"`{shlex.join(self.command)}` {outcome}" + (f": {detail}" if detail else "")
        return summary.replace("\n", " ")


class UnsupportedScheduler(Exception):
    """The scheduler's programs are of a kind or version this adapter cannot read; the message names what was found."""


class Scheduler(ABC):
    """A batch scheduler as seen by the controller (one instance per site), and by a launcher inside one of its
    allocations (:meth:`hosts_from_environment`). A scheduler is one module of this package, its class listed in
    ``balsamctl.schedulers.SCHEDULERS`` under its ``kind``."""

    kind: ClassVar[str]

    def __init__(self, site_path: Path) -> None:
        self.site_path = site_path

    @classmethod
    def check_version(cls) -> str | None:
        """The version of the scheduler found on this machine, None if its programs are not here or do not say;
        UnsupportedScheduler if it is one this adapter cannot read."""
        return None

    @classmethod
    @abstractmethod
    def hosts_from_environment(cls, env: Mapping[str, str], local: LocalNodes) -> list[Host]:
        """The nodes of the allocation whose job script runs with ``env``, as the scheduler names them there (none
        outside an allocation); ``local``: the site's emulated nodes. ValueError if the names cannot be read."""

    @classmethod
    def this_host(cls, env: Mapping[str, str]) -> str:
        """The name of the node a process with ``env`` runs on, as :meth:`hosts_from_environment` names it."""
        return socket.gethostname().split(".")[0]

    @abstractmethod
    def submit_command(self, req: SubmitRequest) -> list[str]:
        """The exact argv that :meth:`submit` runs (shown by ``apply --dry-run``)."""

    @abstractmethod
    def submit(self, req: SubmitRequest) -> str:
        """Submit the job script and return the scheduler id; raise SchedulerError when refused."""

    @abstractmethod
    def status(self, scheduler_ids: Sequence[str]) -> dict[str, AllocationStatus]:
        """Status of many allocations in one scheduler call; an id is absent only once the scheduler confirms it no
        longer knows it, and SchedulerError when that cannot be told (never an allocation that seems to have ended)."""

    @abstractmethod
    def cancel(self, scheduler_id: str) -> None:
        """Ask the scheduler to end an allocation; unknown or finished ids are a no-op."""

    @abstractmethod
    def find_by_name(self, job_name: str) -> str | None:
        """The id of the newest allocation with this job name that the scheduler still knows (finished included)."""


def program_says(argv: Sequence[str], timeout: float = 30.0) -> str | None:
    """What a program prints on stdout and stderr, whatever its exit code; None if it is not installed."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout + proc.stderr


def run_command(
    argv: Sequence[str], timeout: float = 30.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a scheduler command; raise SchedulerError on a non-zero exit, a missing program or a timeout."""
    command = list(argv)
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise SchedulerError(command, 127, str(exc)) from exc
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            _, stderr = proc.communicate(timeout=_DRAIN_TIMEOUT)
        except subprocess.TimeoutExpired:  # a process that left the group still holds the pipes
            proc.wait()
            stderr = ""
        raise SchedulerError(command, None, stderr) from None
    if proc.returncode != 0:
        raise SchedulerError(command, proc.returncode, stderr)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
