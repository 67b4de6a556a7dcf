"""Scheduler adapters: the local one with real processes, Slurm against the real cluster, and every command-line
scheduler against fake programs that replay its recorded output (``recorded/<scheduler>/``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.schedulers.fakes import Fakes

# Set in a user's environment, these would point sbatch/squeue at another cluster than the fake one answers for.
CLUSTER_SELECTORS = ("SBATCH_CLUSTERS", "SLURM_CLUSTERS")


@pytest.fixture
def fakes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Fakes:
    """The test module's scheduler (its ``SCHEDULER``) faked first on PATH, replaying a recorded scenario."""
    for name in CLUSTER_SELECTORS:
        monkeypatch.delenv(name, raising=False)
    return Fakes(request.module.SCHEDULER, monkeypatch, tmp_path)
