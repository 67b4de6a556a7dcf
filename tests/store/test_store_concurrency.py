"""Writers of one database, each with its own Store: four launcher processes run 10,000 Jobs, each exactly once;
launchers and the controller writing one BatchJob's status at once lose nothing of each other's."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from balsamctl.schemas import App, BatchJob, BatchJobState, Job, JobState, Manifest
from balsamctl.schemas.manifest import Document
from balsamctl.schemas.objects import PartitionStatus
from balsamctl.store import RunResult, RunStart, Selector, Store
from tests.support.store_ops import add, at_once

JOBS = 10_000
LAUNCHERS = 4
BATCH = 16
TO_RUNNABLE = [
    (JobState.CREATED, JobState.READY),
    (JobState.READY, JobState.STAGED_IN),
    (JobState.STAGED_IN, JobState.PREPROCESSED),
]


def launcher(url: str, site_id: int, owner: str, barrier: Barrier, out: Queue[Any]) -> None:
    """Claim, start and finish Jobs until none is left; report the ids started and the time spent."""
    try:
        store = Store(url)
        barrier.wait()
        t0 = time.perf_counter()
        started: list[int] = []
        while refs := store.claim(site_id, owner=owner, batch_job="bj", filter_tags={}, limit=BATCH):
            ok = store.record(site_id, owner=owner, started=[RunStart(ref) for ref in refs])
            done = [r for r in refs if r.id in ok]
            store.record_results(site_id, [RunResult(r.id, r.name, JobState.RUN_DONE, return_code=0) for r in done])
            started += [r.id for r in done]
        store.close()
        out.put((owner, started, t0, time.perf_counter(), None))
    except BaseException as exc:  # reported by the test
        out.put((owner, [], 0.0, 0.0, repr(exc)))


def test_four_launcher_processes_run_every_job_exactly_once(store: Store, site_id: int) -> None:
    app = App.model_validate({"metadata": {"name": "noop"}, "spec": {"command": "true"}})
    jobs = (
        Job.model_validate({"metadata": {"name": f"j{i:05d}"}, "spec": {"app": "noop", "workdir": f"w{i}"}})
        for i in range(JOBS)
    )
    manifests: list[Manifest] = [app, *jobs]
    store.apply(site_id, [Document(m, "gen.yaml", 1) for m in manifests], check=lambda _apps, _parents: [])
    for src, dst in TO_RUNNABLE:
        assert store.advance(site_id, src, dst, reason="Test") == JOBS
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(LAUNCHERS), ctx.Queue()
    procs = [
        ctx.Process(target=launcher, args=(store.url, site_id, f"launcher-{i}", barrier, out)) for i in range(LAUNCHERS)
    ]
    for p in procs:
        p.start()
    reports = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [r[4] for r in reports] == [None] * LAUNCHERS, "no launcher failed"
    seconds = max(r[3] for r in reports) - min(r[2] for r in reports)
    started = Counter(job_id for r in reports for job_id in r[1])
    ids = {o.id for o in store.list_objects(Selector("Job", (site_id,)))}
    duplicated = sum(n - 1 for n in started.values())
    lost = len(ids - set(started))
    print(f"\njobs: {JOBS}, launchers: {LAUNCHERS}, duplicated: {duplicated}, lost: {lost}, seconds: {seconds:.1f}")
    assert (duplicated, lost) == (0, 0)
    assert set(started) == ids
    # concurrency was real: the work was shared (one process may still find nothing left, SQLite serialises writers)
    assert sum(1 for r in reports if r[1]) >= 2, "the launchers shared the work"
    assert store.count_by_state(Selector("Job", (site_id,))) == {"RUN_DONE": JOBS}
    owner_of = {job_id: r[0] for r in reports for job_id in r[1]}
    events = store.events((site_id,), kind="Job", limit=10 * JOBS)
    starts = [e for e in events if e["reason"] == "Started"]
    assert Counter(e["object_id"] for e in starts) == Counter(dict.fromkeys(ids, 1)), "one Started event per Job"
    assert all(e["message"] == f"launched by {owner_of[e['object_id']]}" for e in starts)
    assert Counter(e["to_state"] for e in events if e["reason"] == "Ran") == {"RUN_DONE": JOBS}
    assert seconds < 60


ROUNDS = 150


def test_batchjob_status_and_condition_writes_at_once_lose_nothing(store: Store, site_id: int) -> None:
    """Two launchers set conditions on their BatchJob while the controller writes its status (the launchers'
    reports): each write reads the status and writes it back merged, so without a row lock (PostgreSQL's READ
    COMMITTED) one would overwrite what the other wrote in between."""
    raw = {"metadata": {"name": "bj"}, "spec": {"num_nodes": 1, "wall_time_min": 5, "queue": "q", "project": "p"}}
    add(store, site_id, [Document(BatchJob.model_validate(raw), "gen.yaml", 1)])

    def report(n: int) -> PartitionStatus:
        return PartitionStatus(launcher="l", partition=0, job_mode="mpi", nodes=["n0"], running_jobs=n)

    def work(i: int, s: Store) -> None:
        for n in range(ROUNDS):
            if i == 0:  # the controller
                partitions = [report(n).model_dump(mode="json")]
                s.set_batchjob_status(
                    site_id, "bj", src=BatchJobState.pending_submission, status={"partitions": partitions}
                )
            else:  # a launcher
                s.set_batchjob_condition(site_id, "bj", f"Launcher{i}Round{n}", "True", "Ready", f"round {n}")

    _, errors = at_once(store.url, 3, work)

    assert errors == []
    bj = store.get_object(site_id, "BatchJob", "bj").manifest
    assert isinstance(bj, BatchJob)
    assert bj.status.partitions == [report(ROUNDS - 1)], "a condition write put back an older status"
    written = {f"Launcher{i}Round{n}" for i in (1, 2) for n in range(ROUNDS)}
    assert written - {c.type for c in bj.status.conditions} == set(), "a status write dropped conditions"
