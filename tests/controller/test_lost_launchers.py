"""Lost launchers and allocations that never come up, seen by the controller (real store, FakeScheduler).

A launcher declared lost (its lease ran out) may only be frozen while its Jobs' processes run on: its RUNNING Jobs
stay RUNNING while its allocation lives, the controller cancels that allocation, and they are handed on (a crash
each, never a failure) once the scheduler says it ended. An allocation whose launchers never start is told on its
BatchJob (``LaunchersStarted``), and the site counts such allocations in a row.
"""

from __future__ import annotations

import time

import yaml

from balsamctl.controller.batchjobs import BatchJobReconciler
from balsamctl.controller.jobs import JobReconciler
from balsamctl.schemas import BatchJob, BatchJobState, Job
from balsamctl.schemas import JobState as S
from balsamctl.schemas.objects import Condition
from balsamctl.site.apply import apply_documents, read_documents
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import RunResult, RunStart
from tests.support.fake_scheduler import FakeScheduler
from tests.support.store_ops import make_runnable, state_events

LEASE = 0.3


def apply(site: SiteDirectory, *docs: dict[str, object]) -> None:
    text = yaml.safe_dump_all([{"apiVersion": "balsam/v1", **d} for d in docs])
    apply_documents(site, read_documents([("test.yaml", text)]))


def app(name: str = "sim") -> dict[str, object]:
    return {"kind": "App", "metadata": {"name": name}, "spec": {"command": "true"}}


def job(name: str) -> dict[str, object]:
    return {"kind": "Job", "metadata": {"name": name}, "spec": {"app": "sim", "workdir": f"w/{name}"}}


def batchjob(name: str) -> dict[str, object]:
    spec = {"num_nodes": 1, "wall_time_min": 10, "queue": "local", "project": "local"}
    return {"kind": "BatchJob", "metadata": {"name": name}, "spec": spec}


def bj_of(site: SiteDirectory, name: str) -> BatchJob:
    manifest = site.store.get_object(site.site_id, "BatchJob", name).manifest
    assert isinstance(manifest, BatchJob)
    return manifest


def job_of(site: SiteDirectory, name: str) -> Job:
    manifest = site.store.get_object(site.site_id, "Job", name).manifest
    assert isinstance(manifest, Job)
    return manifest


def condition(bj: BatchJob, type_: str) -> Condition:
    found = [c for c in bj.status.conditions if c.type == type_]
    assert found, f"batchjob/{bj.metadata.name} has no {type_} condition: {bj.status.conditions}"
    return found[0]


def started_batchjob(site: SiteDirectory, sched: FakeScheduler, name: str, started_ago: float = 0.0) -> str:
    """Apply BatchJob ``name``, let the reconciler submit it and see its allocation run; its scheduler id."""
    apply(site, batchjob(name))
    rec = BatchJobReconciler(site, sched)
    rec()
    sched_id = bj_of(site, name).status.scheduler_id
    assert sched_id is not None
    sched.run(sched_id, started_ago)
    rec()
    assert bj_of(site, name).status.state == BatchJobState.running
    return sched_id


def register(site: SiteDirectory, launcher: str, batch_job: str) -> None:
    site.store.register_launcher(
        site.site_id, launcher, batch_job=batch_job, partition=0, job_mode="mpi", host="node-7", pid=1, nodes=["n0"]
    )


# ---------------------------------------------------------------- a lost launcher is fenced before its Jobs run again


def test_a_lost_launchers_running_jobs_wait_for_its_allocation_to_end(balsam_site: SiteDirectory) -> None:
    site, sid = balsam_site, balsam_site.site_id
    store = site.store
    apply(site, app(), job("a"), job("b"), job("c"))
    make_runnable(store, sid)
    sched = FakeScheduler(site.path)
    sched_id = started_batchjob(site, sched, "bj")
    rec = BatchJobReconciler(site, sched)
    register(site, "frozen", "bj")
    refs = {r.name: r for r in store.claim(sid, owner="frozen", batch_job="bj", filter_tags={}, limit=3)}
    started = [RunStart(refs["a"]), RunStart(refs["b"])]
    assert store.record(sid, owner="frozen", started=started) == {refs["a"].id, refs["b"].id}
    time.sleep(LEASE * 2)

    swept = store.sweep_lost_launchers(sid, lease_sec=LEASE)

    assert (swept.launchers, swept.timed_out, swept.kept, swept.handed_back) == (["frozen"], 0, 3, 0)
    assert {job_of(site, n).status.state for n in "ab"} == {S.RUNNING}, "handed on while its allocation lives"
    register(site, "other", "bj")  # nor its claim: a serial-mode worker may start what it queued on its lanes
    assert store.claim(sid, owner="other", batch_job="bj", filter_tags={}, limit=5) == []

    rec()  # the allocation of the lost launcher is cancelled, and the BatchJob says why
    assert sched.cancels == [sched_id]
    lost = condition(bj_of(site, "bj"), "LaunchersHealthy")
    assert (lost.status, lost.reason) == ("False", "LauncherLost")
    assert "frozen" in lost.message and "node-7" in lost.message and "2 RUNNING and 1 claimed" in lost.message
    assert {job_of(site, n).status.state for n in "ab"} == {S.RUNNING}, "handed on before the scheduler said so"

    # woken by the cancel, the launcher stops and records one of its runs itself (its own RUN_TIMEOUT: free) ...
    stopped = RunResult(refs["a"].id, "a", S.RUN_TIMEOUT, return_code=-15, message="stopped")
    store.record(sid, owner="frozen", results=[stopped])
    sched.end(sched_id, "CANCELLED")  # ... and the allocation ends before it records the other
    rec()

    assert bj_of(site, "bj").status.state == BatchJobState.finished
    a, b = job_of(site, "a").status, job_of(site, "b").status
    assert (a.state, a.crashes, a.failures) == (S.RUN_TIMEOUT, 0, 0)
    assert (b.state, b.crashes, b.failures) == (S.RUN_TIMEOUT, 1, 0), "a run lost with its launcher is a crash"
    assert ("RUNNING", "RUN_TIMEOUT", "AllocationEnded") in state_events(store, sid, "b")
    register(site, "after", "bj2")  # the claim went back with the allocation's end
    assert [r.name for r in store.claim(sid, owner="after", batch_job="bj2", filter_tags={}, limit=5)] == ["c"]

    jobs = JobReconciler(site, lambda: None)
    try:
        jobs()
    finally:
        jobs.close()
    assert {job_of(site, n).status.state for n in "ab"} == {S.RESTART_READY}


def test_a_lost_launcher_of_an_ended_allocation_hands_its_jobs_on_at_once(balsam_site: SiteDirectory) -> None:
    site, sid = balsam_site, balsam_site.site_id
    store = site.store
    apply(site, app(), job("a"))
    make_runnable(store, sid)
    sched = FakeScheduler(site.path)
    started_batchjob(site, sched, "bj")
    register(site, "gone", "bj")
    [ref] = store.claim(sid, owner="gone", batch_job="bj", filter_tags={}, limit=1)
    store.record(sid, owner="gone", started=[RunStart(ref)])
    # the BatchJob is seen finished (by a controller that did not see this run yet): nothing can still run it
    store.set_batchjob_status(sid, "bj", src=BatchJobState.running, dst=BatchJobState.finished)
    time.sleep(LEASE * 2)

    swept = store.sweep_lost_launchers(sid, lease_sec=LEASE)

    assert (swept.timed_out, swept.kept) == (1, 0)
    status = job_of(site, "a").status
    assert (status.state, status.crashes, status.failures) == (S.RUN_TIMEOUT, 1, 0)
    assert ("RUNNING", "RUN_TIMEOUT", "LeaseExpired") in state_events(store, sid, "a")


def test_a_lost_launcher_of_an_allocation_whose_submit_timed_out_keeps_its_jobs(balsam_site: SiteDirectory) -> None:
    """A BatchJob still ``pending_submission`` (its submit timed out: the allocation may have gone through and run
    launchers) is live: a lost launcher's Jobs wait for its allocation's end there too."""
    site, sid = balsam_site, balsam_site.site_id
    store = site.store
    apply(site, app(), job("a"), job("b"), batchjob("bj"))
    make_runnable(store, sid)
    register(site, "frozen", "bj")
    refs = store.claim(sid, owner="frozen", batch_job="bj", filter_tags={}, limit=2)
    assert store.record(sid, owner="frozen", started=[RunStart(refs[0])]) == {refs[0].id}
    time.sleep(LEASE * 2)

    swept = store.sweep_lost_launchers(sid, lease_sec=LEASE)

    assert bj_of(site, "bj").status.state == BatchJobState.pending_submission
    assert (swept.launchers, swept.timed_out, swept.kept, swept.handed_back) == (["frozen"], 0, 2, 0)
    assert job_of(site, refs[0].name).status.state == S.RUNNING
    register(site, "other", "bj")
    assert store.claim(sid, owner="other", batch_job="bj", filter_tags={}, limit=5) == []


def test_a_job_lost_with_its_launcher_past_the_crash_limit_fails(balsam_site: SiteDirectory) -> None:
    site, sid = balsam_site, balsam_site.site_id
    launcher = site.settings.launcher.model_copy(update={"crash_limit": 1})
    site.settings = site.settings.model_copy(update={"launcher": launcher})
    store = site.store
    apply(site, {**app(), "spec": {"command": "true", "max_retries": 5}}, job("killer"))
    make_runnable(store, sid)
    sched = FakeScheduler(site.path)
    jobs = JobReconciler(site, lambda: None)
    try:
        for attempt in (1, 2):  # each run takes its node down: its allocation ends before its launcher records it
            sched_id = started_batchjob(site, sched, f"bj-{attempt}")
            register(site, f"l-{attempt}", f"bj-{attempt}")
            refs = store.claim(sid, owner=f"l-{attempt}", batch_job=f"bj-{attempt}", filter_tags={}, limit=1)
            assert store.record(sid, owner=f"l-{attempt}", started=[RunStart(refs[0])])
            sched.end(sched_id, "NODE_FAIL")
            BatchJobReconciler(site, sched)()
            jobs()
    finally:
        jobs.close()

    status = job_of(site, "killer").status
    assert (status.state, status.crashes, status.failures) == (S.FAILED, 2, 0)
    assert "launcher.crash_limit 1" in (status.message or "")
    reasons = [reason for _, _, reason in state_events(store, sid, "killer")]
    assert reasons.count("Retry") == 1 and reasons[-1] == "CrashLimitExceeded"


# ---------------------------------------------------------------- allocations that never come up


def write_output(site: SiteDirectory, name: str, text: str) -> None:
    """The allocation's own output file, where the local scheduler writes it: ``qsubmit/<job name>.out``."""
    job_name = bj_of(site, name).status.job_name
    assert job_name
    (site.qsubmit_dir / f"{job_name}.out").write_text(text)


def test_an_allocation_without_a_launcher_heartbeat_is_told_with_its_output(balsam_site: SiteDirectory) -> None:
    site = balsam_site
    sched = FakeScheduler(site.path)
    timeout = site.settings.launcher.start_timeout_sec
    started_batchjob(site, sched, "young", started_ago=timeout / 2)
    started_batchjob(site, sched, "silent", started_ago=timeout + 5)
    write_output(site, "silent", "".join(f"line {i}\n" for i in range(100)) + "module: command not found\n")
    BatchJobReconciler(site, sched)()

    assert not [c for c in bj_of(site, "young").status.conditions if c.type == "LaunchersStarted"], "too early"
    told = condition(bj_of(site, "silent"), "LaunchersStarted")
    assert (told.status, told.reason) == ("False", "NoHeartbeat")
    assert "module: command not found" in told.message and "line 99" in told.message and "line 5\n" not in told.message

    register(site, "late", "silent")  # a launcher that comes up after all
    BatchJobReconciler(site, sched)()
    told = condition(bj_of(site, "silent"), "LaunchersStarted")
    assert (told.status, told.reason) == ("True", "Registered") and "late" in told.message


def test_an_allocation_whose_start_time_the_scheduler_does_not_give_is_timed_from_when_it_was_seen_running(
    balsam_site: SiteDirectory,
) -> None:
    site = balsam_site
    launcher = site.settings.launcher.model_copy(update={"start_timeout_sec": LEASE})
    site.settings = site.settings.model_copy(update={"launcher": launcher})
    sched = FakeScheduler(site.path)
    apply(site, batchjob("no-start-time"))
    rec = BatchJobReconciler(site, sched)
    rec()
    sched_id = bj_of(site, "no-start-time").status.scheduler_id
    assert sched_id is not None
    sched.run(sched_id, started_ago=None)  # the scheduler gives no start time
    rec()
    bj = bj_of(site, "no-start-time")
    assert (bj.status.state, bj.status.start_time) == (BatchJobState.running, None)
    assert not [c for c in bj.status.conditions if c.type == "LaunchersStarted"]

    time.sleep(LEASE * 2)
    rec()

    told = condition(bj_of(site, "no-start-time"), "LaunchersStarted")
    assert (told.status, told.reason) == ("False", "NoHeartbeat")


def test_allocations_that_end_before_a_launcher_starts_are_counted_in_a_row(balsam_site: SiteDirectory) -> None:
    site, sid = balsam_site, balsam_site.site_id
    sched = FakeScheduler(site.path)
    rec = BatchJobReconciler(site, sched)
    ok_id = started_batchjob(site, sched, "ok")
    register(site, "fine", "ok")
    rec()
    sched.end(ok_id)
    rec()
    assert site.store.allocations_not_started(sid) == 0
    for name in ("broken-1", "broken-2"):
        sched_id = started_batchjob(site, sched, name)
        write_output(site, name, f"{name}: /opt/env/activate: No such file or directory\n")
        sched.end(sched_id, "FAILED")
        rec()
        told = condition(bj_of(site, name), "LaunchersStarted")
        assert (told.status, told.reason) == ("False", "EndedBeforeLaunch")
        assert f"{name}: /opt/env/activate: No such file" in told.message and "FAILED" in told.message
    started_batchjob(site, sched, "pending")  # running, not decided yet: passed over
    assert site.store.allocations_not_started(sid) == 2

    register(site, "up", "pending")  # one that starts ends the row
    rec()
    assert site.store.allocations_not_started(sid) == 0


def test_an_allocation_whose_launcher_failed_its_preflight_says_so(balsam_site: SiteDirectory) -> None:
    """A launcher that fails its preflight never registers: its allocation started no launcher, and says why (the
    preflight's reason and message), not that it ended before any launcher started. It counts in the row."""
    site, sid = balsam_site, balsam_site.site_id
    sched = FakeScheduler(site.path)
    said = "launcher.mpi_command 'mpiexec' is not on PATH (searched /usr/bin:/bin)"
    ended_id = started_batchjob(site, sched, "no-mpi")
    started_batchjob(site, sched, "still-up", started_ago=site.settings.launcher.start_timeout_sec + 5)
    for name in ("no-mpi", "still-up"):
        site.store.set_batchjob_condition(sid, name, "LauncherReady", "False", "MPICommandNotFound", said)
        write_output(site, name, "preflight failed (LauncherReady=False, MPICommandNotFound)\n")
    sched.end(ended_id, "FAILED")
    BatchJobReconciler(site, sched)()

    for name in ("no-mpi", "still-up"):
        told = condition(bj_of(site, name), "LaunchersStarted")
        assert (told.status, told.reason) == ("False", "PreflightFailed")
        assert "MPICommandNotFound" in told.message and said in told.message
        assert "ended before" not in told.message and "has heartbeat" not in told.message
        assert "preflight failed (LauncherReady=False" in told.message  # the allocation's output, as ever
    assert site.store.allocations_not_started(sid) == 2  # each an allocation that started no launcher


def test_a_finished_batchjob_from_before_the_count_ends_the_row(balsam_site: SiteDirectory) -> None:
    """A site older than the ``LaunchersStarted`` condition: its finished BatchJobs carry none, and the first one
    met ends the row (what lies before it is not read)."""
    site, sid = balsam_site, balsam_site.site_id
    for name in ("broken-before", "legacy", "broken-since"):
        apply(site, batchjob(name))
        site.store.set_batchjob_status(sid, name, src=BatchJobState.pending_submission, dst=BatchJobState.queued)
        if name != "legacy":
            site.store.set_batchjob_condition(sid, name, "LaunchersStarted", "False", "EndedBeforeLaunch", "gone")
        site.store.set_batchjob_status(sid, name, src=BatchJobState.queued, dst=BatchJobState.finished)

    assert site.store.allocations_not_started(sid) == 1


def test_only_the_tail_of_a_big_output_file_is_kept(balsam_site: SiteDirectory) -> None:
    site = balsam_site
    sched = FakeScheduler(site.path)
    sched_id = started_batchjob(site, sched, "big")
    write_output(site, "big", "x" * 10_000_000 + "\n\x00the end\n")
    sched.end(sched_id)
    BatchJobReconciler(site, sched)()
    told = condition(bj_of(site, "big"), "LaunchersStarted")
    assert told.message.endswith("\ufffdthe end") and len(told.message) < 6000
