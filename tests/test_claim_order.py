"""A launcher claims the site's Jobs in the site's policy order (``launcher.policy`` in settings.yml)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_security import advance_to_runnable, app, apply_raws, configure, job

from balsamctl.site import init_site
from launcher.mpi_mode import LocalExecutor
from launcher.nodes import Node
from launcher.pilot import CLAIM_AHEAD, Launcher
from schemas.objects import Partition


@pytest.mark.parametrize(("policy", "two_node_jobs_claimed"), [("small_first", 2), ("long_large_first", 4)])
def test_the_launcher_claims_in_the_sites_policy_order(tmp_path: Path, policy: str, two_node_jobs_claimed: int) -> None:
    """Ten Jobs, one claim of eight (2 CPUs x CLAIM_AHEAD): the two left behind are the policy's last."""
    site = configure(init_site(tmp_path / "site", "order"), {"launcher": {"policy": policy}})
    singles = [job(f"one-{i}", "a", f"one/{i}", num_nodes=1) for i in range(6)]
    doubles = [job(f"two-{i}", "a", f"two/{i}", num_nodes=2) for i in range(4)]
    apply_raws(site, app("a", "true"), *singles, *doubles)
    advance_to_runnable(site)
    nodes = [Node("n0", (0,)), Node("n1", (1,))]
    partition = Partition(job_mode="mpi", num_nodes=2)
    launcher = Launcher(
        site,
        "bj",
        partition,
        0,
        nodes,
        time.time() + 3600,
        "l",
        LocalExecutor(),
        lambda *_: None,
    )
    assert launcher._claim() == CLAIM_AHEAD * 2 == 8
    claimed = [ref.name for ref, _ in launcher.queue]
    assert sum(name.startswith("two-") for name in claimed) == two_node_jobs_claimed, claimed
    site.close()
