"""Which node a launcher runs on, named as its scheduler's node list names it (a launcher compares the two)."""

from __future__ import annotations

import socket

import pytest

from balsamctl.schedulers import SCHEDULERS, SlurmScheduler

SHORT_HOSTNAME = socket.gethostname().split(".")[0]


def test_under_slurm_a_node_is_the_name_slurmd_gives_it() -> None:
    assert SlurmScheduler.this_host({"SLURMD_NODENAME": "nid001234"}) == "nid001234"
    assert SlurmScheduler.this_host({}) == SHORT_HOSTNAME


@pytest.mark.parametrize("kind", sorted(set(SCHEDULERS) - {"slurm"}))
def test_elsewhere_a_node_is_its_short_host_name(kind: str) -> None:
    assert SCHEDULERS[kind].this_host({"SLURMD_NODENAME": "not-mine"}) == SHORT_HOSTNAME
