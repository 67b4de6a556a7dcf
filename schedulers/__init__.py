"""Scheduler adapters: how to get an allocation from a batch scheduler (one module per scheduler)."""

from pathlib import Path

from schedulers.base import (
    AllocationState,
    AllocationStatus,
    Scheduler,
    SchedulerError,
    SubmitRequest,
    run_command,
)
from schedulers.cobalt import CobaltScheduler
from schedulers.local import LocalScheduler
from schedulers.lsf import LsfScheduler
from schedulers.pbs import PbsScheduler
from schedulers.slurm import SlurmScheduler

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
    "get_scheduler",
    "run_command",
]
