"""Placement seen from the outside: a Job that can never fit is told why and does not block the others;
a serial-mode BatchJob runs single-process Jobs on every node and refuses multi-rank ones; a Job runs on the CPUs
and GPUs it was given, and sees them."""

from __future__ import annotations

import itertools
import re

import pytest

from balsamctl.site.directory import SiteDirectory
from tests.support.e2e import E2ESite, app_doc, job_doc, manifest

SETTINGS = {
    "local_nodes": {"count": 2, "cpus_per_node": 2, "gpus_per_node": 1},
    "allowed_queues": {"local": {"max_nodes": 2, "max_walltime": 60, "max_queued_jobs": 10}},
    "launcher": {"idle_ttl_sec": 3, "gpu_visible_devices": ["CUDA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK"]},
    "sync_period_sec": 1,
}


def batchjob(name: str, mode: str, tag: str) -> str:
    return (
        f"apiVersion: balsam/v1\nkind: BatchJob\nmetadata: {{name: {name}}}\n"
        f"spec: {{num_nodes: 2, wall_time_min: 5, queue: local, project: local, job_mode: {mode}, "
        f"filter_tags: {{t: {tag}}}}}\n"
    )


def schedulable(job: dict) -> dict | None:  # type: ignore[type-arg]
    return next((c for c in job["status"]["conditions"] if c["type"] == "Schedulable"), None)


def test_a_job_that_never_fits_says_why_and_does_not_block_the_rest(site: E2ESite) -> None:
    site.apply(
        manifest(
            app_doc("echo", "echo ok"),
            job_doc("gpu-hungry", "echo", labels={"t": "fit"}, gpus_per_rank=2),
            job_doc("too-wide", "echo", labels={"t": "fit"}, num_nodes=3),
            *(job_doc(f"fits-{i}", "echo", labels={"t": "fit"}) for i in range(4)),
            batchjob("fit-bj", "mpi", "fit"),
        )
    )
    site.wait_jobs([f"fits-{i}" for i in range(4)], {"JOB_FINISHED"})

    def told() -> dict | None:  # type: ignore[type-arg]
        jobs = site.jobs("gpu-hungry", "too-wide")
        return jobs if all(schedulable(j) for j in jobs.values()) else None

    jobs = site.wait_for("conditions on the Jobs that cannot fit", told)
    assert "needs 2 GPUs per node, nodes have 1" in schedulable(jobs["gpu-hungry"])["message"]  # type: ignore[index]
    assert "needs 3 nodes" in schedulable(jobs["too-wide"])["message"]  # type: ignore[index]
    assert {j["status"]["state"] for j in jobs.values()} == {"PREPROCESSED"}
    described = site.cli("describe", "job", "gpu-hungry").stdout
    assert "DoesNotFit" in described and "GPUs per node" in described


def test_serial_mode_runs_on_every_node_and_refuses_multi_rank_jobs(site: E2ESite) -> None:
    site.apply(
        manifest(
            app_doc("where", "echo $BALSAM_JOB_NAME"),
            *(job_doc(f"serial-{i}", "where", labels={"t": "serial"}) for i in range(12)),
            job_doc("two-ranks", "where", labels={"t": "serial"}, ranks_per_node=2),
            batchjob("serial-bj", "serial", "serial"),
        )
    )
    names = [f"serial-{i}" for i in range(12)]
    site.wait_jobs(names, {"JOB_FINISHED"})
    store = SiteDirectory.load(site.path).store
    started = [
        e
        for e in store.events((store.site_id("e2e-placement"),), kind="Job", limit=10_000)
        if e["reason"] == "Started" and e["name"] in names
    ]
    nodes = {e["data"]["placement"]["nodes"][0]["node"] for e in started}
    assert nodes == {"local0", "local1"}, "one worker per node, both used"
    refused = site.wait_for("a condition on two-ranks", lambda: schedulable(site.job("two-ranks")))
    assert "serial mode runs single-process Jobs" in refused["message"]
    assert "ok" not in site.logs("serial-0") and "serial-0" in site.logs("serial-0")


@pytest.mark.parametrize("mode", ["mpi", "serial"])
def test_a_job_runs_on_the_cpus_it_was_given(site: E2ESite, mode: str) -> None:
    """Pinned from its first instruction: by the launcher in ``mpi`` mode, by its node's worker in ``serial`` mode
    (a process of its own on the launcher's node, an MPI rank on the other)."""
    one, two = f"pinned-{mode}-1", f"pinned-{mode}-2"
    site.apply(
        manifest(
            app_doc("cpus", "grep Cpus_allowed_list /proc/self/status; echo OMP=$OMP_NUM_THREADS"),
            job_doc(one, "cpus", labels={"t": f"pin-{mode}"}),
            job_doc(two, "cpus", labels={"t": f"pin-{mode}"}, threads_per_rank=2),
            batchjob(f"pin-{mode}-bj", mode, f"pin-{mode}"),
        )
    )
    site.wait_jobs([one, two], {"JOB_FINISHED"})
    store = SiteDirectory.load(site.path).store
    for name, threads in ((one, 1), (two, 2)):
        events = store.events((store.site_id("e2e-placement"),), kind="Job", name=name)
        (started,) = [e for e in events if e["reason"] == "Started"]
        cpus = started["data"]["placement"]["nodes"][0]["cpu_ids"]
        assert len(cpus) == threads
        listed = ",".join(map(str, cpus)) if threads == 1 else f"{cpus[0]}-{cpus[-1]}"
        assert f"cpus {listed}" in site.cli("describe", "job", name).stdout, "the Started event says where"
        log = site.logs(name)
        assert f"Cpus_allowed_list:\t{listed}\n" in log and f"OMP={threads}" in log, log


@pytest.mark.parametrize("mode", ["mpi", "serial"])
def test_a_job_sees_its_gpu_in_the_sites_variables_and_has_it_alone(site: E2ESite, mode: str) -> None:
    # node_packing_count 2 would let two such Jobs share a node; its one GPU does not
    tag = f"gpu-{mode}"
    names = [f"{tag}-{i}" for i in range(6)]
    stamp = "$(date +%s.%N)"
    command = f'echo "gpus=$CUDA_VISIBLE_DEVICES/$ZE_AFFINITY_MASK from={stamp}"; sleep 0.3; echo "to={stamp}"'
    site.apply(
        manifest(
            app_doc("gpus", command),
            *(job_doc(name, "gpus", labels={"t": tag}, gpus_per_rank=1, node_packing_count=2) for name in names),
            batchjob(f"{tag}-bj", mode, tag),
        )
    )
    site.wait_jobs(names, {"JOB_FINISHED"})
    store = SiteDirectory.load(site.path).store
    started = {
        e["name"]: e["data"]["placement"]["nodes"][0]
        for e in store.events((store.site_id("e2e-placement"),), kind="Job", limit=10_000)
        if e["reason"] == "Started" and e["name"] in names
    }
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for name in names:
        (gpu,) = started[name]["gpu_ids"]
        match = re.search(r"gpus=(\S*)/(\S*) from=(\S+)\nto=(\S+)", site.logs(name))
        assert match, site.logs(name)
        assert match.group(1) == match.group(2) == gpu, (name, match.group(0), gpu)
        runs.setdefault((started[name]["node"], gpu), []).append((float(match.group(3)), float(match.group(4))))
    assert set(runs) == {("local0", "0"), ("local1", "0")}, runs
    for where, spans in runs.items():
        spans.sort()
        assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans)), f"two Jobs on {where} at once: {spans}"
