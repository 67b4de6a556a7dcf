"""Lanes: the next Jobs queued on a running Job's resources, started by the process side the moment it ends.

The launcher (the real :class:`~balsamctl.launcher.pilot.Launcher`'s placement and reaping, its store replaced by a
recorder) and the process side (:class:`~balsamctl.launcher.lanes.ProcessLanes` over an in-memory process table) talk
over
two message queues delivered in random order against each other; hypothesis drives the interleavings, the Jobs'
ends, deletions and a stop. Whatever the interleaving: no two Jobs ever run on the same CPU, every Job that ran
was recorded started once and ended once, none recorded that never ran, and a Job taken out of its lane never runs.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balsamctl.launcher.lanes import Assignment, Event, LaneBook, ProcessLanes
from balsamctl.launcher.mpi_mode import LocalExecutor, MpiTaskBuilder
from balsamctl.launcher.nodes import Node
from balsamctl.launcher.pilot import Launcher
from balsamctl.launcher.placement import NodePool, Placement, Request
from balsamctl.launcher.process import CannotStart, Outcome, ProcessGroup, Task
from balsamctl.schemas import JobState
from balsamctl.schemas.objects import AppSpec, Job, JobSpec, Partition
from balsamctl.schemas.settings import LauncherSettings
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import JobRef, Selector
from tests.support.launcher_ops import wait_for
from tests.support.site_ops import advance_to_runnable, app, apply_raws, job


@dataclass(frozen=True)
class Rec:
    id: int


# ---------------------------------------------------------------- the launcher's book


def test_jobs_queue_on_lanes_of_the_same_request_shortest_first_up_to_the_depth() -> None:
    book: LaneBook[Rec] = LaneBook()
    small, big = Request(), Request(node_packing_count=2)
    lanes = [book.open(1, small), book.open(2, small), book.open(3, big)]
    candidates = [(Rec(10), small), (Rec(11), big), (Rec(12), small), (Rec(13), small), (Rec(14), small)]
    candidates.append((Rec(15), small))
    queued, left, looked = book.fill(candidates, depth=2)
    assert [(r.id, lane) for r, lane in queued] == [
        (10, lanes[0]), (11, lanes[2]), (12, lanes[1]), (13, lanes[0]), (14, lanes[1])
    ]  # fmt: skip
    assert (left, looked) == ([5], 6), "the fifth small Job finds no room: both small lanes hold two"
    assert book.waiting == 5
    # the big lane is full too: looking stops there
    no_more_room: tuple[list[tuple[Rec, int]], list[int], int] = ([(Rec(16), lanes[2])], [], 1)
    assert book.fill([(Rec(16), big), (Rec(17), small), (Rec(18), big)], depth=2) == no_more_room


def test_a_lane_hands_its_resources_to_its_next_job_in_order_and_closes_when_empty() -> None:
    book: LaneBook[Rec] = LaneBook()
    lane = book.open(1, Request())
    book.fill([(Rec(2), Request()), (Rec(3), Request())], depth=4)
    assert book.ended(1) == Rec(2)
    assert book.holder[lane] == 2
    assert book.began(2) == Rec(2)
    assert book.withdraw(3) and not book.withdraw(3)
    assert book.ended(2) is None
    assert book.queued == {} and book.holder == {} and book.lane_of == {}


def test_a_handed_over_placement_keeps_its_cpus_and_the_pool_its_accounting() -> None:
    pool = NodePool([Node("n0", (0, 1, 2, 3))])
    first = pool.place(1, Request(threads_per_rank=2, node_packing_count=2))
    assert first is not None
    handed = pool.hand_over(1, 2)
    assert (handed.job_id, handed.shares) == (2, first.shares)
    assert set(pool.placements) == {2} and set(pool.nodes[0].jobs) == {2}
    with pytest.raises(ValueError, match="already placed"):
        pool.hand_over(2, 2)
    pool.release(2)
    assert pool.nodes[0].idle_cpus == [0, 1, 2, 3] and pool.nodes[0].occupancy == 0


# ---------------------------------------------------------------- the launcher and its process side


class Processes(ProcessGroup):
    """An in-memory process table: Tasks start (or fail to), run until the test ends them, and say which ran."""

    def __init__(self, failing: frozenset[int]) -> None:
        super().__init__()
        self.failing = failing
        self.alive: dict[int, Task] = {}
        self.ran: list[int] = []  # job ids, in start order (tried: some fail)
        self.finished: list[int] = []

    def start(self, task: Task) -> None:
        self.ran.append(task.job_id)  # a start that fails is still an attempt the launcher records
        if task.job_id in self.failing:
            raise CannotStart(f"cannot start {task.job_id}", "")
        for other in self.alive.values():
            assert not set(other.cpus) & set(task.cpus), f"{task.job_id} started on CPUs {other.job_id} runs on"
        self.alive[task.job_id] = task

    def end(self, job_id: int) -> None:
        self.alive.pop(job_id)
        self.finished.append(job_id)

    def poll(self) -> list[Outcome]:
        done, self.finished = self.finished, []
        return [Outcome(job_id, f"j{job_id}", 0, "") for job_id in done]

    def kill(self, job_id: int, why: str) -> Outcome | None:
        task = self.alive.pop(job_id, None)
        return None if task is None else Outcome(job_id, task.name, -9, "", why)

    def terminate_all(self, why: str, grace: float) -> list[Outcome]:
        """Every Task not reported yet, as ProcessGroup does: those that ended meanwhile too."""
        ended = [Outcome(job_id, f"j{job_id}", -15, "", why) for job_id in [*self.finished, *self.alive]]
        self.alive.clear()
        self.finished = []
        return ended


@dataclass
class Wire:
    """The executor: two message queues between the launcher and its process side, delivered when told."""

    side: ProcessLanes
    down: deque[tuple[str, Any]] = field(default_factory=deque)  # to the process side
    up: deque[list[Event]] = field(default_factory=deque)  # to the launcher
    killed: set[int] = field(default_factory=set)  # Jobs the launcher asked to stop

    def start(self, batch: Sequence[tuple[str, Assignment]]) -> None:
        if batch:
            self.down.append(("tasks", [assignment for _, assignment in batch]))

    def poll(self) -> list[Event]:
        events = [event for message in self.up for event in message]
        self.up.clear()
        return events

    def wait(self, timeout: float) -> None:
        pass

    def kill(self, job_id: int, why: str) -> None:
        self.killed.add(job_id)
        self.down.append(("kill", (job_id, why)))

    def deliver(self) -> None:
        kind, payload = self.down.popleft()
        if kind == "tasks":
            self.side.add(payload)
        else:
            self.side.kill(*payload)

    def report(self) -> None:
        events = self.side.poll()
        if events:
            self.up.append(events)

    def terminate_all(self, why: str, grace: float) -> list[Event]:
        while self.down:
            self.deliver()
        return self.poll() + self.side.stop(why, grace)


class Recorder:
    """The launcher's store, as far as lanes reach it: deletions asked for, claims handed back."""

    def __init__(self) -> None:
        self.doomed: set[int] = set()
        self.handed_back: list[int] = []

    def deletion_requested(self, _owner: str) -> list[int]:
        return sorted(self.doomed)

    def unclaim(self, _site_id: int, _owner: str, job_ids: list[int]) -> int:
        self.handed_back += job_ids
        return len(job_ids)


def launcher_over(wire: Wire, store: Recorder, nodes: list[Node], depth: int) -> Launcher:
    site = SimpleNamespace(settings=SimpleNamespace(launcher=LauncherSettings()), store=store, site_id=1)

    def build(ref: JobRef, _app: AppSpec, placement: Placement) -> Task:
        return Task(ref.id, ref.name, ("true",), "/w", (), 1, placement.cpu_ids)

    launcher = Launcher(
        cast(SiteDirectory, site), "bj", Partition(job_mode="serial", num_nodes=len(nodes)), 0, nodes,
        time.time() + 3600, "l", wire, build,
    )  # fmt: skip
    launcher.apps["a"] = AppSpec(command="true")
    launcher._lane_depth = lambda: depth  # type: ignore[method-assign]  # drawn, not measured
    return launcher


STEPS = st.sampled_from(["launcher", "deliver", "report", "end", "delete"])


@settings(max_examples=150, deadline=None)
@given(
    jobs=st.integers(1, 40),
    packing=st.sampled_from([1, 2, 4]),
    mixed=st.booleans(),
    depth=st.integers(0, 4),
    failing=st.frozensets(st.integers(0, 39), max_size=4),
    data=st.data(),
)
def test_whatever_the_interleaving_no_cpu_runs_two_jobs_and_every_run_is_recorded_once(
    jobs: int, packing: int, mixed: bool, depth: int, failing: frozenset[int], data: st.DataObject
) -> None:
    """``mixed``: Jobs ask for three different node shares (a lane takes only Jobs that ask like its own)."""
    processes = Processes(failing)
    wire = Wire(ProcessLanes(processes))
    store = Recorder()
    nodes = [Node("n0", (0, 1, 2, 3)), Node("n1", (4, 5, 6, 7))]
    launcher = launcher_over(wire, store, nodes, depth)
    specs = [JobSpec(app="a", workdir="w", node_packing_count=(1, 2, 4)[i % 3] if mixed else packing) for i in range(3)]
    refs = [JobRef(i, f"j{i}", "a", "STAGED_IN", specs[i % 3], 0) for i in range(jobs)]
    launcher.queue = [(ref, Request.of(ref.spec)) for ref in refs]
    most_waiting = 0  # the most Jobs ever queued on lanes
    for _ in range(data.draw(st.integers(0, 150), label="steps")):
        step = data.draw(STEPS)
        if step == "launcher":
            launcher._reap(wire.poll())
            launcher._start_queued()
            most_waiting = max(most_waiting, launcher.lanes.waiting)
        elif step == "deliver" and wire.down:
            wire.deliver()
        elif step == "report":
            wire.report()
        elif step == "end" and processes.alive:
            processes.end(data.draw(st.sampled_from(sorted(processes.alive))))
        elif step == "delete":
            store.doomed.add(data.draw(st.integers(0, jobs - 1)))
            launcher._stop_deleted()
            assert store.doomed & launcher.lanes.queued_on.keys() <= wire.killed, "a deleted Job left in its lane"
    if data.draw(st.booleans(), label="stop now"):
        launcher._reap(wire.terminate_all("stopped", 0))
    else:  # run to the end: every Job runs, or was deleted
        for _ in range(10 * jobs + 10):
            launcher._reap(wire.poll())
            launcher._start_queued()
            most_waiting = max(most_waiting, launcher.lanes.waiting)
            while wire.down:
                wire.deliver()
            for job_id in sorted(processes.alive):
                processes.end(job_id)
            wire.report()
        assert not launcher.queue
        assert not processes.alive and not launcher.pool.placements and not launcher.lanes.queued
        recorded = [start.ref.id for start in launcher.started]
        handed = store.handed_back + launcher.handed_back  # the last ones go with the launcher's next flush
        assert sorted(recorded + handed) == list(range(jobs)), "a Job neither run nor handed back"
        if depth and not mixed and jobs - len(store.doomed) > 2 * packing:  # more Jobs than the nodes hold at once
            assert most_waiting, "no Job was ever queued on a lane"
    ran = processes.ran
    recorded = [start.ref.id for start in launcher.started]
    assert sorted(recorded) == sorted(set(recorded)), "a Job recorded started twice"
    assert sorted(ran) == sorted(recorded), "a Job ran without its start recorded, or was recorded and never ran"
    ended = [result.job_id for result in launcher.results]
    assert sorted(ended) == sorted(set(ended)), "a Job recorded ended twice"
    assert set(recorded) == set(ended), "a run without its end"
    assert not set(store.handed_back + launcher.handed_back) & set(recorded), "a Job taken out of its lane ran"


# ---------------------------------------------------------------- a real launcher, its store and its processes


def test_a_stopped_launcher_hands_back_the_jobs_still_queued_on_its_lanes(tmp_path: Path) -> None:
    """Short Jobs through a launcher with lanes (real processes, real store), stopped midway: every Job that
    started has its end recorded, none is left RUNNING or owned, and those still queued are claimable again."""
    site = init_site(tmp_path / "site", "lanes")
    jobs = [job(f"j{i}", "a", f"w/{i}", node_packing_count=2) for i in range(400)]
    apply_raws(site, app("a", "true"), *jobs)
    advance_to_runnable(site)
    nodes = [Node("n0", (0, 1))]
    launcher = Launcher(
        site, "bj", Partition(job_mode="mpi", num_nodes=1), 0, nodes, time.time() + 3600, "l", LocalExecutor(),
        MpiTaskBuilder(site, nodes),
    )  # fmt: skip
    launcher._lane_depth = lambda: 8  # type: ignore[method-assign]  # as for short Jobs
    crashed: list[BaseException] = []
    runner = threading.Thread(target=lambda: _catching(launcher.run, crashed))
    runner.start()
    finished = Selector("Job", (site.site_id,), states=("JOB_FINISHED",))
    wait_for("50 Jobs finished", lambda: site.store.count_objects(finished) >= 50, timeout=2.5)
    launcher.stop()
    runner.join(timeout=60)
    assert not runner.is_alive() and not crashed, crashed
    queued_at_stop = {ref.id for lane in launcher.lanes.queued.values() for ref in lane} | set(launcher.lanes.next_up)
    assert queued_at_stop, "no Job was queued on a lane when the launcher stopped"
    stored = site.store.list_objects(Selector("Job", (site.site_id,)))
    rows = {o.id: o.manifest.status for o in stored if isinstance(o.manifest, Job)}
    states = {status.state for status in rows.values()}
    assert states <= {JobState.JOB_FINISHED, JobState.RUN_TIMEOUT, JobState.PREPROCESSED}, states
    waiting = {job_id for job_id, status in rows.items() if status.state == JobState.PREPROCESSED}
    assert queued_at_stop <= waiting
    assert all(rows[job_id].attempts == 0 for job_id in waiting), "a queued Job was recorded as run"
    again = site.store.claim(site.site_id, owner="next", batch_job="bj2", filter_tags={}, limit=1000)
    assert {ref.id for ref in again} == waiting, "a Job not run was left claimed by the stopped launcher"
    runs_by_cpu: dict[int, list[tuple[float, float]]] = {}  # as recorded: Started's placement, start and end times
    names = {o.manifest.metadata.name: o.id for o in stored}
    for event in site.store.events((site.site_id,), kind="Job", limit=100_000):
        status = rows[names[event["name"]]]
        if event["reason"] == "Started" and status.state in (JobState.JOB_FINISHED, JobState.RUN_TIMEOUT):
            assert status.start_time is not None and status.end_time is not None
            (cpu,) = event["data"]["placement"]["nodes"][0]["cpu_ids"]
            runs_by_cpu.setdefault(cpu, []).append((status.start_time.timestamp(), status.end_time.timestamp()))
    for cpu, runs in runs_by_cpu.items():
        runs.sort()
        overlaps = [(a, b) for a, b in itertools.pairwise(runs) if b[0] < a[1]]
        assert not overlaps, f"CPU {cpu}: a Job recorded starting before the one before it ended: {overlaps[:3]}"
    site.close()


def _catching(run: Callable[[], None], crashed: list[BaseException]) -> None:
    """Run ``run``, keeping what it raised (a thread's exception is otherwise only a warning)."""
    try:
        run()
    except BaseException as exc:
        crashed.append(exc)
