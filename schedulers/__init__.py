"""Scheduler adapters: how to get an allocation from a batch scheduler (one module per scheduler)."""

from pathlib import Path

from balsamctl.schedulers.base import (
    AllocationState,
    AllocationStatus,
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


def get_scheduler(kind: str, site_path: Path) -> Scheduler:
    """The scheduler adapter for ``kind`` at this site; ValueError naming the known kinds if there is none."""
    try:
        cls = SCHEDULERS[kind]
    except KeyError:
        raise ValueError(f"unknown scheduler kind {kind!r}; known kinds: {', '.join(sorted(SCHEDULERS))}") from None
    return cls(site_path)


def check_scheduler(kind: str) -> str | None:
    """The version of the ``kind`` scheduler found on this machine (None if its programs are not here or do not
    say); UnsupportedScheduler, naming the version found, if its adapter cannot read that one."""
    return SCHEDULERS[kind].check_version()


__all__ = [
    "SCHEDULERS",
    "AllocationState",
    "AllocationStatus",
    "CobaltScheduler",
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
]
