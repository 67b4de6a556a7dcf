"""Scheduler adapters: how to get an allocation from a batch scheduler, and which nodes it holds (one module per
scheduler). :data:`SCHEDULERS` is the one list of them: a site's ``scheduler`` setting names one of its kinds."""

if __name__ != "balsamctl.schedulers":  # the folder is also importable from the repository root: refuse a 2nd copy
    raise ImportError(f"import balsamctl.schedulers, not {__name__}: one package, one copy of each class")

from pathlib import Path

from balsamctl.schedulers.base import (
    AllocationState,
    AllocationStatus,
    Host,
    Scheduler,
    SchedulerError,
    SubmitRequest,
    UnsupportedScheduler,
    run_command,
)
from balsamctl.schedulers.cobalt import CobaltScheduler
from balsamctl.schedulers.local import LocalScheduler
from balsamctl.schedulers.lsf import LsfScheduler
from balsamctl.schedulers.pbs import PbsScheduler
from balsamctl.schedulers.slurm import SlurmScheduler

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.kind: cls for cls in (LocalScheduler, SlurmScheduler, PbsScheduler, LsfScheduler, CobaltScheduler)
}


def scheduler_class(kind: object) -> type[Scheduler]:
    """The scheduler adapter class of ``kind``; ValueError naming the known kinds if there is none (``kind`` may be
    anything a file held)."""
    found = SCHEDULERS.get(kind) if isinstance(kind, str) else None
    if found is None:
        raise ValueError(f"{kind!r} is not one of the known kinds: {', '.join(sorted(SCHEDULERS))}")
    return found


def get_scheduler(kind: str, site_path: Path) -> Scheduler:
    """The scheduler adapter for ``kind`` at this site; ValueError naming the known kinds if there is none."""
    return scheduler_class(kind)(site_path)


def check_scheduler(kind: str) -> str | None:
    """The version of the ``kind`` scheduler found on this machine (None if its programs are not here or do not
    say); UnsupportedScheduler, naming the version found, if its adapter cannot read that one."""
    return scheduler_class(kind).check_version()


__all__ = [
    "SCHEDULERS",
    "AllocationState",
    "AllocationStatus",
    "CobaltScheduler",
    "Host",
    "LocalScheduler",
    "LsfScheduler",
    "PbsScheduler",
    "Scheduler",
    "SchedulerError",
    "SlurmScheduler",
    "SubmitRequest",
    "UnsupportedScheduler",
    "check_scheduler",
    "get_scheduler",
    "run_command",
    "scheduler_class",
]
