"""Lanes: Jobs queued on the resources of a running Job, started the moment it ends, without a round trip.

A *lane* is one placement (a node's CPUs, GPUs and share of it) running Jobs one after another. The launcher
places a Job on idle resources and opens a lane for it; when Jobs are short (they end faster than the launcher
writes its batches), it also queues the next few Jobs that ask for exactly the same resources on busy lanes. The
process side (a serial-mode worker, or the mpi mode's head node) starts a lane's next Job as soon as the previous
one ends and reports it (:class:`Began`), so a slot never waits while the launcher writes to the store.

Both sides see the same order: the launcher sends a lane's Jobs in order, the process side runs them in that
order and reports every end and start in order. :class:`LaneBook` is the launcher's view (pure bookkeeping);
:class:`ProcessLanes` the process side's, over a :class:`~balsamctl.launcher.process.ProcessGroup`. A queued Job is only
claimed (not RUNNING) until its :class:`Began` arrives; one withdrawn before it began ends with an Outcome without
a return code, and one still queued when the launcher stops is handed back with the rest of its claims.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from balsamctl.launcher.process import CannotStart, Outcome, ProcessGroup, Task


class Identified(Protocol):
    """What the launcher keeps of a Job (its JobRef): anything with the Job's id."""

    @property
    def id(self) -> int:
        """The Job's id."""


R = TypeVar("R", bound=Identified)


@dataclass(frozen=True)
class Began:
    """A queued Task started (or tried to: its Outcome follows if it could not) at ``time`` (epoch seconds)."""

    job_id: int
    time: float


Event = Outcome | Began
Assignment = tuple[Task, int, bool]
"""What a process side is sent for one Task: the Task, its lane, and whether it was queued (its start is then
reported with :class:`Began`; a Task that is not queued opens its lane and is recorded started by the launcher)."""


class LaneBook(Generic[R]):
    """The launcher's view of its lanes: which Job holds each, which wait behind it (``R``: a Job's record)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.lane_of: dict[int, int] = {}  # job id holding a lane's resources (running, or its Began due) -> lane
        self.holder: dict[int, int] = {}  # lane -> the job id holding it
        self.queued_on: dict[int, int] = {}  # job id waiting in a lane -> lane
        self.request: dict[int, Hashable] = {}  # lane -> the resources its Jobs ask for
        self.queued: dict[int, deque[R]] = {}  # lane -> the Jobs waiting, in order
        self.next_up: dict[int, R] = {}  # Jobs that took over a lane when its Job ended: their Began is due

    def open(self, job_id: int, request: Hashable) -> int:
        """A Job placed on idle resources: the lane it opens."""
        lane = next(self._ids)
        self.lane_of[job_id] = lane
        self.holder[lane] = job_id
        self.request[lane] = request
        self.queued[lane] = deque()
        return lane

    def fill(self, candidates: Sequence[tuple[R, Hashable]], depth: int) -> tuple[list[tuple[R, int]], list[int], int]:
        """Queue candidates (record, request; in the site's order) on the lanes of the same request that hold
        fewer than ``depth`` queued Jobs, shortest first. Looking stops once no lane has room: returns the queued
        ones with their lanes, the indexes of the candidates looked at and left, and how many were looked at."""
        room: dict[Hashable, list[tuple[int, int]]] = {}
        for lane, jobs in self.queued.items():
            if len(jobs) < depth:
                room.setdefault(self.request[lane], []).append((len(jobs), lane))
        for lanes in room.values():
            heapq.heapify(lanes)
        open_requests = len(room)
        queued: list[tuple[R, int]] = []
        left: list[int] = []
        looked = 0
        for record, request in candidates:
            if not open_requests:
                break
            looked += 1
            heap = room.get(request)
            if not heap:
                left.append(looked - 1)
                continue
            count, lane = heapq.heappop(heap)
            if count + 1 < depth:
                heapq.heappush(heap, (count + 1, lane))
            elif not heap:
                open_requests -= 1
            self.queued[lane].append(record)
            self.queued_on[record.id] = lane
            queued.append((record, lane))
        return queued, left, looked

    def ended(self, job_id: int) -> R | None:
        """The Job holding a lane ended: the Job the lane starts next, which takes over its resources (its
        :class:`Began` is due), or None when the lane closes."""
        lane = self.lane_of.pop(job_id)
        jobs = self.queued[lane]
        if not jobs:
            del self.queued[lane], self.request[lane], self.holder[lane]
            return None
        following = jobs.popleft()
        del self.queued_on[following.id]
        self.lane_of[following.id] = lane
        self.holder[lane] = following.id
        self.next_up[following.id] = following
        return following

    def began(self, job_id: int) -> R:
        """A Job that took over a lane started: its record."""
        return self.next_up.pop(job_id)

    def withdraw(self, job_id: int) -> bool:
        """Take a Job out of the lane it waits in; False if it waits in none."""
        lane = self.queued_on.pop(job_id, None)
        if lane is None:
            return False
        jobs = self.queued[lane]
        del jobs[next(i for i, record in enumerate(jobs) if record.id == job_id)]
        return True

    @property
    def waiting(self) -> int:
        """How many Jobs wait in lanes."""
        return len(self.queued_on)


class ProcessLanes:
    """The process side: runs each lane's Tasks one after another on a :class:`ProcessGroup`; a Task sent for a
    lane whose Task still runs waits, and starts the moment that one ends (reported with :class:`Began`)."""

    def __init__(self, group: ProcessGroup) -> None:
        self.group = group
        self.lane_of: dict[int, int] = {}  # running job id -> its lane
        self.busy: set[int] = set()  # lanes with a running Task
        self.queued: dict[int, deque[Task]] = {}  # lane -> Tasks waiting
        self.events: list[Event] = []  # what happened since the last poll, in order

    def add(self, assignments: Iterable[Assignment]) -> None:
        """Start each Task now if its lane is free, else queue it behind the lane's running Task."""
        for task, lane, queued in assignments:
            if lane in self.busy:
                self.queued.setdefault(lane, deque()).append(task)
            else:
                self._start(task, lane, queued)

    def poll(self) -> list[Event]:
        """What happened since the last call: Outcomes of the Tasks that ended (or could not start), and the
        starts of the queued Tasks that followed them, in order."""
        for outcome in self.group.poll():
            self._ended(outcome)
        events, self.events = self.events, []
        return events

    def starving(self) -> bool:
        """Whether a running Task has nothing queued behind it: its slot idles once it ends, unless the launcher
        hears of it soon."""
        return any(lane not in self.queued for lane in self.busy)

    def kill(self, job_id: int, why: str) -> None:
        """Stop a running Task (its lane goes on), or take a queued one out; the Outcome comes with the next poll
        (a queued Task's has no return code)."""
        if job_id in self.lane_of:
            outcome = self.group.kill(job_id, why)
            if outcome is not None:
                self._ended(outcome)
            return
        for lane, tasks in self.queued.items():
            for task in tasks:
                if task.job_id == job_id:
                    tasks.remove(task)
                    self.events.append(Outcome(job_id, task.name, None, "", killed=why))
                    if not tasks:
                        del self.queued[lane]
                    return

    def stop(self, why: str, grace: float) -> list[Event]:
        """Stop everything: the events not reported yet, then every Task not reported ended (SIGTERM, SIGKILL after
        ``grace``; one that ended meanwhile, perhaps of the same signal, is reported stopped too); queued Tasks never
        start (the launcher hands their Jobs back)."""
        self.queued.clear()
        events = self.events + self.group.terminate_all(why, grace)
        self.events, self.lane_of, self.busy = [], {}, set()
        return events

    def _start(self, task: Task, lane: int, queued: bool) -> bool:
        """Start one Task on ``lane``; False (its Outcome recorded) if it could not start."""
        if queued:
            self.events.append(Began(task.job_id, time.time()))
        try:
            self.group.start(task)
        except CannotStart as exc:
            self.events.append(Outcome(task.job_id, task.name, None, f"could not start: {exc}", cause=exc.cause))
            return False
        self.lane_of[task.job_id] = lane
        self.busy.add(lane)
        return True

    def _ended(self, outcome: Outcome) -> None:
        """A running Task ended: report it, and start the next one queued on its lane."""
        self.events.append(outcome)
        lane = self.lane_of.pop(outcome.job_id)
        self.busy.discard(lane)
        self._advance(lane)

    def _advance(self, lane: int) -> None:
        """Start the next Task queued on a lane that just became free (the next again if one cannot start)."""
        tasks = self.queued.get(lane)
        while tasks:
            if self._start(tasks.popleft(), lane, True):
                break
        if lane in self.queued and not self.queued[lane]:
            del self.queued[lane]
