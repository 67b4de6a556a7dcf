"""The store: pagination, counts and selectors, bulk and single transitions, acquisition, results, deletion."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balsamctl.schemas import BatchJob, InvalidTransition, Job
from balsamctl.schemas import JobState as S
from balsamctl.schemas.manifest import Document
from balsamctl.store import (
    Conflict,
    JobRef,
    RunResult,
    RunStart,
    Selector,
    Store,
    StoredObject,
    Transition,
    sqlite_url,
)
from tests.support.databases import Databases
from tests.support.store_ops import (
    TO_RUNNABLE,
    acquire,
    add,
    app_doc,
    at_once,
    job_doc,
    make_runnable,
    no_problems,
    state_events,
    state_of,
    stored_job,
)


def jobs(store: Store, site_id: int, **sel: Any) -> list[StoredObject]:
    return store.list_objects(Selector("Job", (site_id,), **sel))


def ids_by_name(store: Store, site_id: int) -> dict[str, int]:
    return {o.name: o.id for o in jobs(store, site_id)}


def runnable(store: Store, site_id: int) -> int:
    """How many Jobs wait for a launcher."""
    return store.count_objects(Selector("Job", (site_id,), states=(S.PREPROCESSED.value, S.RESTART_READY.value)))


# ---------------------------------------------------------------- a shared, varied store for read-only queries

LABEL_KEYS = ("exp", "size", "tier")
LABEL_VALUES = ("a", "b", "c")


@pytest.fixture(scope="module")
def varied(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, int]]:
    """Two sites; the first with 300 Jobs of random labels spread over several states. Read-only."""
    path = tmp_path_factory.mktemp("varied")
    with databases.fresh(path) as url:
        store = Store(url)
        sid = store.ensure_site("one", str(path / "one"))
        other = store.ensure_site("two", str(path / "two"))
        rng = random.Random(1234)
        docs = [app_doc()]
        for i in range(300):
            labels = {k: rng.choice(LABEL_VALUES) for k in LABEL_KEYS if rng.random() < 0.7}
            docs.append(job_doc(f"job-{i:03d}", labels=labels))
        add(store, sid, docs)
        add(store, other, [app_doc(), job_doc("job-000", labels={"exp": "a"})])  # same name, other site
        for (src, dst), limit in zip(TO_RUNNABLE, (220, 150, 90), strict=True):
            store.advance(sid, src, dst, reason="test", limit=limit)
        yield store, sid
        store.close()


selectors = st.fixed_dictionaries(
    {
        "labels": st.lists(
            st.tuples(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES)), max_size=3, unique_by=lambda t: t[0]
        ).map(tuple),
        "states": st.lists(st.sampled_from([s.value for s in S]), max_size=3, unique=True).map(tuple),
        "names": st.one_of(
            st.just(()), st.lists(st.integers(0, 320).map(lambda i: f"job-{i:03d}"), max_size=5).map(tuple)
        ),
    }
)


def matches(o: StoredObject, sel: Mapping[str, Any]) -> bool:
    m = o.manifest.metadata
    return (
        all(m.labels.get(k) == v for k, v in sel["labels"])
        and (not sel["states"] or o.manifest.status.state in sel["states"])
        and (not sel["names"] or m.name in sel["names"])
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sel=selectors, page=st.integers(1, 120))
def test_selectors_counts_and_keyset_pagination_agree_with_python(
    varied: tuple[Store, int], sel: dict[str, Any], page: int
) -> None:
    store, sid = varied
    everything = store.list_objects(Selector("Job", (sid,)))
    assert len(everything) == 300, "the other site's Job is never included"
    expected = [o for o in everything if matches(o, sel)]
    selector = Selector("Job", (sid,), **sel)
    # one query
    assert [o.id for o in store.list_objects(selector)] == [o.id for o in expected]
    # keyset pagination: each object exactly once, in id order, pages never over the limit
    seen: list[int] = []
    after = 0
    while True:
        batch = store.list_objects(selector, limit=page, after_id=after)
        assert len(batch) <= page
        if not batch:
            break
        seen += [o.id for o in batch]
        after = batch[-1].id
    assert seen == [o.id for o in expected]
    # counts in SQL
    assert store.count_objects(selector) == len(expected)
    assert store.count_by_state(selector) == dict(Counter(str(o.manifest.status.state) for o in expected))


def test_label_selectors_are_an_and(varied: tuple[Store, int]) -> None:
    store, sid = varied
    both = (("exp", "a"), ("size", "b"))
    got = {o.name for o in store.list_objects(Selector("Job", (sid,), labels=both))}
    exp_a = {o.name for o in store.list_objects(Selector("Job", (sid,), labels=both[:1]))}
    size_b = {o.name for o in store.list_objects(Selector("Job", (sid,), labels=both[1:]))}
    assert got == exp_a & size_b
    assert got, "the fixture's random labels should give some overlap"
    assert exp_a - got, "and some Jobs with only one of the labels"


def test_states_spread_as_advanced(varied: tuple[Store, int]) -> None:
    store, sid = varied
    assert store.count_by_state(Selector("Job", (sid,))) == {
        "CREATED": 80,
        "READY": 70,
        "STAGED_IN": 60,
        "PREPROCESSED": 90,
    }
    assert runnable(store, sid) == 90


def test_pagination_while_objects_are_added(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), *(job_doc(f"j{i}") for i in range(10))])
    sel = Selector("Job", (site_id,))
    first = store.list_objects(sel, limit=4)
    add(store, site_id, [job_doc(f"late{i}") for i in range(3)])
    rest = store.list_objects(sel, after_id=first[-1].id)
    names = [o.name for o in first + rest]
    assert len(names) == len(set(names)) == 13
    assert names[-3:] == ["late0", "late1", "late2"]


# ---------------------------------------------------------------- advance


def test_advance_moves_only_matching_jobs_with_one_event_each(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc("x"), app_doc("y")])
    add(store, site_id, [job_doc("x1", app="x"), job_doc("x2", app="x"), job_doc("y1", app="y")])
    add(store, site_id, [job_doc("x3", app="x", parents=["x1"])])
    moved = store.advance(site_id, S.CREATED, S.READY, reason="NoHook", apps_without_hook=["x"], parents="none")
    assert moved == 2
    assert {n: state_of(store, site_id, n) for n in ("x1", "x2", "x3", "y1")} == {
        "x1": "READY",
        "x2": "READY",
        "x3": "CREATED",
        "y1": "CREATED",
    }
    for name in ("x1", "x2"):
        assert state_events(store, site_id, name)[-1] == ("CREATED", "READY", "NoHook")
        assert [e for e in state_events(store, site_id, name) if e[2] == "NoHook"] == [("CREATED", "READY", "NoHook")]
    for name in ("x3", "y1"):
        assert all(e[2] != "NoHook" for e in state_events(store, site_id, name))
    # nothing left to move: no change, no event
    n_events = len(store.events((site_id,), limit=10_000))
    assert store.advance(site_id, S.CREATED, S.READY, reason="NoHook", apps_without_hook=["x"], parents="none") == 0
    assert len(store.events((site_id,), limit=10_000)) == n_events
    # "some" selects Jobs with parents
    assert store.advance(site_id, S.CREATED, S.AWAITING_PARENTS, reason="Wait", parents="some") == 1
    assert state_of(store, site_id, "x3") == "AWAITING_PARENTS"


def test_advance_refuses_a_transition_outside_the_table(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("j")])
    with pytest.raises(InvalidTransition):
        store.advance(site_id, S.CREATED, S.RUNNING, reason="x")
    assert state_of(store, site_id, "j") == "CREATED"


def test_advance_respects_its_limit(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), *(job_doc(f"j{i}") for i in range(7))])
    assert store.advance(site_id, S.CREATED, S.READY, reason="x", limit=3) == 3
    assert store.count_by_state(Selector("Job", (site_id,))) == {"READY": 3, "CREATED": 4}


def finish(store: Store, site_id: int, job_id: int) -> None:
    path = [S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT]
    chain = [S.CREATED, *path, S.JOB_FINISHED]
    for src, dst in pairwise(chain):
        assert store.transition(site_id, [Transition(job_id, src, dst, "test")]) == 1


def test_parents_all_finished_releases_only_children_whose_parents_all_finished(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("p1"), job_doc("p2"), job_doc("p3")])
    add(
        store,
        site_id,
        [
            job_doc("c-one-done", parents=["p1"]),
            job_doc("c-both-done", parents=["p1", "p2"]),
            job_doc("c-one-pending", parents=["p1", "p3"]),
            job_doc("c-one-failed", parents=["p2", "p3"]),
        ],
    )
    ids = ids_by_name(store, site_id)
    assert store.advance(site_id, S.CREATED, S.AWAITING_PARENTS, reason="Wait", parents="some") == 4
    finish(store, site_id, ids["p1"])
    finish(store, site_id, ids["p2"])
    store.transition(site_id, [Transition(ids["p3"], S.CREATED, S.FAILED, "test")])
    # p3 FAILED must not count as finished
    moved = store.advance(site_id, S.AWAITING_PARENTS, S.READY, reason="ParentsDone", parents="all_finished")
    assert moved == 2
    assert {n: state_of(store, site_id, n) for n in ids if n.startswith("c-")} == {
        "c-one-done": "READY",
        "c-both-done": "READY",
        "c-one-pending": "AWAITING_PARENTS",
        "c-one-failed": "AWAITING_PARENTS",
    }
    failed = {(child, parent) for _, child, parent in store.failed_parent_children(site_id)}
    assert failed == {("c-one-pending", "p3"), ("c-one-failed", "p3")}


# ---------------------------------------------------------------- transition


def test_transition_applies_only_from_its_source_state(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("j")])
    jid = ids_by_name(store, site_id)["j"]
    tr = Transition(jid, S.CREATED, S.READY, "Go", message="ready now", data={"k": 1})
    assert store.transition(site_id, [tr]) == 1
    assert store.transition(site_id, [tr]) == 0
    assert store.transition(site_id, [Transition(jid, S.READY, S.STAGED_IN, "In"), tr]) == 1
    assert state_events(store, site_id, "j")[1:] == [("CREATED", "READY", "Go"), ("READY", "STAGED_IN", "In")]
    (go,) = [e for e in store.events((site_id,), name="j") if e["reason"] == "Go"]
    assert (go["message"], go["data"]) == ("ready now", {"k": 1})
    obj = stored_job(store, site_id, "j")
    assert obj.metadata.resource_version == 3


def test_transition_merges_its_status_patch_into_the_stored_status(store: Store, site_id: int) -> None:
    """Retries patch ``status.failures``: the rest of the status stays, and a second Transition of the same Job
    in one batch builds on the first."""
    add(store, site_id, [app_doc(), job_doc("j"), job_doc("k")])
    ids = ids_by_name(store, site_id)
    batch = [
        Transition(ids["j"], S.CREATED, S.READY, "Go", status={"failures": 1}),
        Transition(ids["j"], S.READY, S.STAGED_IN, "In", status={"conditions": [{"type": "Staged"}]}),
        Transition(ids["k"], S.CREATED, S.READY, "Go", status={"failures": 2}),
    ]
    assert store.transition(site_id, batch) == 3
    j, k = stored_job(store, site_id, "j"), stored_job(store, site_id, "k")
    assert (j.status.state, j.status.failures, [c.type for c in j.status.conditions]) == (S.STAGED_IN, 1, ["Staged"])
    assert (k.status.state, k.status.failures, k.status.conditions) == (S.READY, 2, [])


def test_transition_batches_are_all_or_nothing(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("a"), job_doc("b")])
    ids = ids_by_name(store, site_id)
    good = Transition(ids["a"], S.CREATED, S.READY, "Go")
    bad = Transition(ids["b"], S.CREATED, S.RUNNING, "Skip")
    with pytest.raises(InvalidTransition):
        store.transition(site_id, [good, bad])
    assert state_of(store, site_id, "a") == "CREATED"


def test_concurrent_identical_transitions_apply_exactly_once(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("j")])
    jid = ids_by_name(store, site_id)["j"]
    tr = Transition(jid, S.CREATED, S.READY, "Race")
    done, errors = at_once(store.url, 6, lambda _i, s: s.transition(site_id, [tr]))
    assert errors == []
    assert sorted(done.values()) == [0, 0, 0, 0, 0, 1]
    assert [e for e in state_events(store, site_id, "j") if e[2] == "Race"] == [("CREATED", "READY", "Race")]


# ---------------------------------------------------------------- acquire


def test_concurrent_acquire_claims_every_job_exactly_once(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), *(job_doc(f"j{i:03d}") for i in range(200))])
    make_runnable(store, site_id)
    assert runnable(store, site_id) == 200

    def run(i: int, s: Store) -> list[int]:
        mine: list[int] = []
        while got := acquire(s, site_id, f"launcher-{i}", limit=9):
            mine.extend(ref.id for ref in got)
        return mine

    results, errors = at_once(store.url, 4, run)
    claimed = {f"launcher-{i}": ids for i, ids in results.items()}
    assert not errors
    all_ids = [i for ids in claimed.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)) == 200
    assert set(all_ids) == set(ids_by_name(store, site_id).values())
    owners = {i: owner for owner, ids in claimed.items() for i in ids}
    for o in jobs(store, site_id):
        assert isinstance(o.manifest, Job)
        assert o.manifest.status.state == "RUNNING"
        assert o.manifest.status.attempts == 1
        assert o.manifest.status.batch_job == "bj"
        (ev,) = [e for e in store.events((site_id,), name=o.name) if e["reason"] == "Started"]
        assert ev["message"] == f"launched by {owners[o.id]}"
        assert ev["data"] == {"nodes": ["n0"]}
    assert runnable(store, site_id) == 0


def test_acquire_honours_filter_tags_and_limits(store: Store, site_id: int) -> None:
    docs = [app_doc()]
    for nodes in (1, 2, 4):
        for gpu in ("yes", "no"):
            docs.append(job_doc(f"n{nodes}-{gpu}", labels={"gpu": gpu, "team": "t"}, num_nodes=nodes))
    docs.append(job_doc("n1-long", labels={"gpu": "yes", "team": "t"}, wall_time_min=120))
    add(store, site_id, docs)
    make_runnable(store, site_id)
    offered: list[str] = []

    def accept(ref: JobRef) -> bool:
        offered.append(ref.name)
        return True

    got = acquire(
        store,
        site_id,
        "l1",
        filter_tags={"gpu": "yes", "team": "t"},
        accept=accept,
        max_num_nodes=2,
        max_wall_time_min=60,
    )
    assert sorted(offered) == sorted(r.name for r in got) == ["n1-yes", "n2-yes"]
    assert offered == ["n1-yes", "n2-yes"], "smaller Jobs are offered first"
    assert {o.name for o in jobs(store, site_id, states=("RUNNING",))} == {"n1-yes", "n2-yes"}
    # a launcher that accepts only part of what it is offered claims only that part
    got = acquire(store, site_id, "l2", filter_tags={"gpu": "no"}, limit=1)
    assert [r.name for r in got] == ["n1-no"]
    assert state_of(store, site_id, "n2-no") == "PREPROCESSED"
    # nothing matches: nothing changes
    assert acquire(store, site_id, "l3", filter_tags={"gpu": "maybe"}, accept=accept) == []


def test_claimed_jobs_are_handed_back_and_never_claimed_twice(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("a"), job_doc("b")])
    make_runnable(store, site_id)
    mine = store.claim(site_id, owner="l1", batch_job="bj", filter_tags={}, limit=5)
    assert [r.name for r in mine] == ["a", "b"]
    assert store.claim(site_id, owner="l2", batch_job="bj", filter_tags={}, limit=5) == []
    assert store.record(site_id, owner="l2", started=[RunStart(mine[0])]) == set(), "only the claimer starts a Job"
    assert store.unclaim(site_id, "l1") == 2
    assert [r.name for r in store.claim(site_id, owner="l2", batch_job="bj", filter_tags={}, limit=5)] == ["a", "b"]


# ---------------------------------------------------------------- results


def test_record_results_moves_running_jobs_and_ignores_the_rest(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("ok"), job_doc("err"), job_doc("gone")])
    make_runnable(store, site_id)
    got = {r.name: r for r in acquire(store, site_id, "l")}
    assert set(got) == {"ok", "err", "gone"}
    # "gone" timed out meanwhile: its late result must not overwrite that
    assert store.transition(site_id, [Transition(got["gone"].id, S.RUNNING, S.RUN_TIMEOUT, "Timeout")]) == 1
    n = store.record_results(
        site_id,
        [
            RunResult(got["ok"].id, "ok", S.RUN_DONE, return_code=0),
            RunResult(got["err"].id, "err", S.RUN_ERROR, return_code=3, output_tail="Traceback ...", message="exit 3"),
            RunResult(got["gone"].id, "gone", S.RUN_DONE, return_code=0),
        ],
    )
    ok = stored_job(store, site_id, "ok").status
    err = stored_job(store, site_id, "err").status
    gone = stored_job(store, site_id, "gone").status
    assert (ok.state, ok.return_code) == ("RUN_DONE", 0)
    assert (err.state, err.return_code, err.output_tail, err.message) == ("RUN_ERROR", 3, "Traceback ...", "exit 3")
    assert ok.end_time is not None and ok.start_time is not None and ok.end_time >= ok.start_time
    assert (gone.state, gone.return_code) == ("RUN_TIMEOUT", None)
    assert [e[:2] for e in state_events(store, site_id, "ok") if e[2] == "Ran"] == [("RUNNING", "RUN_DONE")]
    assert [e[:2] for e in state_events(store, site_id, "err") if e[2] == "Ran"] == [("RUNNING", "RUN_ERROR")]
    assert [e for e in state_events(store, site_id, "gone") if e[2] == "Ran"] == [], "no event for an ignored result"
    assert n == 2, "the count is of results applied"


def test_a_finished_run_goes_on_to_job_finished_in_the_same_write_with_every_step_an_event(
    store: Store, site_id: int
) -> None:
    """``finish`` (the launcher's, for Apps without a postprocess hook): RUN_DONE goes on through POSTPROCESSED and
    STAGED_OUT to JOB_FINISHED in the same transaction, one event per step; a failed run is not finished."""
    add(store, site_id, [app_doc(), job_doc("done"), job_doc("failed")])
    make_runnable(store, site_id)
    got = {r.name: r for r in acquire(store, site_id, "l")}
    results = [
        RunResult(got["done"].id, "done", S.RUN_DONE, return_code=0, finish=True),
        RunResult(got["failed"].id, "failed", S.RUN_ERROR, return_code=1, finish=True),
    ]
    assert store.record(site_id, owner="l", results=results) == set()
    done = stored_job(store, site_id, "done").status
    assert (done.state, done.return_code) == ("JOB_FINISHED", 0)
    assert [e[:3] for e in state_events(store, site_id, "done")][-4:] == [
        ("RUNNING", "RUN_DONE", "Ran"),
        ("RUN_DONE", "POSTPROCESSED", "Postprocessed"),
        ("POSTPROCESSED", "STAGED_OUT", "StagedOut"),
        ("STAGED_OUT", "JOB_FINISHED", "Finished"),
    ]
    assert state_of(store, site_id, "failed") == "RUN_ERROR"
    assert [e[:2] for e in state_events(store, site_id, "failed")][-1] == ("RUNNING", "RUN_ERROR")


def test_a_run_started_and_ended_in_one_record_is_stored_whole_with_both_events(store: Store, site_id: int) -> None:
    """Short Jobs start and end between two flushes: one write holds the whole run (start and end times, one more
    attempt, the outcome, the owner released) and its events in order; a Job deleted meanwhile gets neither."""
    add(store, site_id, [app_doc(), job_doc("short"), job_doc("doomed")])
    make_runnable(store, site_id)
    refs = {r.name: r for r in store.claim(site_id, owner="l", batch_job="bj", filter_tags={}, limit=10)}
    store.delete(site_id, [("Job", "doomed")])
    t0 = time.time()
    started = [RunStart(refs[n], t0, where="n0 cpus 0") for n in ("short", "doomed")]
    results = [
        RunResult(refs[n].id, n, S.RUN_ERROR, return_code=2, end_time=t0 + 1, message="x") for n in ("short", "doomed")
    ]
    assert store.record(site_id, owner="l", started=started, results=results) == {refs["short"].id}
    short = stored_job(store, site_id, "short").status
    assert (short.state, short.return_code, short.message, short.attempts) == ("RUN_ERROR", 2, "x", 1)
    assert short.start_time is not None and short.end_time is not None
    assert (short.end_time - short.start_time).total_seconds() == pytest.approx(1.0)
    assert [e[:3] for e in state_events(store, site_id, "short")][-2:] == [
        ("PREPROCESSED", "RUNNING", "Started"),
        ("RUNNING", "RUN_ERROR", "Ran"),
    ]
    assert not [e for e in state_events(store, site_id, "doomed") if e[2] in ("Started", "Ran")]
    assert store.claim(site_id, owner="m", batch_job="bj", filter_tags={}, limit=10) == [], "nothing left to run"


def test_an_sqlite_commit_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    """What a launcher's write acknowledges survives a crash of the machine, not just of the process: WAL with
    ``synchronous=FULL`` (NORMAL may lose the last commits to an OS crash or power loss)."""
    s = Store(sqlite_url(tmp_path / "store.db"))
    try:
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        s.close()


def test_why_a_job_could_not_run_is_taken_off_when_it_starts_and_nothing_else(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("told"), job_doc("other")])
    make_runnable(store, site_id)
    ids = {r.name: r.id for r in store.claim(site_id, owner="l", batch_job="bj", filter_tags={}, limit=10)}
    store.unclaim(site_id, "l")
    why = {"type": "Schedulable", "status": "False", "reason": "DoesNotFit", "message": "needs 16 GPUs per node"}
    mine = {"type": "Reviewed", "status": "True", "reason": "Checked", "message": "by hand"}
    assert store.set_job_condition(site_id, [ids["told"]], mine) == 1
    assert store.set_job_condition(site_id, list(ids.values()), why) == 2
    assert {c.type for c in stored_job(store, site_id, "told").status.conditions} == {"Reviewed", "Schedulable"}
    refs = {r.name: r for r in store.claim(site_id, owner="m", batch_job="bj2", filter_tags={}, limit=10)}
    store.record(site_id, owner="m", started=[RunStart(refs["told"], time.time())])
    assert [c.type for c in stored_job(store, site_id, "told").status.conditions] == ["Reviewed"]
    assert [c.reason for c in stored_job(store, site_id, "other").status.conditions] == ["DoesNotFit"], "not started"


def test_record_results_refuses_an_impossible_outcome(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("j")])
    make_runnable(store, site_id)
    ref, *_ = acquire(store, site_id, "l")
    with pytest.raises(InvalidTransition):
        store.record_results(site_id, [RunResult(ref.id, "j", S.JOB_FINISHED, return_code=0)])
    assert state_of(store, site_id, "j") == "RUNNING"


# ---------------------------------------------------------------- delete


def dump_store(store: Store, site_id: int) -> tuple[Any, ...]:
    objs = [
        o.manifest.model_dump(mode="json")
        for kind in ("App", "Job", "BatchJob")
        for o in store.list_objects(Selector(kind, (site_id,)))
    ]
    return objs, len(store.events((site_id,), limit=1_000_000))


def test_deleting_a_parent_fails_its_waiting_children(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("p"), job_doc("q"), job_doc("other")])
    add(
        store,
        site_id,
        [
            job_doc("c-created", parents=["p"]),
            job_doc("c-waiting", parents=["p"]),
            job_doc("c-two", parents=["p", "q"]),
            job_doc("c-unrelated", parents=["other"]),
        ],
    )
    ids = ids_by_name(store, site_id)
    store.transition(site_id, [Transition(ids["c-waiting"], S.CREATED, S.AWAITING_PARENTS, "Wait")])
    results = store.delete(site_id, [("Job", "p"), ("Job", "q")])
    assert {(r.ref, r.action) for r in results} == {("job/p", "deleted"), ("job/q", "deleted")}
    for name, deleted_parents in (("c-created", ["p"]), ("c-waiting", ["p"]), ("c-two", ["p", "q"])):
        status = stored_job(store, site_id, name).status
        assert status.state == "FAILED"
        assert any(f"parent job/{p} was deleted" in str(status.message) for p in deleted_parents), status.message
        failed = [e for e in state_events(store, site_id, name) if e[1] == "FAILED"]
        assert len(failed) == 1, f"{name}: one event per state change, got {failed}"
        assert failed[0][2] == "ParentDeleted"
    assert state_of(store, site_id, "c-unrelated") == "CREATED"
    assert {o.name for o in jobs(store, site_id)} == {"other", "c-created", "c-waiting", "c-two", "c-unrelated"}


def test_deleting_a_running_job_only_requests_it(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), job_doc("j")])
    make_runnable(store, site_id)
    acquire(store, site_id, "l")
    assert [(r.ref, r.action) for r in store.delete(site_id, [("Job", "j")])] == [("job/j", "deletion requested")]
    obj = stored_job(store, site_id, "j")
    assert obj.status.state == "RUNNING"
    assert obj.metadata.deletion_timestamp is not None
    assert store.deletion_requested("l") == [ids_by_name(store, site_id)["j"]]


def test_deleting_an_app_in_use_is_a_conflict_and_changes_nothing(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), app_doc("spare"), job_doc("j1"), job_doc("j2")])
    before = dump_store(store, site_id)
    with pytest.raises(Conflict, match="app/sim"):
        store.delete(site_id, [("App", "sim")])
    # the whole request is refused, including the parts that were fine on their own
    with pytest.raises(Conflict):
        store.delete(site_id, [("Job", "j1"), ("App", "spare"), ("App", "sim")])
    assert dump_store(store, site_id) == before
    # with its Jobs in the same request, the App goes too
    results = store.delete(site_id, [("App", "sim"), ("Job", "j1"), ("Job", "j2")])
    assert {(r.ref, r.action) for r in results} == {
        ("app/sim", "deleted"),
        ("job/j1", "deleted"),
        ("job/j2", "deleted"),
    }
    assert [(r.ref, r.action) for r in store.delete(site_id, [("Job", "j1")])] == [("job/j1", "not found")]


def test_deleting_a_batchjob_requests_its_deletion(store: Store, site_id: int) -> None:
    raw = {"metadata": {"name": "bj"}, "spec": {"num_nodes": 1, "wall_time_min": 5, "queue": "q", "project": "p"}}
    add(store, site_id, [Document(BatchJob.model_validate(raw), "gen.yaml", 1)])
    t0 = time.time()
    assert [(r.ref, r.action) for r in store.delete(site_id, [("BatchJob", "bj")])] == [
        ("batchjob/bj", "deletion requested")
    ]
    obj = store.get_object(site_id, "BatchJob", "bj").manifest
    assert obj.status.state == "pending_deletion"
    assert obj.metadata.deletion_timestamp is not None
    assert obj.metadata.deletion_timestamp.timestamp() >= t0 - 1
    (ev,) = [e for e in store.events((site_id,), kind="BatchJob") if e["reason"] == "DeletionRequested"]
    assert (ev["from_state"], ev["to_state"]) == ("pending_submission", "pending_deletion")
    before = dump_store(store, site_id)
    again = store.delete(site_id, [("BatchJob", "bj")])
    assert [(r.ref, r.action) for r in again] == [("batchjob/bj", "deletion already requested")]
    assert dump_store(store, site_id) == before


# ---------------------------------------------------------------- scale


@pytest.fixture(scope="module")
def big(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, int]]:
    path = tmp_path_factory.mktemp("big")
    with databases.fresh(path) as url:
        store = Store(url)
        sid = store.ensure_site("big", str(path))
        docs = [app_doc()]
        docs += [job_doc(f"j{i:05d}", labels={"shard": str(i % 10)}) for i in range(20_000)]
        add(store, sid, docs)
        yield store, sid
        store.close()


def test_queries_on_20000_jobs_do_not_scan_everything(big: tuple[Store, int]) -> None:
    store, sid = big
    sel = Selector("Job", (sid,))
    for query in (
        lambda: store.list_objects(sel, limit=100),
        lambda: store.list_objects(sel, limit=100, after_id=19_000),
        lambda: store.count_objects(sel),
        lambda: store.count_objects(Selector("Job", (sid,), labels=(("shard", "3"),))),
        lambda: store.count_by_state(sel),
        lambda: store.get_object(sid, "Job", "j19999"),
    ):
        start = time.perf_counter()
        result = query()
        assert time.perf_counter() - start < 2.0
        assert result
    assert len(store.list_objects(sel, limit=100)) == 100
    assert store.count_objects(sel) == 20_000
    assert store.count_objects(Selector("Job", (sid,), labels=(("shard", "3"),))) == 2_000


def test_a_parent_deleted_while_running_fails_its_waiting_children_once_purged(store: Store, site_id: int) -> None:
    """Deleting a running parent is deferred; when it is purged its children must not lose the dependency."""
    add(store, site_id, [app_doc(), job_doc("p")])
    add(store, site_id, [job_doc("c", parents=["p"])])
    ids = ids_by_name(store, site_id)
    store.transition(site_id, [Transition(ids["c"], S.CREATED, S.AWAITING_PARENTS, "Wait")])
    store.transition(site_id, [Transition(ids["p"], S.CREATED, S.READY, "Go")])
    store.advance(site_id, S.READY, S.STAGED_IN, reason="test")
    store.advance(site_id, S.STAGED_IN, S.PREPROCESSED, reason="test")
    acquire(store, site_id, "l")
    store.delete(site_id, [("Job", "p")])
    store.record_results(site_id, [RunResult(ids["p"], "p", S.RUN_ERROR, return_code=-15)])
    assert store.purge_deleted_jobs(site_id) == 1
    assert {o.name for o in jobs(store, site_id)} == {"c"}
    # the parent never finished: c must not be released as if it had no parents
    store.advance(site_id, S.AWAITING_PARENTS, S.READY, reason="ParentsDone", parents="all_finished")
    status = stored_job(store, site_id, "c").status
    assert status.state == "FAILED"
    assert "job/p" in str(status.message)


def test_sites_with_and_without_a_preferred_id_get_distinct_ids(store: Store, tmp_path: Path) -> None:
    """An explicit id must not collide with ids the store hands out later (a PostgreSQL sequence does not see it)."""
    first = store.ensure_site("first", str(tmp_path / "1"), preferred_id=1)
    pinned = store.ensure_site("pinned", str(tmp_path / "2"), preferred_id=3)
    taken = store.ensure_site("taken", str(tmp_path / "3"), preferred_id=3)
    more = [store.ensure_site(f"more{i}", str(tmp_path / f"m{i}")) for i in range(3)]
    assert (first, pinned) == (1, 3)
    assert len({first, pinned, taken, *more}) == 6
    assert store.ensure_site("pinned", str(tmp_path / "2"), preferred_id=99) == 3, "an existing site keeps its id"


def test_output_with_nul_bytes_is_recorded(store: Store, site_id: int) -> None:
    """A program may print NUL bytes; PostgreSQL text cannot hold them, so they are replaced, not an error."""
    add(store, site_id, [app_doc(), job_doc("j")])
    make_runnable(store, site_id)
    (ref,) = acquire(store, site_id, "l")
    result = RunResult(ref.id, "j", S.RUN_ERROR, return_code=1, output_tail="a\x00b", message="x\x00")
    assert store.record_results(site_id, [result]) == 1
    status = stored_job(store, site_id, "j").status
    assert (status.state, status.output_tail, status.message) == ("RUN_ERROR", "a\ufffdb", "x\ufffd")
    assert store.transition(site_id, [Transition(ref.id, S.RUN_ERROR, S.FAILED, "Hook", message="hook: \x00")]) == 1
    assert stored_job(store, site_id, "j").status.message == "hook: \ufffd"
    assert state_events(store, site_id, "j")[-1] == ("RUN_ERROR", "FAILED", "Hook")


def test_a_site_registered_by_many_stores_at_once_gets_one_id(store: Store, tmp_path: Path) -> None:
    """Launchers and the CLI may register a site on a shared store at the same moment."""
    ids, errors = at_once(store.url, 6, lambda _i, s: s.ensure_site("shared", str(tmp_path)))
    assert errors == []
    assert len(set(ids.values())) == 1
    assert [s["name"] for s in store.sites()] == ["shared"]


def test_the_same_manifests_applied_at_once_create_each_object_once(store: Store, site_id: int) -> None:
    """The controller (GitOps) and a user may apply the same files at the same moment."""
    docs = [app_doc(), *(job_doc(f"j{i}") for i in range(50))]
    actions, errors = at_once(store.url, 4, lambda _i, s: {r.action for r in s.apply(site_id, docs, check=no_problems)})
    assert errors == []
    assert sorted(map(sorted, actions.values())) == [["created"], ["unchanged"], ["unchanged"], ["unchanged"]]
    assert len([e for e in store.events((site_id,), limit=1000) if e["reason"] == "Created"]) == 51


def test_a_start_whose_commit_went_through_unacknowledged_is_confirmed_when_written_again(
    store: Store, site_id: int
) -> None:
    """A launcher that lost its connection during COMMIT writes the same starts again: they are its own RUNNING
    Jobs, confirmed (not taken for deleted and killed), not started twice, and an outcome that came along is
    written."""
    add(store, site_id, [app_doc(), job_doc("j1"), job_doc("j2")])
    make_runnable(store, site_id)
    refs = {ref.name: ref for ref in store.claim(site_id, owner="l1", batch_job="bj", filter_tags={}, limit=2)}
    started = [RunStart(refs["j1"], 1.0), RunStart(refs["j2"], 1.0)]
    assert store.record(site_id, owner="l1", started=started) == {refs["j1"].id, refs["j2"].id}
    done = RunResult(refs["j1"].id, "j1", S.RUN_DONE, return_code=0)
    again = store.record(site_id, owner="l1", started=started, results=[done])
    assert again == {refs["j1"].id, refs["j2"].id}
    assert (state_of(store, site_id, "j1"), state_of(store, site_id, "j2")) == (S.RUN_DONE, S.RUNNING)
    assert [e[2] for e in state_events(store, site_id, "j2")].count("Started") == 1
    assert stored_job(store, site_id, "j2").status.attempts == 1
