"""The BatchJob reconciler: its edge cases against FakeScheduler, in milliseconds, and end to end against the real
Slurm adapter and the real cluster of ``scripts/slurm-up.sh``.

FakeScheduler (tests/support/fake_scheduler.py) is programmed per allocation: scripted states, refused and hung
calls, allocations it forgets; it records every call. The reconciler backs off for a second after a failure: the
tests let that time pass by clearing its backoff (:func:`later`) instead of waiting.

Against Slurm, a hanging sbatch is a shell script first on PATH that submits through the real one, then sleeps; the
adapter is built with a 1 s timeout. Allocations come from the site's job template: ``#SBATCH --hold`` keeps most of
them pending, so they use no nodes. Every Slurm job a test causes is named ``balsam-<site>-...`` (one site name per
test) and is cancelled after.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balsamctl.controller.batchjobs import BatchJobReconciler
from balsamctl.schedulers import SlurmScheduler
from balsamctl.schemas import BatchJob, BatchJobState
from balsamctl.schemas.objects import Condition
from balsamctl.site.apply import apply_documents, read_documents
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Selector
from tests.support.fake_scheduler import LOST, FakeScheduler, Lost, Step, finished, queued, running
from tests.support.site_ops import configure

B = BatchJobState
TERMINAL = {B.finished, B.submit_failed}

# ---------------------------------------------------------------- helpers for both


def apply_batchjobs(site: SiteDirectory, *names: str, num_nodes: int = 1) -> None:
    """Apply BatchJobs on the site's first queue and project."""
    queue, project = next(iter(site.settings.allowed_queues)), site.settings.allowed_projects[0]
    spec = {"num_nodes": num_nodes, "wall_time_min": 5, "queue": queue, "project": project}
    docs = [{"apiVersion": "balsam/v1", "kind": "BatchJob", "metadata": {"name": name}, "spec": spec} for name in names]
    apply_documents(site, read_documents([("test", yaml.safe_dump_all(docs))]))


def batchjob(site: SiteDirectory, name: str) -> BatchJob:
    """The stored BatchJob ``name``."""
    obj = site.store.get_object(site.site_id, "BatchJob", name).manifest
    assert isinstance(obj, BatchJob)
    return obj


def exists(site: SiteDirectory, name: str) -> bool:
    """Whether batchjob/NAME is still stored."""
    return bool(site.store.list_objects(Selector("BatchJob", (site.site_id,), names=(name,))))


def condition(bj: BatchJob, type_: str) -> Condition | None:
    """The condition of ``type_`` on ``bj``, if any."""
    return next((c for c in bj.status.conditions if c.type == type_), None)


def said(bj: BatchJob, type_: str) -> tuple[str, str] | None:
    """The status and reason of ``bj``'s condition of ``type_``, if it has one."""
    found = condition(bj, type_)
    return None if found is None else (found.status, found.reason)


def events_of(site: SiteDirectory, name: str) -> list[dict[str, Any]]:
    """The events of batchjob/NAME, oldest first."""
    return site.store.events((site.site_id,), kind="BatchJob", name=name, limit=100)


def moves(site: SiteDirectory, name: str) -> list[tuple[str, str, str]]:
    """The state changes of batchjob/NAME since it was created: (from, to, reason)."""
    return [(e["from_state"], e["to_state"], e["reason"]) for e in events_of(site, name) if e["from_state"]]


# ---------------------------------------------------------------- against FakeScheduler


def later(rec: BatchJobReconciler) -> BatchJobReconciler:
    """``rec`` once its backoffs have run out (the time a failure makes it wait has passed)."""
    rec.backoff.not_before.clear()
    return rec


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteDirectory]:
    """A site on SQLite (its scheduler is the FakeScheduler each test gives the reconciler)."""
    made = init_site(tmp_path / "site", "fast", register=False)
    yield made
    made.close()


@pytest.fixture
def sched(site: SiteDirectory) -> FakeScheduler:
    """A FakeScheduler for ``site``: an allocation stays queued unless a test plans or moves it."""
    return FakeScheduler(site.path)


# ---------------------------------------------------------------- submission and what status says


def test_a_batchjob_is_submitted_once_and_follows_its_allocation_to_its_end(
    site: SiteDirectory, sched: FakeScheduler
) -> None:
    apply_batchjobs(site, "bj")
    sched.plan(queued(), running(nodes=("n1", "n2")), finished(exit_code=3))
    rec = BatchJobReconciler(site, sched)

    assert rec()  # submitted: nothing to ask the scheduler about before
    bj = batchjob(site, "bj")
    assert (bj.status.state, bj.status.scheduler_id) == (B.queued, "1000")
    assert bj.status.job_name and bj.status.submit_script and Path(bj.status.submit_script).is_file()
    assert [call.method for call in sched.calls] == ["submit"]
    submitted = events_of(site, "bj")[-1]
    assert submitted["reason"] == "Submitted"
    assert submitted["message"] == f"submitted as 1000: fake-submit --job-name {bj.status.job_name} -N 1 " + str(
        bj.status.submit_script
    )

    assert not rec()  # still queued
    assert rec()
    bj = batchjob(site, "bj")
    assert (bj.status.state, bj.status.nodes) == (B.running, ["n1", "n2"]) and bj.status.start_time
    assert events_of(site, "bj")[-1]["message"] == "allocation 1000 started on n1,n2"
    assert rec()
    bj = batchjob(site, "bj")
    assert (bj.status.state, bj.status.message) == (B.finished, "allocation ended: FAILED (exit code 3)")
    assert bj.status.end_time is not None
    assert said(bj, "LaunchersStarted") == ("False", "EndedBeforeLaunch")

    assert len(sched.submits) == 1 and sched.status_calls == [("1000",)] * 3
    assert not rec() and len(sched.calls) == 4, "a finished BatchJob is left alone"


@pytest.mark.parametrize(
    ("script", "path"),
    [
        ((finished(0, "CANCELLED"),), [("queued", "finished", "Finished")]),  # ended while queued
        ((running(), LOST), [("queued", "running", "Running"), ("running", "finished", "Finished")]),
        ((queued(), LOST), [("queued", "finished", "Finished")]),
    ],
    ids=["ended-while-queued", "lost-while-running", "lost-while-queued"],
)
def test_what_the_scheduler_says_moves_the_batchjob(
    site: SiteDirectory, sched: FakeScheduler, script: tuple[Step, ...], path: list[tuple[str, str, str]]
) -> None:
    apply_batchjobs(site, "bj")
    sched.plan(*script)
    rec = BatchJobReconciler(site, sched)
    for _ in range(4):
        rec()
    assert moves(site, "bj") == [("pending_submission", "queued", "Submitted"), *path]
    if script[-1] is LOST:
        assert batchjob(site, "bj").status.message == "the allocation is no longer known to the scheduler"


def test_status_of_many_batchjobs_is_one_call_per_pass(site: SiteDirectory, sched: FakeScheduler) -> None:
    count = 12
    site = configure(site, {"allowed_queues": {"local": {"max_queued_jobs": count}}})
    names = [f"many-{i:02d}" for i in range(count)]
    apply_batchjobs(site, *names)
    rec = BatchJobReconciler(site, sched)
    rec()
    ids = {batchjob(site, name).status.scheduler_id or "" for name in names}
    assert len(ids) == count and "" not in ids
    assert sched.status_calls == [], "submitting fresh BatchJobs asks no status"
    for passes in range(1, 4):
        rec()
        asked = sched.status_calls
        assert len(asked) == passes, f"{len(asked)} status calls in {passes} passes over {count} BatchJobs"
        assert sorted(asked[-1]) == sorted(ids)
    assert len(sched.submits) == count


def held_back(site: SiteDirectory, sched: FakeScheduler, name: str) -> tuple[SiteDirectory, BatchJobReconciler]:
    """``site`` with one place in its queue, taken by batchjob/first, and batchjob/NAME held back by the limit; the
    reconciler that passed over both (NAME applied after the first pass: see the xfail test below)."""
    site = configure(site, {"allowed_queues": {"local": {"max_queued_jobs": 1}}})
    apply_batchjobs(site, "first")
    rec = BatchJobReconciler(site, sched)
    rec()
    apply_batchjobs(site, name)
    rec()
    return site, rec


def test_the_queue_limit_holds_a_submission_back_until_a_place_frees(site: SiteDirectory, sched: FakeScheduler) -> None:
    site, rec = held_back(site, sched, "second")
    assert (batchjob(site, "first").status.state, batchjob(site, "second").status.state) == (
        B.queued,
        B.pending_submission,
    )
    held = condition(batchjob(site, "second"), "Submitted")
    assert held is not None and (held.status, held.reason) == ("False", "QueueLimit")
    assert "max_queued_jobs 1" in held.message
    sched.end("1000")
    rec()
    rec()
    assert batchjob(site, "second").status.state == B.queued
    assert len(sched.submits) == 2


def test_batchjobs_applied_together_keep_to_the_queue_limit(site: SiteDirectory, sched: FakeScheduler) -> None:
    """Those a pass submits count against the next ones of the same pass."""
    site = configure(site, {"allowed_queues": {"local": {"max_queued_jobs": 2}}})
    apply_batchjobs(site, "first", "second", "third")
    BatchJobReconciler(site, sched)()
    assert len(sched.submits) == 2
    held = condition(batchjob(site, "third"), "Submitted")
    assert held is not None and (held.status, held.reason) == ("False", "QueueLimit")


# ---------------------------------------------------------------- deletion


def test_deleting_a_batchjob_cancels_its_allocation_once_and_removes_it_once_ended(
    site: SiteDirectory, sched: FakeScheduler
) -> None:
    apply_batchjobs(site, "bj")
    sched.plan(queued(), running())
    rec = BatchJobReconciler(site, sched)
    rec()
    rec()
    assert [r.action for r in site.store.delete(site.site_id, [("BatchJob", "bj")])] == ["deletion requested"]
    rec()  # cancel sent; the allocation ends at once here, but this pass read its status before the cancel
    assert sched.cancels == ["1000"]
    assert said(batchjob(site, "bj"), "Cancelled") == ("True", "CancelRequested")
    rec()
    assert not exists(site, "bj")
    assert sched.cancels == ["1000"], "cancelled once"
    ended = sched.now("1000")
    assert ended is not None and ended.raw_state == "CANCELLED"


def test_a_refused_cancel_is_told_and_tried_again(site: SiteDirectory, sched: FakeScheduler) -> None:
    apply_batchjobs(site, "bj")
    rec = BatchJobReconciler(site, sched)
    rec()
    site.store.delete(site.site_id, [("BatchJob", "bj")])
    sched.refuse("cancel", "scancel: error: Kill job error on job id 1000: Access/permission denied")
    rec()
    refused = condition(batchjob(site, "bj"), "Cancelled")
    assert refused is not None and (refused.status, refused.reason) == ("False", "CancelFailed")
    assert "Access/permission denied" in refused.message
    rec()
    rec()
    assert sched.cancels == ["1000", "1000"] and not exists(site, "bj")


def test_deleting_a_batchjob_never_submitted_calls_no_scheduler(site: SiteDirectory, sched: FakeScheduler) -> None:
    site, rec = held_back(site, sched, "waiting")  # no job name, no allocation
    assert batchjob(site, "waiting").status.job_name is None
    calls = len(sched.calls)
    site.store.delete(site.site_id, [("BatchJob", "waiting")])
    rec()
    assert not exists(site, "waiting")
    assert [call.method for call in sched.calls[calls:]] == ["status"], "only the pass's status call, for 'first'"


# ---------------------------------------------------------------- submit failures


def test_a_refused_submit_is_submit_failed_with_the_schedulers_words(site: SiteDirectory, sched: FakeScheduler) -> None:
    words = "sbatch: error: Batch job submission failed: Invalid partition name specified"
    sched.refuse("submit", words)
    apply_batchjobs(site, "bj")
    rec = BatchJobReconciler(site, sched)
    assert rec()
    bj = batchjob(site, "bj")
    assert (bj.status.state, bj.status.message, bj.status.scheduler_id) == (B.submit_failed, words, None)
    assert moves(site, "bj") == [("pending_submission", "submit_failed", "SubmitFailed")]
    assert events_of(site, "bj")[-1]["message"] == words
    told = condition(bj, "Submitted")
    assert told is not None and (told.status, told.reason, told.message) == ("False", "SubmitFailed", words)
    assert not rec() and len(sched.submits) == 1, "a failed submission is not tried again"


def test_a_template_that_does_not_render_is_submit_failed_without_a_submit(
    site: SiteDirectory, sched: FakeScheduler
) -> None:
    (site.path / "job-template.sh").write_text("#!/bin/bash\n{{ no_such_variable }}\n")
    apply_batchjobs(site, "bj")
    BatchJobReconciler(site, sched)()
    bj = batchjob(site, "bj")
    assert bj.status.state == B.submit_failed and "cannot render" in (bj.status.message or "")
    assert moves(site, "bj") == [("pending_submission", "submit_failed", "TemplateError")]
    told = condition(bj, "Submitted")
    assert told is not None and (told.status, told.reason) == ("False", "TemplateError")
    assert sched.calls == []


@pytest.mark.parametrize("went_through", [True, False], ids=["submitted-then-hung", "hung-before-submitting"])
def test_a_submit_that_timed_out_is_looked_up_by_name_and_never_made_twice(
    site: SiteDirectory, sched: FakeScheduler, went_through: bool
) -> None:
    sched.hang("submit", went_through=went_through)
    apply_batchjobs(site, "bj")
    rec = BatchJobReconciler(site, sched)
    rec()
    bj = batchjob(site, "bj")
    assert (bj.status.state, bj.status.scheduler_id) == (B.pending_submission, None), "it may have gone through"
    assert bj.status.job_name, "the job name is recorded before the scheduler is called"
    unknown = condition(bj, "Submitted")
    assert unknown is not None and (unknown.status, unknown.reason) == ("Unknown", "SubmitTimeout")
    assert "fake-submit" in unknown.message and "timed out" in unknown.message
    rec()
    assert len(sched.calls) == 1, "backed off: nothing is asked again at once"

    restarted = BatchJobReconciler(site, sched)  # a controller restart: no memory of the timeout
    restarted()
    later(rec)()
    bj = batchjob(site, "bj")
    assert bj.status.state == B.queued and len(sched.named(bj.status.job_name or "")) == 1, sched.calls
    assert bj.status.scheduler_id == "1000"
    assert [call.method for call in sched.calls][:3] == [
        "submit",
        "find_by_name",
        "status" if went_through else "submit",
    ]
    assert len(sched.submits) == (1 if went_through else 2)
    if went_through:
        assert moves(site, "bj")[-1] == ("pending_submission", "queued", "Adopted")


def test_a_timed_out_submit_whose_allocation_already_ended_is_adopted_not_made_again(
    site: SiteDirectory, sched: FakeScheduler
) -> None:
    sched.hang("submit", went_through=True)
    sched.plan(finished())
    apply_batchjobs(site, "bj")
    rec = BatchJobReconciler(site, sched)
    rec()
    later(rec)()
    rec()
    assert moves(site, "bj") == [("pending_submission", "queued", "Adopted"), ("queued", "finished", "Finished")]
    assert len(sched.submits) == 1


def test_deleting_a_batchjob_whose_submit_timed_out_cancels_its_allocation(
    site: SiteDirectory, sched: FakeScheduler
) -> None:
    sched.hang("submit", went_through=True)
    apply_batchjobs(site, "bj")
    rec = BatchJobReconciler(site, sched)
    rec()
    site.store.delete(site.site_id, [("BatchJob", "bj")])
    rec()  # looked up by name, cancelled
    assert sched.lookups == [batchjob(site, "bj").status.job_name]
    assert sched.cancels == ["1000"]
    rec()
    assert not exists(site, "bj")
    assert not sched.allocations["1000"].live


# ---------------------------------------------------------------- status failures


@pytest.mark.parametrize("failure", ["hang", "refuse"])
def test_a_failing_status_call_becomes_a_condition_and_a_later_pass_recovers(
    site: SiteDirectory, sched: FakeScheduler, failure: str
) -> None:
    apply_batchjobs(site, "bj")
    sched.plan(running())
    rec = BatchJobReconciler(site, sched)
    rec()
    if failure == "hang":
        sched.hang("status")
    else:
        sched.refuse("status", "squeue: error: slurm_load_jobs error: Unable to contact slurm controller")
    rec()
    bj = batchjob(site, "bj")
    assert bj.status.state == B.queued, "the BatchJob must not move on what the scheduler did not say"
    unreachable = condition(bj, "SchedulerReachable")
    assert unreachable is not None and (unreachable.status, unreachable.reason) == ("False", "StatusFailed")
    assert "fake-status" in unreachable.message
    assert ("timed out" if failure == "hang" else "Unable to contact") in unreachable.message
    rec()
    assert len(sched.status_calls) == 1, "backed off: not asked again at once"

    later(rec)()
    bj = batchjob(site, "bj")
    assert (bj.status.state, said(bj, "SchedulerReachable")) == (B.running, ("True", "StatusOk"))


def test_a_failing_lookup_by_name_leaves_the_batchjob_pending(site: SiteDirectory, sched: FakeScheduler) -> None:
    sched.hang("submit", went_through=True)
    apply_batchjobs(site, "bj")
    rec = BatchJobReconciler(site, sched)
    rec()
    sched.hang("find_by_name")
    later(rec)()
    bj = batchjob(site, "bj")
    assert bj.status.state == B.pending_submission and said(bj, "Synced") == ("False", "ReconcileError")
    later(rec)()
    assert batchjob(site, "bj").status.state == B.queued and len(sched.submits) == 1


# ---------------------------------------------------------------- properties of any scripted run

STEPS = st.sampled_from([queued(), running(), running(nodes=("n1", "n2"), started_ago=None)])
ENDS = st.sampled_from([finished(0), finished(3), finished(None, "NODE_FAIL"), LOST])
SCRIPTS = st.builds(lambda steps, end: (*steps, end), st.lists(STEPS, max_size=4), ENDS)
SUBMIT_FAULTS = st.sampled_from([None, "refused", "hung-before", "hung-after"])
PASSES = 25  # enough for any script below, its faults and their retries


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteDirectory]:
    """One site for every example of a property (each applies BatchJobs of its own, which end terminal)."""
    made = init_site(tmp_path_factory.mktemp("prop") / "site", "prop", register=False)
    made = configure(made, {"allowed_queues": {"local": {"max_queued_jobs": 100}}})
    yield made
    made.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scripts=st.lists(SCRIPTS, min_size=1, max_size=3),
    submit_fault=SUBMIT_FAULTS,
    status_failures=st.integers(0, 3),
    lookup_failures=st.integers(0, 2),
    restarts=st.lists(st.booleans(), min_size=PASSES, max_size=PASSES),
    deleted=st.sets(st.integers(0, 2), max_size=1),
)
def test_any_scripted_run_submits_each_batchjob_once_and_ends_it(
    shared_site: SiteDirectory,
    scripts: list[tuple[Step, ...]],
    submit_fault: str | None,
    status_failures: int,
    lookup_failures: int,
    restarts: list[bool],
    deleted: set[int],
) -> None:
    """Whatever the scheduler says, however often it fails and the controller restarts: one allocation at most per
    BatchJob, one batched status call per pass (and one more after each lookup by name of a deleted BatchJob whose
    submission is unresolved), and once its allocation has ended every BatchJob is terminal, or gone if deleted."""
    site, sched = shared_site, FakeScheduler(shared_site.path)
    names = [f"p{uuid.uuid4().hex[:6]}-{i}" for i in range(len(scripts))]
    for name, script in zip(names, scripts, strict=True):
        sched.plan(*script, called=f"-{name}-")
    if submit_fault == "refused":
        sched.refuse("submit", "qsub: Unknown queue")
    elif submit_fault is not None:
        sched.hang("submit", went_through=submit_fault == "hung-after")
    sched.hang("status", times=status_failures)
    sched.hang("find_by_name", times=lookup_failures)
    apply_batchjobs(site, *names)
    try:
        run_passes(site, sched, names, restarts, [names[i] for i in deleted if i < len(names)])
        refused = sched.submits[0].job_name if submit_fault == "refused" else None
        for index, (name, script) in enumerate(zip(names, scripts, strict=True)):
            if not exists(site, name):
                assert index in deleted, f"batchjob/{name} disappeared without being deleted"
                continue
            status = batchjob(site, name).status
            assert status.state in TERMINAL, f"batchjob/{name} is {status.state} after {PASSES} passes: {sched.calls}"
            assert index not in deleted, f"batchjob/{name} was deleted, yet it is kept ({status.state})"
            assert (status.state == B.submit_failed) == (refused is not None and f"-{name}-" in refused), sched.calls
            end = script[-1]
            told = "no longer known" if isinstance(end, Lost) else f"allocation ended: {end.raw_state}"
            assert status.state == B.submit_failed or told in (status.message or ""), status
    finally:  # nothing of this example is left for the next one
        site.store.delete(site.site_id, [("BatchJob", name) for name in names])
        for name in names:
            site.store.remove_batchjob(site.site_id, name)


def run_passes(
    site: SiteDirectory, sched: FakeScheduler, names: list[str], restarts: list[bool], deleted: list[str]
) -> None:
    """One reconciler pass per item of ``restarts`` (a fresh reconciler where it is True, as after a controller
    restart; else the last one, its backoff run out), ``deleted`` deleted after the first; a pass more once every
    BatchJob is terminal or gone. After each: one allocation at most per BatchJob, one status call at most for
    every BatchJob (and one more after each lookup by name)."""
    rec, settled = BatchJobReconciler(site, sched), False
    for i, restart in enumerate(restarts):
        if i == 1 and deleted:
            site.store.delete(site.site_id, [("BatchJob", name) for name in deleted])
        rec = BatchJobReconciler(site, sched) if restart else later(rec)
        status_calls, lookups = len(sched.status_calls), len(sched.lookups)
        rec()
        assert len(sched.status_calls) - status_calls <= 1 + len(sched.lookups) - lookups, sched.calls
        for name in names:
            allocations = [alloc for alloc in sched.allocations.values() if f"-{name}-" in alloc.job_name]
            assert len(allocations) <= 1, f"batchjob/{name} was submitted twice: {sched.calls}"
        if settled:  # every BatchJob was terminal or gone before this pass, which changed nothing
            return
        settled = all(not exists(site, name) or batchjob(site, name).status.state in TERMINAL for name in names)


# ---------------------------------------------------------------- end to end against the real Slurm cluster

HELD_TEMPLATE = "#!/bin/bash\n#SBATCH --hold\n# BatchJob {{ batch_job.name }}: held, it never runs\nsleep 300\n"
QUICK_TEMPLATE = "#!/bin/bash\n# BatchJob {{ batch_job.name }}: ends at once\ntrue\n"
DEADLINE_SEC = 30.0
TIMEOUT_SEC = 1.0  # the adapter's command timeout in these tests


def make_site(root: Path, template: str, max_queued_jobs: int = 10) -> SiteDirectory:
    """A Slurm site (queue ``debug``, project ``none``) whose job template is ``template``."""
    site = init_site(root / "site", f"rec-{uuid.uuid4().hex[:8]}", "slurm")
    settings = yaml.safe_load((site.path / "settings.yml").read_text())
    settings["allowed_queues"] = {"debug": {"max_nodes": 4, "max_walltime": 60, "max_queued_jobs": max_queued_jobs}}
    settings["allowed_projects"] = ["none"]
    settings["sync_period_sec"] = 1
    (site.path / "settings.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (site.path / "job-template.sh").write_text(template)
    site.close()
    return SiteDirectory.load(site.path)


@pytest.fixture
def sites(cluster: None, tmp_path: Path) -> Iterator[list[SiteDirectory]]:
    """The sites a test makes (append them); their Slurm jobs are cancelled and their stores closed after."""
    made: list[SiteDirectory] = []
    yield made
    for site in made:
        cancel_jobs(f"balsam-{site.name}-")
        site.close()


def cancel_jobs(prefix: str) -> None:
    """scancel every live Slurm job whose name starts with ``prefix`` (the real squeue, whatever PATH holds)."""
    squeue, scancel = real("squeue"), real("scancel")
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        out = subprocess.run([squeue, "-h", "-o", "%i|%j"], capture_output=True, text=True, timeout=30).stdout
        ids = [sid for sid, _, name in (line.partition("|") for line in out.splitlines()) if name.startswith(prefix)]
        if ids:
            subprocess.run([scancel, *ids], capture_output=True, timeout=30, check=False)


# the real programs, found before any test puts a fake first on PATH
REAL = {program: shutil.which(program) for program in ("squeue", "sbatch", "scancel")}


def real(program: str) -> str:
    """The real Slurm program's path."""
    found = REAL[program]
    assert found is not None, f"{program} is not on PATH: start the cluster with `bash scripts/slurm-up.sh`"
    return found


def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    """Put a shell script ``name`` first on PATH (a later call with another body replaces it)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    path = os.environ["PATH"]
    if not path.startswith(f"{bindir}{os.pathsep}"):
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{path}")


def unfake(tmp_path: Path, name: str) -> None:
    """Remove the fake ``name``: the real program answers again."""
    (tmp_path / "bin" / name).unlink()


def slurm_ids(job_name: str, states: str = "all") -> list[str]:
    """Ids of the Slurm jobs called ``job_name`` in ``states`` (``all``: finished ones too, for MinJobAge)."""
    argv = [real("squeue"), "-h", "-t", states, "-n", job_name, "-o", "%i"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return proc.stdout.split()


def slurm_state(sched_id: str) -> str | None:
    """Slurm's state of one job, None if it is unknown."""
    argv = [real("squeue"), "-h", "-t", "all", "-j", sched_id, "-o", "%T"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def wait_until(what: str, probe: Any, timeout: float = DEADLINE_SEC) -> Any:
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.1)


def reconciler(site: SiteDirectory) -> BatchJobReconciler:
    """A fresh reconciler (as after a controller restart) over the real Slurm adapter with a 1 s timeout."""
    return BatchJobReconciler(site, SlurmScheduler(site.path, timeout=TIMEOUT_SEC))


def timed_out_submission(
    sites: list[SiteDirectory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: str, name: str
) -> tuple[SiteDirectory, str]:
    """A new site whose batchjob/NAME one pass submitted through an sbatch that then hung; the site and the Slurm
    job name the BatchJob recorded. The fake sbatch stays on PATH."""
    site = make_site(tmp_path, template)
    sites.append(site)
    apply_batchjobs(site, name)
    fake(tmp_path, monkeypatch, "sbatch", f'{shlex.quote(real("sbatch"))} "$@"\nexec sleep 30')
    started = time.monotonic()
    reconciler(site)()
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT_SEC + 4, f"a pass took {elapsed:.1f} s with a hanging sbatch"
    job_name = batchjob(site, name).status.job_name
    assert job_name
    return site, job_name


def test_slurm_a_hung_sbatch_that_went_through_is_adopted_not_submitted_again(
    sites: list[SiteDirectory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, job_name = timed_out_submission(sites, tmp_path, monkeypatch, HELD_TEMPLATE, "hang-s")
    bj = batchjob(site, "hang-s")
    assert (bj.status.state, bj.status.scheduler_id) == (B.pending_submission, None), bj.status
    submitted = condition(bj, "Submitted")
    assert submitted is not None and "sbatch" in submitted.message and "timed out" in submitted.message, submitted
    assert job_name.startswith(f"balsam-{site.name}-hang-s-"), bj.status
    first = slurm_ids(job_name)
    assert len(first) == 1, first

    # the real sbatch answers again; the controller restarts (a fresh reconciler, no memory of the timeout)
    unfake(tmp_path, "sbatch")
    restarted = reconciler(site)
    restarted()
    bj = batchjob(site, "hang-s")
    assert bj.status.state == B.queued, bj.status
    assert slurm_ids(job_name) == first == [bj.status.scheduler_id]
    assert moves(site, "hang-s")[-1] == ("pending_submission", "queued", "Adopted")
    reconciler(site)()
    assert slurm_ids(job_name) == first and batchjob(site, "hang-s").status.state == B.queued


def test_slurm_a_timed_out_submit_whose_allocation_already_ended_is_not_submitted_again(
    sites: list[SiteDirectory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sbatch went through but hung; the allocation ran and ended before the controller looked it up by name:
    squeue still shows it (MinJobAge), so it is adopted."""
    site, job_name = timed_out_submission(sites, tmp_path, monkeypatch, QUICK_TEMPLATE, "quick")
    (first,) = slurm_ids(job_name)
    wait_until("the allocation to complete", lambda: slurm_state(first) == "COMPLETED")

    unfake(tmp_path, "sbatch")
    restarted = reconciler(site)
    restarted()
    ids = slurm_ids(job_name)
    status = batchjob(site, "quick").status
    assert ids == [first], f"the BatchJob got a second allocation: Slurm jobs named {job_name}: {ids} ({status})"
    assert status.scheduler_id == first, status
    reconciler(site)()
    assert batchjob(site, "quick").status.state == B.finished


def test_slurm_status_of_many_batchjobs_is_one_squeue_call_per_pass(
    sites: list[SiteDirectory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 12
    site = make_site(tmp_path, HELD_TEMPLATE, max_queued_jobs=count)
    sites.append(site)
    names = [f"many-{i:02d}" for i in range(count)]
    apply_batchjobs(site, *names)
    log = tmp_path / "squeue.log"
    log.touch()
    fake(
        tmp_path,
        monkeypatch,
        "squeue",
        f'echo "$*" >> {shlex.quote(str(log))}\nexec {shlex.quote(real("squeue"))} "$@"',
    )

    rec = reconciler(site)
    rec()  # submits all of them
    ids = {name: batchjob(site, name).status.scheduler_id or "" for name in names}
    assert all(ids.values()) and len(set(ids.values())) == count, ids
    assert log.read_text() == "", "submitting fresh BatchJobs needs no squeue"
    for _ in range(3):
        log.write_text("")
        rec()
        calls = log.read_text().splitlines()
        assert len(calls) == 1, f"{len(calls)} squeue calls in one pass over {count} BatchJobs: {calls}"
        asked = calls[0].split()[calls[0].split().index("-j") + 1].split(",")
        assert sorted(asked) == sorted(ids.values()), calls
    assert {batchjob(site, n).status.state for n in names} == {"queued"}
