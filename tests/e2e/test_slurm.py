"""End to end on the real Slurm cluster of ``scripts/slurm-up.sh``: the real CLI, controller, sbatch/squeue/scancel,
job scripts, launchers inside real allocations and MPI across emulated nodes: the mpich wheel's ``mpiexec``, and
``srun`` itself (the ``srun`` flavor, on a second site).

One Slurm site and one controller serve most of the module; the ``srun`` test has its own site and controller.
Each test's BatchJob selects its own Jobs by filter tags (or partition tags no other test uses), so no allocation
runs another test's Jobs. Every Slurm job this module causes is named ``balsam-<site>-...`` (each site name is
unique per run) and is cancelled in teardown.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from balsamctl.site.directory import SiteDirectory
from tests.support.e2e import E2EError, E2ESite, Event, app_doc, deep_merge, job_doc, manifest, parse_time
from tests.support.slurm_site import (
    CLUSTER_NODES,
    SETTINGS,
    SLURM_DEADLINE_SEC,
    batchjob,
    controlled,
    create_slurm_site,
    placed_nodes,
    ran_on,
    slurm,
    wait_batchjob,
)

pytestmark = pytest.mark.slow

SITE_NAME = f"slurm-e2e-{uuid.uuid4().hex[:6]}"
SRUN_SITE_NAME = f"slurm-e2e-srun-{uuid.uuid4().hex[:6]}"  # its own Slurm jobs: balsam-<this>-...
MPI_COMMAND = (
    "python -c 'from mpi4py import MPI; import os; "
    """print(MPI.COMM_WORLD.size, os.environ.get("SLURMD_NODENAME"))'"""
)
WHERE_COMMAND = 'echo "node=$SLURMD_NODENAME"; sleep 1'
# a rank's MPI rank and world size, its node, and its Slurm task id and step size (srun's own ranks: equal)
RANK_COMMAND = (
    "python -c 'from mpi4py import MPI; import os; e = os.environ.get; w = MPI.COMM_WORLD; "
    """print("rank=%d/%d node=%s task=%s/%s" % (w.rank, w.size, e("SLURMD_NODENAME"), """
    """e("SLURM_PROCID"), e("SLURM_STEP_NUM_TASKS")), flush=True)'"""
)
RANK_LINE = re.compile(r"rank=(\d+)/(\d+) node=(\S+) task=(\S+)/(\S+)")


# ---------------------------------------------------------------- Slurm helpers


def slurm_jobs(*filters: str) -> list[dict[str, str]]:
    """``squeue -t all`` (finished jobs included, for MinJobAge) as rows: id, name, state, nodes."""
    out = slurm("squeue", "-h", "-t", "all", *filters, "-o", "%i|%j|%T|%N")
    rows = []
    for line in out.splitlines():
        if line.strip():
            sid, name, state, nodes = line.split("|", 3)
            rows.append({"id": sid.strip(), "name": name.strip(), "state": state.strip(), "nodes": nodes.strip()})
    return rows


@pytest.fixture(scope="module")
def site(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ESite]:
    """A Slurm site (queue ``debug``, project ``none``, 1 s sync, 5 s idle launchers) with its controller running."""
    with controlled(create_slurm_site(tmp_path_factory.mktemp("e2e-slurm"), SITE_NAME, SETTINGS)) as s:
        yield s


@pytest.fixture(scope="module")
def srun_site(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ESite]:
    """A second Slurm site whose launchers start Jobs with ``srun`` (flavor ``srun``), its controller running.

    Its allocations take whole nodes, as every site's made with ``--scheduler slurm`` (``#SBATCH --exclusive``:
    this cluster's CR_Core would give ``-N 2`` one CPU per node, too few for 2 ranks on a node).
    ``SLURM_MPI_TYPE=none`` in its job script stands for Slurm's own default ``MpiDefault=none`` (this cluster has
    ``pmi2``): the ranks find each other only if the launch command picks the PMI plugin itself.
    """
    settings = deep_merge(SETTINGS, {"launcher": {"mpi_flavor": "srun", "mpi_command": "srun"}})
    s = create_slurm_site(tmp_path_factory.mktemp("e2e-slurm-srun"), SRUN_SITE_NAME, settings)
    template = s.path / "job-template.sh"
    text = template.read_text()
    assert text.count("#SBATCH --exclusive\n") == text.count("{{ launcher_command }}") == 1, text
    template.write_text(text.replace("{{ launcher_command }}", "export SLURM_MPI_TYPE=none\n{{ launcher_command }}"))
    with controlled(s):
        yield s


# ---------------------------------------------------------------- test helpers


def wait_finished_in(site: E2ESite, names: list[str], bj: str) -> dict[str, dict[str, Any]]:
    """Wait for the Jobs ``names``; each must have finished, run by batchjob ``bj``. Returns them."""
    jobs = site.wait_jobs(names, timeout=SLURM_DEADLINE_SEC)
    assert {n: j["status"]["state"] for n, j in jobs.items()} == dict.fromkeys(jobs, "JOB_FINISHED"), jobs
    assert {j["status"]["batch_job"] for j in jobs.values()} == {bj}, jobs
    return jobs


def batchjob_states(events: list[Event], name: str) -> list[str]:
    """The states batchjob/NAME went to, in order."""
    return [e.to_state for e in events if e.object == f"batchjob/{name}" and e.to_state]


def launcher_of(events: list[Event], job: str, bj: str) -> tuple[str, int]:
    """The launcher id that acquired/started ``job`` (from its event message) and its partition index."""
    pattern = re.compile(rf"\b({re.escape(bj)}\.(\d+)\.\S+)")
    for event in events:
        match = pattern.search(event.message or "") if event.object == f"job/{job}" else None
        if match:
            return match.group(1), int(match.group(2))
    raise E2EError(f"no event of job/{job} names a launcher of batchjob/{bj}: {[e for e in events if e.name == job]}")


def slurm_state(sched_id: str) -> str | None:
    """Slurm's state of job ``sched_id``, None once Slurm forgot it (``squeue -j`` of a lone unknown id exits 1)."""
    proc = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", sched_id, "-o", "%T"], capture_output=True, text=True, timeout=30
    )
    if proc.returncode != 0 and "Invalid job id" in proc.stderr:
        return None
    if proc.returncode != 0:
        raise E2EError(f"squeue -j {sched_id} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip() or None


# ---------------------------------------------------------------- a 2-node MPI allocation, start to finish


def test_two_node_allocation_runs_mpi_and_single_node_jobs_then_ends(site: E2ESite) -> None:
    tags = {"suite": "life"}
    singles = [f"life-one-{i}" for i in range(3)]
    site.apply(
        manifest(
            app_doc("mpi-where", MPI_COMMAND),
            app_doc("where", WHERE_COMMAND),
            job_doc("life-mpi", "mpi-where", labels=tags, num_nodes=2),
            *(job_doc(name, "where", labels=tags) for name in singles),
            batchjob("life-bj", num_nodes=2, job_mode="mpi", filter_tags=tags),
        )
    )

    # submitted to Slurm and running on 2 of its nodes
    running = wait_batchjob(site, "life-bj", {"running", "finished"})["status"]
    sched_id = running["scheduler_id"]
    assert sched_id and sched_id.isdigit(), running
    assert running["job_name"].startswith(f"balsam-{SITE_NAME}-life-bj-"), running
    rows = slurm_jobs("-j", sched_id)
    assert [(r["id"], r["name"]) for r in rows] == [(sched_id, running["job_name"])], rows
    assert len(running["nodes"]) == 2 and set(running["nodes"]) <= CLUSTER_NODES, running
    assert running["start_time"], running

    jobs = wait_finished_in(site, ["life-mpi", *singles], "life-bj")

    # the MPI Job: a world of 2 ranks, one on each node of the allocation (SLURM_JOB_NODELIST expanded)
    out = site.logs("life-mpi")
    words = out.split()  # ranks' lines may interleave mid-line through hydra: count words, not lines
    assert sorted(w for w in words if w.isdigit()) == ["2", "2"], out
    rank_nodes = [w for w in words if not w.isdigit()]
    assert sorted(rank_nodes) == sorted(running["nodes"]), (out, running["nodes"])

    # idle for idle_ttl_sec (5 s), the launcher exits, the allocation completes, the BatchJob finishes
    done = wait_batchjob(site, "life-bj", {"finished"}, timeout=SLURM_DEADLINE_SEC)["status"]
    assert done["scheduler_id"] == sched_id
    assert done["end_time"], done
    last_job_end = max(parse_time(j["status"]["end_time"]) for j in jobs.values())
    assert parse_time(done["end_time"]) >= parse_time(done["start_time"])
    assert (parse_time(done["end_time"]) - last_job_end).total_seconds() >= 3, (done, last_job_end)
    assert "COMPLETED" in (done["message"] or ""), done
    assert slurm_state(sched_id) == "COMPLETED"
    output = site.path / "qsubmit" / f"{running['job_name']}.{sched_id}.out"
    assert "stopping (idle)" in output.read_text(), output.read_text()
    events = site.events()
    assert batchjob_states(events, "life-bj") == ["pending_submission", "queued", "running", "finished"]

    # every single-node Job ran on the node its launcher placed it on (SLURMD_NODENAME as Slurm sets it)
    store_site = SiteDirectory.load(site.path)
    try:
        wrong = {
            name: (placed_nodes(store_site, name), ran_on(site, name))
            for name in singles
            if ran_on(site, name) not in placed_nodes(store_site, name)
        }
    finally:
        store_site.close()
    assert not wrong, f"single-node Jobs ran on another node than their placement (placed, ran): {wrong}"


# ---------------------------------------------------------------- deleting a running allocation


def test_delete_running_batchjob_cancels_the_allocation_and_times_out_its_job(site: E2ESite) -> None:
    tags = {"suite": "delete"}
    site.apply(
        manifest(
            app_doc("sleeper", "sleep 300"),
            job_doc("del-sleep", "sleeper", labels=tags),
            batchjob("del-bj", filter_tags=tags),
        )
    )
    site.wait_jobs(["del-sleep"], {"RUNNING"}, timeout=SLURM_DEADLINE_SEC)
    bj = wait_batchjob(site, "del-bj", {"queued", "running"})["status"]
    sched_id = bj["scheduler_id"]
    assert slurm_state(sched_id) == "RUNNING"

    out = site.cli("delete", "batchjob", "del-bj").stdout
    assert out.strip() == "batchjob/del-bj deletion requested", out

    site.wait_for(
        f"Slurm job {sched_id} to be cancelled or gone",
        lambda: slurm_state(sched_id) in (None, "CANCELLED"),
        SLURM_DEADLINE_SEC,
    )
    site.wait_gone("batchjobs", "del-bj", timeout=SLURM_DEADLINE_SEC)
    assert "del-bj" not in site.batchjobs()
    job = site.wait_jobs(["del-sleep"], {"RESTART_READY"})["del-sleep"]
    assert job["status"]["attempts"] == 1
    to_states = [e.to_state for e in site.job_events("del-sleep")]
    assert to_states[-3:] == ["RUNNING", "RUN_TIMEOUT", "RESTART_READY"], to_states
    workdir = str(site.path / "data" / "sleeper")
    site.wait_for(
        "sleep 300 to end",
        lambda: not [p for p in site.stray_jobs() if (p.info["cwd"] or "").startswith(workdir)],
        timeout=15,
    )
    site.cli("delete", "job", "del-sleep")  # RESTART_READY: keep it from another allocation


# ---------------------------------------------------------------- deleted before it was submitted


def test_batchjob_deleted_before_submission_is_never_submitted(site: E2ESite) -> None:
    site.stop_controller()
    try:
        out = site.apply(batchjob("never-bj", filter_tags={"suite": "never"}))
        assert out == ["batchjob/never-bj created"]
        uid = site.batchjobs("never-bj")["never-bj"]["metadata"]["uid"]
        slurm_name = f"balsam-{SITE_NAME}-never-bj-{uid[:8]}"
        assert site.cli("delete", "batchjob", "never-bj").stdout.strip() == "batchjob/never-bj deletion requested"
    finally:
        site.start_controller()
    site.wait_gone("batchjobs", "never-bj")
    time.sleep(2 * SETTINGS["sync_period_sec"])  # a few more passes
    assert slurm_jobs("-n", slurm_name) == []
    assert [e.to_state for e in site.events("never-bj")] == ["pending_submission", "pending_deletion", "finished"]
    assert not list((site.path / "qsubmit").glob("never-bj*")), "a job script was rendered"


# ---------------------------------------------------------------- Slurm refuses the submission


def test_submit_refused_by_slurm_ends_submit_failed_with_sbatch_words(site: E2ESite) -> None:
    site.apply(batchjob("bad-bj", queue="nosuchpart", filter_tags={"suite": "bad"}))
    status = wait_batchjob(site, "bad-bj", {"submit_failed", "queued", "running", "finished"})["status"]
    assert status["state"] == "submit_failed", status
    # sbatch's own words: "sbatch: error: Batch job submission failed: Invalid partition name specified"
    assert "Invalid partition name specified" in (status["message"] or ""), status
    assert status.get("scheduler_id") is None
    described = site.cli("describe", "batchjob", "bad-bj").stdout
    assert "submit_failed" in described
    assert "Invalid partition name specified" in described, described
    assert slurm_jobs("-n", status["job_name"]) == []
    site.cli("delete", "batchjob", "bad-bj")


# ---------------------------------------------------------------- partitions of one allocation


def test_partitions_run_their_own_jobs_on_disjoint_node_slices(site: E2ESite) -> None:
    leaders = ["part-lead-0", "part-lead-1"]
    workers = ["part-work-0", "part-work-1", "part-work-2"]
    partitions = [
        {"job_mode": "mpi", "num_nodes": 1, "filter_tags": {"role": "leader"}},
        {"job_mode": "serial", "num_nodes": 1, "filter_tags": {"role": "worker"}},
    ]
    site.apply(
        manifest(
            app_doc("where", WHERE_COMMAND),
            *(job_doc(name, "where", labels={"role": "leader"}) for name in leaders),
            *(job_doc(name, "where", labels={"role": "worker"}) for name in workers),
            batchjob("part-bj", num_nodes=2, partitions=partitions),
        )
    )
    wait_finished_in(site, [*leaders, *workers], "part-bj")
    bj = site.batchjobs("part-bj")["part-bj"]["status"]
    assert len(bj["nodes"]) == 2 and set(bj["nodes"]) <= CLUSTER_NODES, bj

    # leader Jobs went to partition 0 (mpi), worker Jobs to partition 1 (serial): the launcher ids say so
    events = site.events()
    launchers = {name: launcher_of(events, name, "part-bj") for name in [*leaders, *workers]}
    assert {launchers[n][1] for n in leaders} == {0}, launchers
    assert {launchers[n][1] for n in workers} == {1}, launchers

    # the two launchers hold disjoint slices that make up the allocation; each Job was placed in its slice
    store_site = SiteDirectory.load(site.path)
    try:
        slices = {
            rec["id"]: (rec["partition"], rec["job_mode"], rec["nodes"])
            for rec in store_site.store.launchers_of(store_site.site_id, "part-bj")
        }
        placed = {name: placed_nodes(store_site, name) for name in [*leaders, *workers]}
    finally:
        store_site.close()
    assert sorted((p, mode) for p, mode, _ in slices.values()) == [(0, "mpi"), (1, "serial")], slices
    (nodes_0,) = [set(nodes) for p, _, nodes in slices.values() if p == 0]
    (nodes_1,) = [set(nodes) for p, _, nodes in slices.values() if p == 1]
    assert not nodes_0 & nodes_1, slices
    assert nodes_0 | nodes_1 == set(bj["nodes"]), (slices, bj["nodes"])
    for name, (launcher_id, _) in launchers.items():
        assert set(placed[name]) <= set(slices[launcher_id][2]), (name, placed[name], slices[launcher_id])

    # ... and actually ran there: a Job's SLURMD_NODENAME is a node of its partition's slice
    wrong = {
        name: (sorted(slices[launcher_id][2]), ran_on(site, name))
        for name, (launcher_id, _) in launchers.items()
        if ran_on(site, name) not in slices[launcher_id][2]
    }
    assert not wrong, f"Jobs ran outside their partition's node slice (slice, ran on): {wrong}"


# ---------------------------------------------------------------- serial mode across a 2-node allocation


def test_serial_mode_fans_jobs_out_to_a_worker_on_each_node_of_the_allocation(site: E2ESite) -> None:
    tags = {"suite": "serial"}
    names = [f"serial-where-{i}" for i in range(4)]
    site.apply(
        manifest(
            app_doc("where", WHERE_COMMAND),
            *(job_doc(name, "where", labels=tags) for name in names),
            batchjob("serial-bj", num_nodes=2, job_mode="serial", filter_tags=tags),
        )
    )
    wait_finished_in(site, names, "serial-bj")
    allocation = set(site.batchjobs("serial-bj")["serial-bj"]["status"]["nodes"])
    assert len(allocation) == 2 and allocation <= CLUSTER_NODES, allocation

    # rank 0 placed each Job on a node; the worker of that node (an MPI rank Slurm started there) ran it
    store_site = SiteDirectory.load(site.path)
    try:
        placed = {name: placed_nodes(store_site, name) for name in names}
    finally:
        store_site.close()
    ran = {name: ran_on(site, name) for name in names}
    assert all(len(nodes) == 1 for nodes in placed.values()), placed
    assert {name: nodes[0] for name, nodes in placed.items()} == ran, (placed, ran)
    assert set(ran.values()) == allocation, f"4 one-second whole-node Jobs on 2 nodes used both workers: {ran}"


# ---------------------------------------------------------------- the srun flavor: Slurm starts the MPI ranks


def rank_lines(site: E2ESite, job: str) -> list[tuple[int, int, str, str, str]]:
    """The ``RANK_COMMAND`` lines of a Job's job.out: (rank, size, node, Slurm task id, Slurm step tasks)."""
    return [(int(r), int(n), node, t, nt) for r, n, node, t, nt in RANK_LINE.findall(site.logs(job))]


def test_srun_flavor_runs_mpi_jobs_across_and_within_nodes_of_a_two_node_allocation(srun_site: E2ESite) -> None:
    tags = {"suite": "srun"}
    srun_site.apply(
        manifest(
            app_doc("mpi-rank", RANK_COMMAND),
            job_doc("srun-across", "mpi-rank", labels=tags, num_nodes=2),
            job_doc("srun-within", "mpi-rank", labels=tags, num_nodes=1, ranks_per_node=2),
            batchjob("srun-bj", num_nodes=2, job_mode="mpi", filter_tags=tags),
        )
    )
    running = wait_batchjob(srun_site, "srun-bj", {"running", "finished"})["status"]
    assert running["job_name"].startswith(f"balsam-{SRUN_SITE_NAME}-srun-bj-"), running
    allocation = running["nodes"]
    assert len(allocation) == 2 and set(allocation) <= CLUSTER_NODES, running
    wait_finished_in(srun_site, ["srun-across", "srun-within"], "srun-bj")

    # each Job: one world of 2 ranks, each rank a task of one 2-task Slurm step (srun itself, not a hydra proxy)
    across, within = rank_lines(srun_site, "srun-across"), rank_lines(srun_site, "srun-within")
    for name, lines in [("srun-across", across), ("srun-within", within)]:
        assert sorted((rank, size) for rank, size, *_ in lines) == [(0, 2), (1, 2)], (name, srun_site.logs(name))
        assert all((task, step) == (str(rank), "2") for rank, _, _, task, step in lines), (name, lines)

    # the 2-node Job: one rank on each node of the allocation; the other: both ranks on the node it was placed on
    assert sorted(node for *_, node, _, _ in across) == sorted(allocation), (across, allocation)
    store_site = SiteDirectory.load(srun_site.path)
    try:
        placed = placed_nodes(store_site, "srun-within")
    finally:
        store_site.close()
    assert len(placed) == 1 and placed[0] in allocation, (placed, allocation)
    assert [node for *_, node, _, _ in within] == placed * 2, (within, placed)
