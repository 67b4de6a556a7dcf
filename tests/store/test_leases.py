"""A launcher that stops heartbeating loses its Jobs: claimed ones go back; RUNNING ones become RUN_TIMEOUT (a crash
each) once its allocation has ended, here at once: its BatchJob is gone
(tests/controller/test_lost_launchers.py: one that still runs)."""

from __future__ import annotations

import time

from balsamctl.schemas import JobState as S
from balsamctl.store import Heartbeat, RunResult, RunStart, Store
from tests.support.store_ops import acquire, add, app_doc, job_doc, make_runnable, register, state_of, stored_job

LEASE = 0.3


def test_a_silent_launcher_loses_its_jobs_and_a_live_one_keeps_them(store: Store, site_id: int) -> None:
    add(store, site_id, [app_doc(), *(job_doc(f"j{i}") for i in range(6))])
    make_runnable(store, site_id)
    register(store, site_id, "dead")
    register(store, site_id, "alive")
    dead_running = acquire(store, site_id, "dead", limit=2)
    dead_claimed = store.claim(site_id, owner="dead", batch_job="bj", filter_tags={}, limit=1)
    alive_running = acquire(store, site_id, "alive", limit=2)
    time.sleep(LEASE * 2)
    store.heartbeat("alive", Heartbeat(running_jobs=2))  # "dead" stays silent

    swept = store.sweep_lost_launchers(site_id, lease_sec=LEASE)

    assert swept.launchers == ["dead"] and swept.timed_out == 2 and swept.handed_back == 1
    assert {state_of(store, site_id, r.name) for r in dead_running} == {S.RUN_TIMEOUT}
    lost = [stored_job(store, site_id, r.name).status for r in dead_running]
    assert {(s.crashes, s.failures) for s in lost} == {(1, 0)}, "a run lost with its launcher is a crash, not a failure"
    assert state_of(store, site_id, dead_claimed[0].name) == S.PREPROCESSED
    assert {state_of(store, site_id, r.name) for r in alive_running} == {S.RUNNING}
    # the handed-back Job can be claimed by another launcher
    assert [r.name for r in store.claim(site_id, owner="alive", batch_job="bj", filter_tags={}, limit=5)] == [
        dead_claimed[0].name,
        "j5",
    ]
    # a late write of the lost launcher changes nothing
    late = [RunResult(dead_running[0].id, dead_running[0].name, S.RUN_DONE, return_code=0)]
    assert store.record_results(site_id, late) == 0
    assert store.record(site_id, owner="dead", started=[RunStart(dead_claimed[0])]) == set()
    events = [e for e in store.events((site_id,), name=dead_running[0].name) if e["reason"] == "LeaseExpired"]
    assert len(events) == 1 and "dead" in events[0]["message"]
    # sweeping again finds nothing new: the lost launcher is marked ended
    assert store.sweep_lost_launchers(site_id, lease_sec=LEASE).launchers == []
