"""A launcher and its time: it starts only Jobs that fit the time it has left (and tells those that wait for more),
acquires nothing near its end, stops what runs at its end as RUN_TIMEOUT; a run that ends badly while its launcher
stops was ended with the allocation; a Job that fits idle resources is taken at once, whatever is claimed already.

Real site and store (SQLite, the ``site`` of conftest.py), real :class:`~balsamctl.launcher.pilot.Launcher` loop
and processes (``mpi`` mode, one host).
"""

from __future__ import annotations

import time

import pytest

from balsamctl.launcher.pilot import result_of
from balsamctl.launcher.process import Outcome
from balsamctl.schemas import JobState
from balsamctl.site.directory import SiteDirectory
from tests.support.launcher_ops import jobs_of, launcher_on, running_in_thread, wait_for
from tests.support.site_ops import advance_to_runnable, app, apply_raws, job


def test_a_job_longer_than_the_time_left_is_not_started_and_is_told_why(site: SiteDirectory) -> None:
    apply_raws(
        site,
        app("a", "true"),
        job("short", "a", "w/short", wall_time_min=1),
        job("long", "a", "w/long", wall_time_min=5),
        job("unknown", "a", "w/unknown"),  # wall_time_min 0: no limit asked
    )
    advance_to_runnable(site)
    launcher_on(site, cpus=2, seconds_left=150).run()  # 2.5 min: idle after the two it can run
    jobs = jobs_of(site)
    assert jobs["short"].status.state == jobs["unknown"].status.state == JobState.JOB_FINISHED
    long = jobs["long"].status
    assert long.state == JobState.PREPROCESSED and long.attempts == 0
    (told,) = long.conditions
    assert (told.type, told.status, told.reason) == ("Schedulable", "False", "NotEnoughTime")
    assert told.message == "cannot run in batchjob/bj partition 0: needs 5 min of wall time, 2 min left"
    again = site.store.claim(site.site_id, owner="next", batch_job="bj2", filter_tags={}, limit=10)
    assert [ref.name for ref in again] == ["long"], "a Job told so stays claimable by an allocation with the time"


def test_claimed_jobs_that_no_longer_fit_the_time_left_are_handed_back(site: SiteDirectory) -> None:
    jobs = [job(f"j{i}", "a", f"w/{i}", wall_time_min=i % 3, node_packing_count=8) for i in range(9)]
    apply_raws(site, app("a", "true"), *jobs)
    advance_to_runnable(site)
    launcher = launcher_on(site, cpus=1, seconds_left=600)
    launcher.rate = 40.0  # claims 10 ahead: all of them, the longest first (small_first), one placed
    placed, count = launcher._claim()
    assert ([ref.name for ref, _ in placed], count) == (["j2"], 9)
    launcher.deadline = time.time() + 90  # 1.5 min left: the other 2-minute Jobs no longer fit
    launcher._hand_back_late()
    assert [ref.name for ref, _ in launcher.queue] == ["j1", "j4", "j7", "j0", "j3", "j6"]
    again = site.store.claim(site.site_id, owner="next", batch_job="bj2", filter_tags={}, limit=10)
    assert [ref.name for ref in again] == ["j5", "j8"], "handed back, claimable by another launcher"


def test_near_its_end_a_launcher_acquires_nothing_and_stops_what_runs_at_its_end(site: SiteDirectory) -> None:
    apply_raws(site, app("sleepy", "sleep 30"), job("running", "sleepy", "w/running", node_packing_count=2))
    advance_to_runnable(site)
    launcher = launcher_on(site, cpus=2, seconds_left=4)
    launcher.closing_at = time.time() + 1.5
    runner, crashed = running_in_thread(launcher)
    wait_for("the first Job to run", lambda: jobs_of(site)["running"].status.state == JobState.RUNNING)
    wait_for("the launcher's last stretch", lambda: time.time() > launcher.closing_at + 0.2)
    apply_raws(site, app("quick", "true"), job("late", "quick", "w/late", node_packing_count=2), source="late.yaml")
    advance_to_runnable(site)  # runnable, and a CPU is idle: but the launcher acquires nothing any more
    runner.join(timeout=30)
    assert not runner.is_alive() and not crashed, crashed
    jobs = jobs_of(site)
    assert jobs["late"].status.state == JobState.PREPROCESSED and jobs["late"].status.attempts == 0
    stopped = jobs["running"].status
    assert stopped.state == JobState.RUN_TIMEOUT, stopped
    ended = site.store.events((site.site_id,), kind="Job", name="running")[-1]
    assert (ended["to_state"], ended["message"]) == ("RUN_TIMEOUT", "launcher stopped (wall time)")
    assert [ref.name for ref in site.store.claim(site.site_id, owner="x", batch_job="b", filter_tags={}, limit=5)] == [
        "late"
    ], "nothing is left claimed by the stopped launcher"


def test_a_launcher_with_nothing_left_to_run_in_its_last_stretch_ends_at_once(site: SiteDirectory) -> None:
    launcher = launcher_on(site, cpus=1, seconds_left=600)
    launcher.closing_at = time.time()
    t0 = time.monotonic()
    launcher.run()
    assert launcher.settings.idle_ttl_sec == 1.0
    assert time.monotonic() - t0 < 0.5, "it waited out idle_ttl_sec"


def test_a_job_that_fits_idle_resources_starts_while_claimed_ones_wait_for_whole_nodes(site: SiteDirectory) -> None:
    """Two 1-CPU nodes, one busy: the 2-node Jobs claimed ahead cannot start; a 1-node Job applied later takes the
    idle node at once (it never waits behind what the launcher holds)."""
    apply_raws(
        site,
        app("busy", "sleep 3"),
        app("quick", "true"),
        job("busy", "busy", "w/busy"),
        *(job(f"wide-{i}", "quick", f"w/wide-{i}", num_nodes=2) for i in range(3)),
    )
    advance_to_runnable(site)
    launcher = launcher_on(site, cpus=1, seconds_left=600, nodes=2)
    launcher.rate = 12.0  # as for short Jobs: claims 3 ahead, the 2-node ones
    runner, crashed = running_in_thread(launcher)
    wait_for("the busy Job to run", lambda: jobs_of(site)["busy"].status.state == JobState.RUNNING)
    wait_for("the wide Jobs to be claimed", lambda: len(launcher.queue) == 3)
    apply_raws(site, job("narrow", "quick", "w/narrow"), source="narrow.yaml")
    advance_to_runnable(site)
    wait_for("the narrow Job to finish", lambda: jobs_of(site)["narrow"].status.state == JobState.JOB_FINISHED)
    busy = jobs_of(site)["busy"].status
    assert busy.state == JobState.RUNNING, "the narrow Job ran while the busy one held its node"
    launcher.stop()
    runner.join(timeout=30)
    assert not runner.is_alive() and not crashed, crashed


@pytest.mark.parametrize(
    ("return_code", "killed", "stopping", "state"),
    [
        (0, "", "", JobState.RUN_DONE),
        (3, "", "", JobState.RUN_ERROR),
        (-15, "", "", JobState.RUN_ERROR),
        (None, "", "", JobState.RUN_ERROR),  # could not start
        (-15, "stopped: the Job was deleted", "", JobState.RUN_TIMEOUT),
        (-15, "", "launcher stopped (signal)", JobState.RUN_TIMEOUT),  # the scheduler signalled it too
        (143, "", "launcher stopped (signal)", JobState.RUN_TIMEOUT),
        (0, "", "launcher stopped (signal)", JobState.RUN_DONE),  # it ended well: it is done
        (None, "", "launcher stopped (signal)", JobState.RUN_ERROR),
    ],
)
def test_how_a_run_ended_while_its_launcher_stops(
    return_code: int | None, killed: str, stopping: str, state: JobState
) -> None:
    result = result_of(Outcome(1, "j", return_code, "tail", killed), stopping)
    assert result.state == state
    if state == JobState.RUN_TIMEOUT:
        assert result.message == killed or result.message == f"{stopping}: exited with return code {return_code}"
