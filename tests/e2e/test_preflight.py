"""Black-hole protection on a local site: a node whose worker cannot start processes is fenced off while the other
node runs every Job, and an mpi-mode launcher that cannot start processes drains and ends; no Job is charged.

The node is broken for real: its worker (or the launcher) is put in a cgroup-v1 ``pids`` cgroup that holds no more
processes than it has (:func:`e2e.forks_refused`), so every fork from it fails with EAGAIN, as on a node out of
processes. That happens after the launcher said it was ready and before any Job exists, so the BatchJobs here idle
for long (``idle_ttl_sec`` 60) and are deleted once checked. (Preflight itself is tested on the real Slurm
cluster: tests/e2e/test_slurm_health.py.)
"""

from __future__ import annotations

import os
from typing import Any

from tests.support.e2e import (
    INFRA_FAILURE_LIMIT,
    E2ESite,
    batchjob_doc,
    check_node_fencing,
    condition,
    forks_refused,
    launcher_processes,
    nap_jobs,
    wait_launcher_ready,
)

SETTINGS = {
    "local_nodes": {"count": 2, "cpus_per_node": 4},
    "allowed_queues": {"local": {"max_nodes": 2, "max_walltime": 60, "max_queued_jobs": 10}},
    "launcher": {"idle_ttl_sec": 60},
    "sync_period_sec": 1,
}
RUNNABLE = {"PREPROCESSED", "RESTART_READY"}


def ended(site: E2ESite, batch_job: str) -> dict[str, Any] | None:
    """The BatchJob once its allocation ended, else None."""
    bj = site.batchjobs(batch_job)[batch_job]
    return bj if bj["status"]["state"] == "finished" else None


def test_a_node_whose_worker_cannot_fork_is_fenced_and_the_other_node_runs_every_job(site: E2ESite) -> None:
    """Serial mode, 2 nodes: the worker of ``local1`` (MPI rank 1) can start no process.

    Before black-hole protection each refused fork was the Job's RUN_ERROR, charged to ``max_retries``
    (``failures`` > 0; FAILED once they ran out) while ``local1`` kept taking Jobs, and no ``NodesHealthy``
    condition existed.
    """
    labels = {"t": "fence"}
    site.apply(batchjob_doc("fence-bj", num_nodes=2, job_mode="serial", filter_tags=labels))
    check_node_fencing(site, "fence-bj", labels, timeout=30)
    site.cli("delete", "batchjob", "fence-bj")  # idle: its nodes go to the next test's


def test_an_mpi_launcher_that_cannot_fork_drains_and_ends_and_the_next_one_runs_its_jobs(site: E2ESite) -> None:
    """mpi mode: the launcher itself starts every Job (the head node) and can start no process.

    Before black-hole protection the launcher charged each refused fork to its Job (RUN_ERROR, ``failures`` > 0,
    FAILED after ``max_retries``) and went on claiming until its idle TTL (60 s here, past this test's waits); no
    ``NodesHealthy`` condition existed.
    """
    labels = {"t": "drain"}
    site.apply(batchjob_doc("drain-bj", num_nodes=1, job_mode="mpi", filter_tags=labels))
    wait_launcher_ready(site, "drain-bj")
    (launcher,) = site.wait_for("the launcher of drain-bj", lambda: launcher_processes(site, "drain-bj"))
    names, jobs = nap_jobs("drain", 4, labels)
    with forks_refused(launcher.pid, f"balsam-e2e-{os.getpid()}-drain"):
        site.apply(jobs)
        bj = site.wait_for("drain-bj to end", lambda: ended(site, "drain-bj"))
    healthy = condition(bj, "NodesHealthy")
    assert healthy is not None and (healthy["status"], healthy["reason"]) == ("False", "NoUsableNode"), healthy
    assert "the head node (local0) fenced" in healthy["message"], healthy
    assert "ForkRefused" in healthy["message"] and "drains and ends" in healthy["message"], healthy

    left = site.jobs(*names)
    states = {n: (j["status"]["state"], j["status"]["failures"]) for n, j in left.items()}
    assert all(state in RUNNABLE and failures == 0 for state, failures in states.values()), states
    assert len(states) == len(names), states
    refused = [condition(j, "StartFailed") for j in left.values()]
    assert sum(c is not None and c["reason"] == "ForkRefused" for c in refused) >= INFRA_FAILURE_LIMIT, refused

    site.apply(batchjob_doc("drain-bj-2", num_nodes=1, job_mode="mpi", filter_tags=labels))
    done = site.wait_jobs(names)
    outcomes = {n: (j["status"]["state"], j["status"]["failures"], j["status"]["batch_job"]) for n, j in done.items()}
    assert outcomes == dict.fromkeys(names, ("JOB_FINISHED", 0, "drain-bj-2")), outcomes
    site.cli("delete", "batchjob", "drain-bj-2")
