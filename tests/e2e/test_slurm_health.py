"""Allocations that cannot run Jobs, on the real Slurm cluster of ``scripts/slurm-up.sh``: a launcher whose MPI
command is missing fails its preflight and ends at once without claiming anything (mpi and serial mode), and a
node whose worker cannot start processes is fenced off while the other node runs every Job (serial mode).

One Slurm site and controller (the fixtures of tests/e2e/test_slurm.py) with idle launchers kept for long
(``idle_ttl_sec`` 120): a launcher that idled instead of ending would outlast every wait here. Each test sets the
``launcher.mpi_command`` it needs (launchers read ``settings.yml`` when they start) and deletes its idle BatchJobs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.e2e import VENV_BIN, E2ESite, check_node_fencing, condition, deep_merge, manifest, nap_jobs
from tests.support.slurm_site import (
    SETTINGS,
    SLURM_DEADLINE_SEC,
    batchjob,
    controlled,
    create_slurm_site,
    wait_batchjob,
)

pytestmark = pytest.mark.slow

SITE_NAME = f"slurm-health-{uuid.uuid4().hex[:6]}"
MPIEXEC = str(VENV_BIN / "mpiexec")
MISSING = "no-such-mpiexec"


@pytest.fixture(scope="module")
def site(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ESite]:
    """A Slurm site (the settings of tests/e2e/test_slurm.py, launchers idle for 120 s), its controller running."""
    settings = deep_merge(SETTINGS, {"launcher": {"idle_ttl_sec": 120}})
    with controlled(create_slurm_site(tmp_path_factory.mktemp("e2e-slurm-health"), SITE_NAME, settings)) as s:
        yield s


def test_a_missing_mpi_command_fails_preflight_claims_nothing_and_ends_the_allocation(site: E2ESite) -> None:
    """``launcher.mpi_command: no-such-mpiexec``, 2-node BatchJobs in mpi and in serial mode.

    Before preflight the mpi-mode launcher claimed the Jobs, ran the one placed on its own node and failed the
    other (``could not start: ... 'no-such-mpiexec'``, charged: ``failures`` 1), then idled for its idle TTL; the
    serial-mode one crashed on its MPI relaunch. Neither said anything on the BatchJob: no ``LauncherReady``
    condition, no CONDITIONS column.
    """
    site.update_settings({"launcher": {"mpi_command": MISSING}})
    labels = {"suite": "preflight"}
    names, jobs = nap_jobs("preflight", 4, labels)
    modes = {"pre-mpi": "mpi", "pre-serial": "serial"}
    site.apply(manifest(jobs, *(batchjob(bj, 2, job_mode=mode, filter_tags=labels) for bj, mode in modes.items())))

    # each launcher says why it is not ready, and its allocation ends: long before its 120 s idle TTL
    for bj in modes:
        ended = wait_batchjob(site, bj, {"finished"})
        ready = condition(ended, "LauncherReady")
        assert ready is not None and (ready["status"], ready["reason"]) == ("False", "MPICommandNotFound"), ready
        assert f"{MISSING!r} is not on PATH (searched {VENV_BIN}:" in ready["message"], ready
        described = site.cli("describe", "batchjob", bj).stdout
        assert "LauncherReady" in described and "MPICommandNotFound" in described and MISSING in described, described
    wide = site.cli("get", "batchjobs", *modes, "-o", "wide").stdout
    assert wide.count("LauncherReady=MPICommandNotFound") == 2, wide

    # nothing was claimed, let alone started or charged
    left = site.jobs(*names)
    outcomes = {n: (j["status"]["state"], j["status"]["failures"]) for n, j in left.items()}
    assert outcomes == dict.fromkeys(names, ("PREPROCESSED", 0)), outcomes
    started = [e for e in site.events() if e.kind == "job" and (e.to_state == "RUNNING" or e.reason == "Started")]
    assert not started, started

    # the setting mended, a new allocation runs them
    site.update_settings({"launcher": {"mpi_command": MPIEXEC}})
    site.apply(batchjob("pre-mended", 2, job_mode="mpi", filter_tags=labels))
    done = site.wait_jobs(names, timeout=SLURM_DEADLINE_SEC)
    ran = {n: (j["status"]["state"], j["status"]["failures"], j["status"]["batch_job"]) for n, j in done.items()}
    assert ran == dict.fromkeys(names, ("JOB_FINISHED", 0, "pre-mended")), ran
    site.cli("delete", "batchjob", "pre-mended")


def test_a_node_whose_worker_cannot_fork_is_fenced_and_the_other_node_runs_every_job(site: E2ESite) -> None:
    """Serial mode across 2 Slurm nodes: the worker of the second node (MPI rank 1, started there by Slurm) can
    start no process.

    Before black-hole protection each refused fork was the Job's RUN_ERROR, charged to ``max_retries``
    (``failures`` > 0; FAILED once they ran out) while the node kept taking Jobs, and no ``NodesHealthy``
    condition existed.
    """
    site.update_settings({"launcher": {"mpi_command": MPIEXEC}})
    labels = {"suite": "fence"}
    site.apply(batchjob("fence-bj", 2, job_mode="serial", filter_tags=labels))
    check_node_fencing(site, "fence-bj", labels, SLURM_DEADLINE_SEC)
    site.cli("delete", "batchjob", "fence-bj")
