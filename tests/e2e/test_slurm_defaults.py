"""Working defaults on the real Slurm cluster of ``scripts/slurm-up.sh``: a site made with ``site init --scheduler
slurm`` or with ``site init --platform generic-slurm``, nothing edited, runs a one-rank Job on each node of a 2-node
allocation, in ``mpi`` and in ``serial`` mode, and a Job with two ranks on one node.

The CLI, and so the controller and the allocations, run with the system's PATH: this cluster then offers ``srun``
and no ``mpiexec``, as most Slurm clusters do (the test venv's mpich wheel would put an ``mpiexec`` on PATH; the
other Slurm tests use it on purpose). Each site is made and run as a new user would: its queue ``default`` (no
``-p``), project ``none`` (no ``-A``), its own sync period and launcher idle time. A BatchJob is deleted once its
Jobs are checked, so that the next one gets nodes at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from balsamctl.site.directory import SiteDirectory
from tests.support.e2e import VENV_BIN, E2ESite, app_doc, job_doc, manifest
from tests.support.slurm_site import CLUSTER_NODES, SLURM_DEADLINE_SEC, controlled, placed_nodes, ran_on, wait_batchjob

pytestmark = pytest.mark.slow

WAYS = {"scheduler": ("--scheduler", "slurm"), "platform": ("--platform", "generic-slurm")}
"""How a site is made: ``site init PATH OPTION VALUE``."""
RUN_ID = uuid.uuid4().hex[:6]
WHERE_COMMAND = 'echo "node=$SLURMD_NODENAME"; sleep 1'


class SystemPathSite(E2ESite):
    """An :class:`E2ESite` whose CLI calls run with the system's PATH, without ``.venv/bin`` (no ``mpiexec``)."""

    @property
    def env(self) -> dict[str, str]:
        """The helper's environment, ``.venv/bin`` taken out of PATH (``balsamctl`` is called by its path)."""
        env = super().env
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p and Path(p) != VENV_BIN)
        return env


@pytest.fixture(scope="module", params=list(WAYS))
def default_site(
    cluster: None, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[E2ESite]:
    """A Slurm site made one of the :data:`WAYS`, nothing edited, its controller running."""
    way: str = request.param
    name = f"slurm-defaults-{way}-{RUN_ID}"
    root = tmp_path_factory.mktemp(f"e2e-slurm-{way}")
    site = SystemPathSite(root, name)
    site.home.mkdir(parents=True, exist_ok=True)
    assert shutil.which("mpiexec", path=site.env["PATH"]) is None, site.env["PATH"]
    out = site.cli("site", "init", str(site.path), "--name", name, *WAYS[way], cwd=root).stdout
    assert out.strip() == f"site/{name} created at {site.path}", out
    with controlled(site):
        yield site


def batchjob(name: str, num_nodes: int, job_mode: str, tags: dict[str, str]) -> str:
    """A BatchJob on the site's own queue and project (``default``, ``none``), 5 minutes, for the Jobs ``tags``."""
    spec: dict[str, Any] = {
        "num_nodes": num_nodes,
        "wall_time_min": 5,
        "queue": "default",
        "project": "none",
        "job_mode": job_mode,
        "filter_tags": tags,
    }
    return yaml.safe_dump({"apiVersion": "balsam/v1", "kind": "BatchJob", "metadata": {"name": name}, "spec": spec})


@contextlib.contextmanager
def running(
    site: E2ESite, name: str, num_nodes: int, job_mode: str, jobs: dict[str, dict[str, Any]]
) -> Iterator[set[str]]:
    """Apply App ``where``, the ``jobs`` (name -> extra spec) and a BatchJob ``name`` for them; wait until every
    Job has JOB_FINISHED with no failure charged. Yields the allocation's nodes; the BatchJob is deleted after."""
    tags = {"suite": name}
    site.apply(
        manifest(
            app_doc("where", WHERE_COMMAND),
            *(job_doc(job, "where", labels=tags, **spec) for job, spec in jobs.items()),
            batchjob(name, num_nodes, job_mode, tags),
        )
    )
    try:
        done = site.wait_jobs(jobs, timeout=SLURM_DEADLINE_SEC)
        outcome = {job: (j["status"]["state"], j["status"]["failures"]) for job, j in done.items()}
        assert outcome == dict.fromkeys(jobs, ("JOB_FINISHED", 0)), site.diagnostics()
        allocation = set(wait_batchjob(site, name, {"running", "finished"})["status"]["nodes"])
        assert len(allocation) == num_nodes and allocation <= CLUSTER_NODES, allocation
        yield allocation
    finally:
        site.cli("delete", "batchjob", name, check=False)


def placements(site: E2ESite, jobs: list[str]) -> dict[str, list[str]]:
    """The nodes each Job was placed on (its RUNNING event's placement)."""
    store_site = SiteDirectory.load(site.path)
    try:
        return {job: placed_nodes(store_site, job) for job in jobs}
    finally:
        store_site.close()


@pytest.mark.parametrize("job_mode", ["mpi", "serial"])
def test_one_rank_jobs_run_on_every_node_of_a_two_node_allocation(default_site: E2ESite, job_mode: str) -> None:
    jobs = [f"{job_mode}-where-{i}" for i in range(2)]
    with running(default_site, f"{job_mode}-bj", 2, job_mode, {job: {} for job in jobs}) as allocation:
        placed = placements(default_site, jobs)
        ran = {job: ran_on(default_site, job) for job in jobs}
    # each Job ran where its launcher placed it (SLURMD_NODENAME as Slurm set it), one on each node
    assert {job: [node] for job, node in ran.items()} == placed, (placed, ran)
    assert set(ran.values()) == allocation, (ran, allocation)


def test_a_job_with_two_ranks_on_one_node_runs(default_site: E2ESite) -> None:
    """The allocation holds its nodes whole (``--exclusive``): a shared node's one CPU would never fit 2 ranks."""
    with running(default_site, "pair-bj", 1, "mpi", {"pair": {"ranks_per_node": 2}}) as allocation:
        (placed,) = placements(default_site, ["pair"]).values()
        ranks = re.findall(r"node=(\S*)", default_site.logs("pair"))
    assert placed == sorted(allocation) and ranks == placed * 2, (placed, ranks, allocation)
