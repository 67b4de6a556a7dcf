"""The BatchJob reconciler against the real Slurm adapter and the real cluster of ``scripts/slurm-up.sh``.

A hanging or failing scheduler is simulated by a fake ``squeue``/``sbatch`` first on PATH (a shell script that
sleeps, prints nothing, or logs its arguments and execs the real program); the adapter is built with a 1 s timeout.
Allocations come from the site's job template: ``#SBATCH --hold`` keeps most of them pending, so they use no
nodes. Every Slurm job a test causes is named ``balsam-<site>-...`` (one site name per test) and is cancelled after.
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

from balsamctl.controller.batchjobs import BatchJobReconciler
from balsamctl.schedulers import SlurmScheduler
from balsamctl.schedulers.slurm import STATES
from balsamctl.schemas import BatchJob
from balsamctl.schemas.objects import Condition
from balsamctl.site.apply import apply_documents, read_documents
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Selector

HELD_TEMPLATE = "#!/bin/bash\n#SBATCH --hold\n# BatchJob {{ batch_job.name }}: held, it never runs\nsleep 300\n"
SLEEP_TEMPLATE = "#!/bin/bash\n# BatchJob {{ batch_job.name }}\nsleep 300\n"
QUICK_TEMPLATE = "#!/bin/bash\n# BatchJob {{ batch_job.name }}: ends at once\ntrue\n"
DEADLINE_SEC = 30.0
TIMEOUT_SEC = 1.0  # the adapter's command timeout in these tests
BACKOFF_SEC = 1.1  # the reconciler's first backoff is 1 s


# ---------------------------------------------------------------- fixtures and helpers


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


def apply_batchjobs(site: SiteDirectory, *names: str, num_nodes: int = 1) -> None:
    """Apply BatchJobs on queue ``debug``, project ``none``."""
    docs = [
        {
            "apiVersion": "balsam/v1",
            "kind": "BatchJob",
            "metadata": {"name": name},
            "spec": {"num_nodes": num_nodes, "wall_time_min": 5, "queue": "debug", "project": "none"},
        }
        for name in names
    ]
    apply_documents(site, read_documents([("test", yaml.safe_dump_all(docs))]))


def batchjob(site: SiteDirectory, name: str) -> BatchJob:
    """The stored BatchJob ``name``."""
    obj = site.store.get_object(site.site_id, "BatchJob", name).manifest
    assert isinstance(obj, BatchJob)
    return obj


def condition(bj: BatchJob, type_: str) -> Condition | None:
    """The condition of ``type_`` on ``bj``, if any."""
    return next((c for c in bj.status.conditions if c.type == type_), None)


LIVE_STATES = ",".join(state for state, meaning in STATES.items() if meaning != "finished")


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


def timed_pass(rec: BatchJobReconciler) -> float:
    """Run one pass (it must not raise); its duration."""
    t0 = time.monotonic()
    rec()
    return time.monotonic() - t0


def events_of(site: SiteDirectory, name: str) -> list[dict[str, Any]]:
    """The events of batchjob/NAME, oldest first."""
    return site.store.events((site.site_id,), kind="BatchJob", name=name, limit=100)


def hanging_sbatch(went_through: bool) -> str:
    """The body of a fake sbatch that hangs, after submitting through the real sbatch if ``went_through``."""
    hang = "exec sleep 30"
    return f'{shlex.quote(real("sbatch"))} "$@"\n{hang}' if went_through else hang


def timed_out_submission(
    sites: list[SiteDirectory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: str, name: str
) -> tuple[SiteDirectory, str]:
    """A new site whose batchjob/NAME one pass submitted through an sbatch that then hung; the site and the Slurm
    job name the BatchJob recorded. The fake sbatch stays on PATH."""
    site = make_site(tmp_path, template)
    sites.append(site)
    apply_batchjobs(site, name)
    fake(tmp_path, monkeypatch, "sbatch", hanging_sbatch(went_through=True))
    reconciler(site)()
    job_name = batchjob(site, name).status.job_name
    assert job_name
    return site, job_name


# ---------------------------------------------------------------- a hanging squeue


def test_hanging_squeue_becomes_a_condition_and_the_next_pass_recovers(
    sites: list[SiteDirectory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, SLEEP_TEMPLATE)
    sites.append(site)
    apply_batchjobs(site, "hang-q")
    rec = reconciler(site)
    rec()
    queued = batchjob(site, "hang-q").status
    assert queued.state == "queued" and queued.scheduler_id, queued
    wait_until("the allocation to run", lambda: slurm_state(queued.scheduler_id or "") == "RUNNING")

    fake(tmp_path, monkeypatch, "squeue", "exec sleep 30")
    elapsed = timed_pass(rec)  # returns without raising
    assert elapsed < TIMEOUT_SEC + 4, f"a pass took {elapsed:.1f} s with a hanging squeue"
    bj = batchjob(site, "hang-q")
    assert bj.status.state == "queued", "the BatchJob must not move on what the scheduler did not say"
    reachable = condition(bj, "SchedulerReachable")
    assert reachable is not None, bj.status.conditions
    assert reachable.status == "False", reachable
    assert "squeue" in reachable.message and "timed out" in reachable.message, reachable

    unfake(tmp_path, "squeue")
    time.sleep(BACKOFF_SEC)  # the reconciler backs off the scheduler for 1 s after a failure
    rec()
    bj = batchjob(site, "hang-q")
    assert bj.status.state == "running", bj.status
    assert bj.status.nodes and bj.status.start_time, bj.status
    reachable = condition(bj, "SchedulerReachable")
    assert reachable is None or reachable.status == "True", (
        f"the scheduler answered again, yet the BatchJob still says it is unreachable: {reachable}"
    )


# ---------------------------------------------------------------- a hanging sbatch


@pytest.mark.parametrize("went_through", [True, False], ids=["submitted-then-hung", "hung-before-submitting"])
def test_hanging_sbatch_stays_pending_and_never_submits_twice(
    sites: list[SiteDirectory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, went_through: bool
) -> None:
    site = make_site(tmp_path, HELD_TEMPLATE)
    sites.append(site)
    apply_batchjobs(site, "hang-s")
    fake(tmp_path, monkeypatch, "sbatch", hanging_sbatch(went_through))
    rec = reconciler(site)
    elapsed = timed_pass(rec)
    assert elapsed < TIMEOUT_SEC + 4, f"a pass took {elapsed:.1f} s with a hanging sbatch"

    bj = batchjob(site, "hang-s")
    assert bj.status.state == "pending_submission", bj.status  # not submit_failed: it may have gone through
    assert bj.status.scheduler_id is None
    submitted = condition(bj, "Submitted")
    assert submitted is not None and submitted.status != "True", bj.status.conditions
    assert "sbatch" in submitted.message and "timed out" in submitted.message, submitted
    job_name = bj.status.job_name
    assert job_name and job_name.startswith(f"balsam-{site.name}-hang-s-"), bj.status
    first = slurm_ids(job_name)
    assert len(first) == (1 if went_through else 0), first

    # the real sbatch answers again; the controller restarts (a fresh reconciler, no memory of the timeout)
    unfake(tmp_path, "sbatch")
    restarted = reconciler(site)
    restarted()
    bj = batchjob(site, "hang-s")
    assert bj.status.state == "queued", bj.status
    ids = slurm_ids(job_name)
    assert ids == [bj.status.scheduler_id], f"Slurm jobs named {job_name}: {ids}, BatchJob has {bj.status}"
    if went_through:
        assert ids == first
        assert events_of(site, "hang-s")[-1]["reason"] == "Adopted"

    # more passes of both reconcilers change nothing
    time.sleep(BACKOFF_SEC)
    restarted()
    rec()
    assert slurm_ids(job_name) == ids
    assert batchjob(site, "hang-s").status.scheduler_id == ids[0]


def test_timed_out_submit_whose_allocation_already_ended_is_not_submitted_again(
    sites: list[SiteDirectory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sbatch went through but hung; the allocation ran and ended before the controller looked it up by name."""
    site, job_name = timed_out_submission(sites, tmp_path, monkeypatch, QUICK_TEMPLATE, "quick")
    (first,) = slurm_ids(job_name)
    wait_until("the allocation to complete", lambda: slurm_state(first) == "COMPLETED")

    unfake(tmp_path, "sbatch")
    restarted = reconciler(site)
    restarted()
    ids = slurm_ids(job_name)
    status = batchjob(site, "quick").status
    assert ids == [first], (
        f"the BatchJob got a second allocation: Slurm jobs named {job_name}: {ids} (BatchJob: {status.state}, "
        f"{status.scheduler_id}); find_by_name only looks at live jobs, so an ended one is submitted again"
    )
    assert status.scheduler_id == first, status


def test_deleting_a_batchjob_whose_submit_timed_out_cancels_its_allocation(
    sites: list[SiteDirectory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sbatch went through but hung; the user deletes the BatchJob before the controller adopted the allocation."""
    site, job_name = timed_out_submission(sites, tmp_path, monkeypatch, HELD_TEMPLATE, "orphan")
    assert len(slurm_ids(job_name, LIVE_STATES)) == 1

    unfake(tmp_path, "sbatch")
    (result,) = site.store.delete(site.site_id, [("BatchJob", "orphan")])
    assert result.action == "deletion requested"
    restarted = reconciler(site)

    def gone() -> bool:
        restarted()
        return not site.store.list_objects(Selector("BatchJob", (site.site_id,), names=("orphan",)))

    wait_until("the BatchJob to go away", gone)
    live = slurm_ids(job_name, LIVE_STATES)
    assert live == [], f"batchjob/orphan is gone but its allocation {live} is still queued in Slurm"


# ---------------------------------------------------------------- an allocation the scheduler forgot


def test_allocation_unknown_to_the_scheduler_is_finished_with_a_message(
    sites: list[SiteDirectory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, HELD_TEMPLATE)
    sites.append(site)
    apply_batchjobs(site, "forgotten")
    rec = reconciler(site)
    rec()
    assert batchjob(site, "forgotten").status.state == "queued"

    # knows no job at all (as after MinJobAge): Slurm's words for an id it no longer knows
    fake(tmp_path, monkeypatch, "squeue", "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
    rec()
    bj = batchjob(site, "forgotten")
    assert bj.status.state == "finished", bj.status
    assert bj.status.message and "no longer known" in bj.status.message, bj.status
    last = events_of(site, "forgotten")[-1]
    assert (last["from_state"], last["to_state"]) == ("queued", "finished"), last
    assert "no longer known" in (last["message"] or ""), last


# ---------------------------------------------------------------- one squeue call per pass


def test_status_of_many_batchjobs_is_one_squeue_call_per_pass(
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
    assert {batchjob(site, n).status.state for n in names} == {"queued"}
    submit_calls = log.read_text().splitlines()
    assert submit_calls == [], f"submitting fresh BatchJobs needs no squeue: {submit_calls}"

    for _ in range(3):
        log.write_text("")
        rec()
        calls = log.read_text().splitlines()
        assert len(calls) == 1, f"{len(calls)} squeue calls in one pass over {count} BatchJobs: {calls}"
        asked = calls[0].split()[calls[0].split().index("-j") + 1].split(",")
        assert sorted(asked) == sorted(ids.values()), calls
    assert {batchjob(site, n).status.state for n in names} == {"queued"}
