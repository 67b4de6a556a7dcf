"""End to end on a real local site: the real CLI, controller, local scheduler, launchers and MPI.

One site and one controller serve the module; every test but the hello example gives its BatchJob
``filter_tags`` and its Jobs the matching label, so no allocation runs another test's Jobs.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import psutil
import pytest

from tests.support.e2e import REPO, E2ESite, Event, app_doc, batchjob_doc, job_doc, manifest, parse_time

pytestmark = pytest.mark.slow

SETTINGS = {
    "sync_period_sec": 1,
    "launcher": {"idle_ttl_sec": 5},
    "local_nodes": {"count": 2, "cpus_per_node": 2},
    "allowed_queues": {"local": {"max_nodes": 2}},
}
CHAIN = ["READY", "STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE", "POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"]


def assert_chain(events: list[Event], name: str, expected: list[str]) -> None:
    """``job/NAME``'s events record exactly ``expected`` (from CREATED on), each starting where the last ended."""
    events = [e for e in events if e.object == f"job/{name}" and e.to_state is not None]
    assert [e.to_state for e in events] == expected, events
    assert events[0].from_state is None
    for before, after in itertools.pairwise(events):
        assert after.from_state == before.to_state, (before, after)


# ---------------------------------------------------------------- the quick-start example


def test_hello_example_runs_in_order_and_quotes_parameters(site: E2ESite) -> None:
    out = site.apply_file(REPO / "manifests" / "examples" / "hello.yaml")
    assert out == [
        "app/hello created",
        "job/hello-1 created",
        "job/hello-2 created",
        "job/hello-3 created",
        "batchjob/laptop-1 created",
    ]
    jobs = site.wait_jobs(["hello-1", "hello-2", "hello-3"])
    assert {n: j["status"]["state"] for n, j in jobs.items()} == dict.fromkeys(jobs, "JOB_FINISHED")

    # hello-3 started only after both parents had run ...
    start3 = parse_time(jobs["hello-3"]["status"]["start_time"])
    for parent in ("hello-1", "hello-2"):
        assert parse_time(jobs[parent]["status"]["end_time"]) <= start3
    # ... and, in the event log's order, only after both were JOB_FINISHED.
    events = site.events()
    position = {(e.object, e.to_state): i for i, e in enumerate(events)}
    acquired3 = position[("job/hello-3", "RUNNING")]
    assert position[("job/hello-1", "JOB_FINISHED")] < acquired3
    assert position[("job/hello-2", "JOB_FINISHED")] < acquired3
    assert position[("job/hello-3", "READY")] > max(
        position[("job/hello-1", "JOB_FINISHED")], position[("job/hello-2", "JOB_FINISHED")]
    )

    for name in ("hello-1", "hello-2"):
        assert_chain(events, name, ["CREATED", *CHAIN])
    assert_chain(events, "hello-3", ["CREATED", "AWAITING_PARENTS", *CHAIN])

    # the parameter's shell metacharacters are printed, never run
    greeting = site.logs("hello-2")
    assert greeting.startswith("Hello, "), greeting
    assert "Kubernetes; rm -rf ~" in greeting
    assert (site.home / "canary").exists(), "the quoted `rm -rf ~` ran"
    assert (site.path / "data" / "hello" / "1" / "job.out").read_text().startswith("Hello, Balsam! from ")

    # clean up: the example's BatchJob has no filter tags and would run the other tests' Jobs
    assert site.cli("delete", "batchjob", "laptop-1").stdout.strip() in (
        "batchjob/laptop-1 deletion requested",
        "batchjob/laptop-1 deleted",
    )
    site.wait_gone("batchjobs", "laptop-1")


# ---------------------------------------------------------------- a failing Job


def test_failing_job_fails_and_fails_its_child(site: E2ESite) -> None:
    site.apply(
        manifest(
            app_doc("failer", 'echo "failing on purpose"; exit 3'),
            app_doc("never", "echo should-not-run"),
            job_doc("fail-1", "failer", labels={"suite": "fail"}),
            job_doc("fail-child", "never", labels={"suite": "fail"}, parents=["fail-1"]),
            batchjob_doc("fail-bj", filter_tags={"suite": "fail"}),
        )
    )
    jobs = site.wait_jobs(["fail-1", "fail-child"])
    failed = jobs["fail-1"]["status"]
    assert failed["state"] == "FAILED"
    assert failed["return_code"] == 3
    assert "failing on purpose" in (failed["output_tail"] or "")
    events = site.events()
    assert_chain(events, "fail-1", ["CREATED", "READY", "STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_ERROR", "FAILED"])

    child = jobs["fail-child"]["status"]
    assert child["state"] == "FAILED"
    assert "fail-1" in (child["message"] or "")
    assert child["attempts"] == 0
    assert_chain(events, "fail-child", ["CREATED", "AWAITING_PARENTS", "FAILED"])
    assert not (site.path / "data" / "never" / "fail-child" / "job.out").exists()


# ---------------------------------------------------------------- deleting a running allocation


@pytest.mark.parametrize(("mode", "nodes"), [("mpi", 1), ("serial", 1), ("serial", 2)])
def test_deleting_a_running_batchjob_times_out_its_jobs(site: E2ESite, mode: str, nodes: int) -> None:
    """The allocation is cancelled; its launcher, signalled, stops its Jobs and records them RUN_TIMEOUT itself (in
    serial mode its workers outlive the signal to stop the Jobs and report them)."""
    bj, tags = f"del-{mode}-{nodes}", {"suite": f"delete-{mode}-{nodes}"}
    names = [f"{bj}-{i}" for i in range(2 * nodes)]
    site.apply(
        manifest(
            app_doc("sleeper", "echo started; sleep 60"),
            *(job_doc(name, "sleeper", labels=tags, node_packing_count=2) for name in names),
            batchjob_doc(bj, num_nodes=nodes, filter_tags=tags, job_mode=mode),
        )
    )
    running = site.wait_jobs(names, {"RUNNING"})
    assert {j["status"]["batch_job"] for j in running.values()} == {bj}
    job_name = site.batchjobs(bj)[bj]["status"]["job_name"]

    out = site.cli("delete", "batchjob", bj).stdout
    assert out.strip() == f"batchjob/{bj} deletion requested"
    site.wait_gone("batchjobs", bj)
    jobs = site.wait_jobs(names, {"RESTART_READY"})
    assert {j["status"]["attempts"] for j in jobs.values()} == {1}
    assert {j["status"]["failures"] for j in jobs.values()} == {0}, "a deletion kill is never charged"

    events = site.events()
    bj_states = [e.to_state for e in events if e.object == f"batchjob/{bj}"]
    assert "pending_deletion" in bj_states
    assert bj_states[-1] == "finished"
    assert bj_states.index("pending_deletion") < bj_states.index("finished")
    for name in names:
        job_events = site.job_events(name, events)
        assert [e.to_state for e in job_events][-3:] == ["RUNNING", "RUN_TIMEOUT", "RESTART_READY"]
        timed_out = job_events[-2]
        assert (timed_out.reason, (timed_out.message or "").split(":")[0]) == ("Ran", "launcher stopped (signal)"), (
            "the launcher recorded the end, not the controller after the allocation was gone",
            timed_out,
        )
    assert site.get("jobs", extra=["--state", "RUNNING"]) == {}
    workdir = str(site.path / "data" / "sleeper")
    assert not [p for p in site.stray_jobs() if (p.info["cwd"] or "").startswith(workdir)], "sleep 60 still runs"
    output = site.path / "qsubmit" / f"{job_name}.out"
    assert "Traceback" not in output.read_text(), output.read_text()

    site.cli("delete", "job", *names)  # RESTART_READY: another allocation would run them again


# ---------------------------------------------------------------- MPI


def test_mpi_jobs_get_their_world_size(site: E2ESite) -> None:
    command = """python -c 'from mpi4py import MPI; print("size", MPI.COMM_WORLD.size)'"""
    site.apply(
        manifest(
            app_doc("mpi-size", command),
            job_doc("mpi-2x1", "mpi-size", labels={"suite": "mpi"}, num_nodes=2),
            job_doc("mpi-1x2", "mpi-size", labels={"suite": "mpi"}, ranks_per_node=2),
            batchjob_doc("mpi-bj", num_nodes=2, filter_tags={"suite": "mpi"}),
        )
    )
    jobs = site.wait_jobs(["mpi-2x1", "mpi-1x2"])
    for name, job in jobs.items():
        out = site.logs(name)
        assert job["status"]["state"] == "JOB_FINISHED", (name, job["status"], out)
        assert out.count("size 2") == 2, (name, out)
        assert out.count("size") == 2, (name, out)


def test_one_node_allocation_gets_one_node(site: E2ESite) -> None:
    """A 1-node BatchJob on a 2-node local site runs two whole-node Jobs one after the other, not side by side."""
    tags = {"suite": "one-node"}
    site.apply(
        manifest(
            app_doc("whole-node", "sleep 0.5"),
            job_doc("whole-1", "whole-node", labels=tags),
            job_doc("whole-2", "whole-node", labels=tags),
            batchjob_doc("one-node-bj", num_nodes=1, filter_tags=tags),
        )
    )
    jobs = site.wait_jobs(["whole-1", "whole-2"])
    assert {n: j["status"]["state"] for n, j in jobs.items()} == dict.fromkeys(jobs, "JOB_FINISHED")
    first, second = sorted(jobs.values(), key=lambda j: j["status"]["start_time"])
    overlap = (parse_time(first["status"]["end_time"]) - parse_time(second["status"]["start_time"])).total_seconds()
    assert overlap <= 0, f"two whole-node Jobs ran side by side for {overlap:.2f} s in a 1-node allocation"


# ---------------------------------------------------------------- latency


def test_job_starts_quickly_on_an_idle_launcher(site: E2ESite) -> None:
    site.apply(
        manifest(
            app_doc("quick", "echo quick"),
            job_doc("lat-0", "quick", labels={"suite": "latency"}),
            batchjob_doc("lat-bj", filter_tags={"suite": "latency"}),
        )
    )
    site.wait_jobs(["lat-0"], {"JOB_FINISHED"})
    bj = site.batchjobs("lat-bj")["lat-bj"]
    assert bj["status"]["state"] == "running", bj["status"]  # its launcher idles (idle_ttl_sec: 5)

    site.apply(job_doc("lat-1", "quick", labels={"suite": "latency"}))
    job = site.wait_jobs(["lat-1"], {"RUNNING", "RUN_DONE", "POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"})["lat-1"]
    assert job["status"]["batch_job"] == "lat-bj"  # the launcher that was idling: lat-bj has one allocation
    latency = (
        parse_time(job["status"]["start_time"]) - parse_time(job["metadata"]["creation_timestamp"])
    ).total_seconds()
    print(f"apply -> RUNNING on an idle launcher: {latency:.3f} s")
    assert 0 <= latency < 3.0


def test_jobs_ending_close_together_all_move_on_promptly(site: E2ESite) -> None:
    """Every outcome a launcher records wakes the controller, even one that comes right after another."""
    tags = {"suite": "prompt"}
    site.apply(
        manifest(
            app_doc("nap", "sleep {{ sec }}", parameters={"sec": {}}),
            job_doc("nap-short", "nap", labels=tags, parameters={"sec": "0.1"}),
            job_doc("nap-long", "nap", labels=tags, parameters={"sec": "0.35"}),
            batchjob_doc("nap-bj", num_nodes=2, filter_tags=tags),
        )
    )
    jobs = site.wait_jobs(["nap-short", "nap-long"])
    seen = time.time()  # an upper bound of when both were JOB_FINISHED
    assert {n: j["status"]["state"] for n, j in jobs.items()} == dict.fromkeys(jobs, "JOB_FINISHED")
    last_run_end = max(parse_time(j["status"]["end_time"]).timestamp() for j in jobs.values())
    assert seen - last_run_end < 3.0, f"JOB_FINISHED only {seen - last_run_end:.1f} s after the last run ended"


# ---------------------------------------------------------------- controller restart (last: it restarts the controller)


def _controllers(site_path: Path) -> list[int]:
    """Pids of the controller processes of this site."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "balsamctl.controller" in cmd and "--site" in cmd and str(site_path) in cmd:
            found.append(proc.pid)
    return found


def test_controller_restart_finishes_everything(site: E2ESite) -> None:
    status, pid = site.controller_status()
    assert status == "running" and pid is not None
    assert site.start_controller() == pid  # a second start finds the first ...
    assert _controllers(site.path) == [pid]  # ... and starts no other

    tags = {"suite": "restart"}
    site.apply(
        manifest(
            app_doc("step", "sleep 0.2; echo step $BALSAM_JOB_NAME"),
            job_doc("r-1", "step", labels=tags),
            batchjob_doc("rs-1", filter_tags=tags),
        )
    )
    site.wait_jobs(["r-1"], {"RUNNING", "RUN_DONE", "JOB_FINISHED"})
    try:
        assert "stopped" in site.stop_controller()
        assert site.controller_status() == ("stopped", None)
        assert _controllers(site.path) == []

        site.apply(
            manifest(
                job_doc("r-2", "step", labels=tags),
                job_doc("r-3", "step", labels=tags, parents=["r-2"]),
                batchjob_doc("rs-2", filter_tags=tags),
            )
        )
        stalled = site.jobs("r-2", "r-3")
        assert [stalled[n]["status"]["state"] for n in ("r-2", "r-3")] == ["CREATED", "CREATED"]
    finally:
        new_pid = site.start_controller()
    assert new_pid != pid
    assert site.controller_status() == ("running", new_pid)
    jobs = site.wait_jobs(["r-1", "r-2", "r-3"])
    assert {n: j["status"]["state"] for n, j in jobs.items()} == dict.fromkeys(jobs, "JOB_FINISHED")
