"""The launcher's loop, common to both job modes: acquire what fits, start it, reap, write outcomes back.

It claims ahead what could run here, starts what fits its idle resources now and, when Jobs are short, queues the
next ones on the lanes of running Jobs (:mod:`balsamctl.launcher.lanes`); it writes starts and outcomes back in batches,
heartbeats, and stops at its wall time, on SIGTERM, or after ``idle_ttl_sec`` with nothing to do: running Jobs are
then terminated and recorded RUN_TIMEOUT, queued ones handed back. How a Job is started (an MPI launch on the head
node, or a worker on its node) is the job mode's :class:`Executor`. On PostgreSQL an idle launcher is woken by its
site's store when Jobs become runnable (:mod:`balsamctl.store.notify`); ``poll_interval_sec`` stays the safety net.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from balsamctl.launcher.bell import Bell, Watching
from balsamctl.launcher.command import CommandError
from balsamctl.launcher.health import FailureStreaks
from balsamctl.launcher.lanes import Assignment, Began, Event, LaneBook
from balsamctl.launcher.lease import Lease
from balsamctl.launcher.nodes import Node, Share
from balsamctl.launcher.placement import NodePool, Placement, Request, place_in_order, sort_requests
from balsamctl.launcher.process import NODE_LOST, WORKER_UNREACHABLE, Outcome, Task
from balsamctl.schemas import App, JobState
from balsamctl.schemas.conditions import Status, set_condition
from balsamctl.schemas.objects import AppSpec, Condition, Partition
from balsamctl.site.directory import SiteDirectory, SiteError
from balsamctl.store import Heartbeat, JobRef, Listener, RunResult, RunStart, StoreUnavailable, runnable_channel

log = logging.getLogger("balsamctl.launcher")
STOP_GRACE_SEC = 10.0
DELETION_CHECK_SEC = 1.0
POKE_EVERY_SEC = 0.5
FLUSH_EVERY_SEC = 0.1
FLUSH_BATCH = 256
CLAIM_AHEAD_SEC = 0.25  # besides what fits now, claim what the launcher ends in this long (short Jobs: a queue)
CLAIM_MAX = 2000
CLAIM_CHUNK = 128  # per claim: Jobs keep starting between the claims that fill a large target
CLOSING_SHARE = 0.05  # no Job is acquired in the last 5 % of a launcher's time...
CLOSING_MAX_SEC = 30.0  # ...or its last 30 s: one of unknown length would hardly end before the stop
TIME_CHECK_SEC = 10.0  # how often an idle launcher asks which Jobs wait only for more time than it has
LANE_AHEAD_SEC = 0.05  # queue on a busy lane what its Jobs end in this long (short Jobs: never wait for a write)...
LANE_MAX = 16  # ...at most this many
RATE_WINDOW_SEC = 0.1


class Executor(Protocol):
    """Where a job mode runs its Tasks."""

    def start(self, batch: Sequence[tuple[str, Assignment]]) -> None:
        """Start Tasks on their nodes, or queue them on their lanes (:mod:`balsamctl.launcher.lanes`); one that cannot
        start
        is reported by :meth:`poll` (an Outcome without a return code, ``could not start: ...``)."""

    def poll(self) -> list[Event]:
        """What happened, in order: Outcomes of the Tasks that ended (or could not start, or were taken out of
        their lanes) and the starts of queued Tasks."""

    def wait(self, timeout: float) -> None:
        """Block until a Task ends or ``timeout`` passes."""

    def kill(self, job_id: int, why: str) -> None:
        """Stop one Task now, or take it out of its lane; its Outcome comes with a later :meth:`poll`."""

    def terminate_all(self, why: str, grace: float) -> list[Event]:
        """Stop every Task (SIGTERM, then SIGKILL after ``grace``) and start no queued one: every last event."""


TaskBuilder = Callable[[JobRef, AppSpec, Placement], Task]


def result_of(outcome: Outcome, stopping: str = "", where: str = "", finish: bool = False) -> RunResult:
    """The store result of one Outcome: RUN_DONE, RUN_ERROR, or RUN_TIMEOUT when the launcher stopped it. While the
    launcher is ``stopping`` (why: its allocation ends, and the scheduler signals every process in it), a run that
    ended badly was ended with it: RUN_TIMEOUT too, never charged to the Job. A run that never started because of
    the node or site (``outcome.cause``, an infrastructure failure) goes straight back to RESTART_READY, uncharged
    and with no hook run, with a ``StartFailed`` condition saying what happened ``where``. ``finish``: a RUN_DONE
    goes on to JOB_FINISHED (its App has no postprocess hook)."""
    if outcome.cause == NODE_LOST:  # it may have run: a run lost with its worker, a crash (launcher.crash_limit)
        return RunResult(
            outcome.job_id,
            outcome.name,
            JobState.RUN_TIMEOUT,
            message=outcome.tail,
            end_time=outcome.end_time,
            crashed=True,
        )
    if outcome.cause:
        message = f"{outcome.tail} on {where or 'this node'} ({outcome.cause}: not the Job's fault, not charged)"
        failed = Condition(
            type="StartFailed", reason=outcome.cause, message=message, last_transition_time=datetime.now(UTC)
        )
        return RunResult(
            outcome.job_id,
            outcome.name,
            JobState.RESTART_READY,
            message=message,
            end_time=outcome.end_time,
            reason="StartFailed",
            condition=failed,
        )
    if outcome.killed or (stopping and outcome.return_code not in (0, None)):
        state = JobState.RUN_TIMEOUT
        message = outcome.killed or f"{stopping}: exited with return code {outcome.return_code}"
    elif outcome.return_code is None:
        state, message = JobState.RUN_ERROR, outcome.tail
    elif outcome.return_code == 0:
        state, message = JobState.RUN_DONE, ""
    else:
        state, message = JobState.RUN_ERROR, f"exited with return code {outcome.return_code}"
    return RunResult(
        outcome.job_id,
        outcome.name,
        state,
        return_code=outcome.return_code,
        output_tail=outcome.tail or None,
        message=message or None,
        end_time=outcome.end_time,
        finish=finish,
    )


def stopped_for(reason: str) -> str:
    """Why a run was stopped with its launcher (the message of its RUN_TIMEOUT)."""
    return f"launcher stopped ({reason})"


@functools.lru_cache(maxsize=1024)
def _where(shares: tuple[Share, ...]) -> tuple[str, str]:
    """A placement's record (JSON text of :meth:`Placement.describe`, the data of the Job's Started event) and its
    summary, made once per distinct placement: a lane's Jobs, and most Jobs of a busy launcher, run on the same
    few."""
    placement = Placement(0, shares)
    return json.dumps({"placement": placement.describe()}), placement.summary()


class Launcher:
    """One launcher: one partition of one BatchJob's allocation."""

    def __init__(
        self,
        site: SiteDirectory,
        batch_job: str,
        partition: Partition,
        partition_index: int,
        nodes: list[Node],
        deadline: float,
        launcher_id: str,
        executor: Executor,
        build_task: TaskBuilder,
        accepts: Callable[[Request], str | None] = lambda _req: None,
    ) -> None:
        self.site = site
        self.batch_job = batch_job
        self.partition = partition
        self.partition_index = partition_index
        self.pool = NodePool(nodes)
        self.deadline = deadline
        self.id = launcher_id
        self.executor = executor
        self.build_task = build_task
        self.accepts = accepts
        self.settings = site.settings.launcher
        self.results: list[RunResult] = []
        self.apps: dict[str, AppSpec] = {}
        self.stopping = threading.Event()
        self.bell = Bell()  # rung when the site has new runnable Jobs (push: ``listener``) and on stop
        if isinstance(executor, Watching):  # its wait ends when the bell rings
            executor.watch(self.bell.fileno())
        self.listener: Listener | None = None
        self.queue: list[tuple[JobRef, Request]] = []  # claimed, in the policy's order
        self.lanes: LaneBook[JobRef] = LaneBook()
        self.capacity = max(1, sum(len(n.cpu_ids) for n in nodes))
        self.ended = 0  # Jobs ended so far: their rate sizes the claims and the lanes
        self.rate = 0.0  # Jobs ended per second, recently (see _measure_rate)
        self.rate_since = (time.monotonic(), 0)
        self.started: list[RunStart] = []
        self.not_started: list[tuple[JobRef, str]] = []
        self.dropped: set[int] = set()
        self.finishes: set[int] = set()  # running Jobs whose App has no postprocess hook: finished here on success
        self.never: set[int] = set()
        self.why_not: dict[Request, str | None] = {}  # why a request can never run here (None: it can)
        self.closing_at = deadline - min(CLOSING_MAX_SEC, CLOSING_SHARE * max(0.0, deadline - time.time()))
        self.unannounced = False
        self.last_poke = self.last_flush = 0.0
        self.streaks = FailureStreaks(self.settings.infra_failure_limit)
        self.fenced: dict[str, str] = {}  # "node n2" (mpi mode: "the head node (n1)") -> why it was fenced off
        self.conditions_due: dict[str, tuple[Status, str, str]] = {}  # BatchJob conditions for the next flush
        self.handed_back: list[int] = []  # claims to hand back with the next flush (taken out of their lanes)

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        """Claim and run Jobs until the wall time, a signal, or idleness ends the launcher."""
        store, sid = self.site.store, self.site.site_id
        store.register_launcher(
            sid,
            self.id,
            batch_job=self.batch_job,
            partition=self.partition_index,
            job_mode=self.partition.job_mode,
            host=socket.gethostname(),
            pid=os.getpid(),
            nodes=[n.name for n in self.pool.nodes],
        )
        self.listener = store.listen(runnable_channel(sid))
        if self.listener is not None:
            self.listener.start(self.bell.ring, "push")
        try:
            reason = self._loop(Lease(store, self.id, self.settings.lease_sec))
        finally:
            if self.listener is not None:
                self.listener.close()
        log.info("launcher %s stopping (%s) with %d running Job(s)", self.id, reason, len(self.pool.placements))
        self._reap(self.executor.terminate_all(stopped_for(reason), STOP_GRACE_SEC))
        try:
            self._flush(force=True)
            store.unclaim(sid, self.id)
            store.heartbeat(self.id, self.status(), ended=True)
        except StoreUnavailable as exc:
            log.error(
                "launcher %s: could not record its end (%s): its lease runs out and the controller hands its Jobs on "
                "once the allocation has ended",
                self.id,
                _first_line(exc),
            )

    def _loop(self, lease: Lease) -> str:
        """The main loop, until something ends the launcher; why it ends."""
        idle_since = time.monotonic()
        last_deletion_check = last_claim = last_time_check = 0.0
        found_work = True
        pushed = False  # the store said that the site has new runnable Jobs: claim without waiting for the poll
        while True:
            now = time.monotonic()
            lost = lease.keep(self.status)  # first: a launcher that slept (SIGSTOP, a hung node) starts nothing
            if lost:
                return lost
            if self.stopping.is_set():
                return "signal"
            if time.time() >= self.deadline:
                return "wall time"
            self._reap(self.executor.poll())
            self._measure_rate()
            try:
                if (self.pool.placements or self.queue) and now - last_deletion_check >= DELETION_CHECK_SEC:
                    self._stop_deleted()
                    self._hand_back_late()
                    last_deletion_check = now
                closing = time.time() >= self.closing_at
                started = self._start_queued()  # first: what is already claimed need not wait for the store
                if (
                    not closing
                    and self.pool.nodes
                    and (self.pool.has_idle() or len(self.queue) < self._claim_ahead() // 2)
                    and (found_work or pushed or now - last_claim >= self.settings.poll_interval_sec)
                ):
                    placed, claimed = self._claim()
                    found_work, last_claim, pushed = claimed > 0, now, False
                    started += self._start_queued(placed)
                    if not claimed and not self.pool.placements and now - last_time_check >= TIME_CHECK_SEC:
                        self._tell_too_long()
                        last_time_check = now
                self._flush()
                if (closing or not self.pool.nodes) and self.queue:
                    self._hand_back_late(every=True)
            except StoreUnavailable as exc:  # kept in memory and written when the store answers again, or fenced
                log.warning("launcher %s: the store failed (%s); trying again", self.id, _first_line(exc))
                started = 0
            if not self.pool.nodes and not self.pool.placements:
                return "no usable node"
            if self.pool.placements or self.queue:
                idle_since = now
            elif time.time() >= self.closing_at:
                return "wall time: nothing more fits"
            elif now - idle_since >= self.settings.idle_ttl_sec:
                return "idle"
            if not started:
                pending = self.started or self.results
                pushed = self._wait(FLUSH_EVERY_SEC if pending else self.settings.poll_interval_sec) or pushed

    def _wait(self, timeout: float) -> bool:
        """Until a Task ends, the bell rings (the executor watches it) or ``timeout`` passes; whether the bell rang
        since the last wait (silent again before the claim that follows: a Job made runnable after it rings
        again)."""
        self.executor.wait(timeout)
        return self.bell.answer()

    def stop(self) -> None:
        """Ask the loop to stop (signal handlers call this)."""
        self.stopping.set()
        self.bell.ring()

    def status(self) -> Heartbeat:
        """What the launcher reports in its heartbeat."""
        return Heartbeat(
            job_mode=self.partition.job_mode,
            nodes=tuple(n.name for n in self.pool.nodes),
            running_jobs=len(self.pool.placements),
            claimed_jobs=len(self.queue) + self.lanes.waiting,
            occupancy=self.pool.occupancy(),
        )

    # ------------------------------------------------------------------ claim and start
    def _claim_ahead(self) -> int:
        """How many claimed Jobs to hold besides those that fit now: what the launcher ends in CLAIM_AHEAD_SEC (short
        Jobs: a queue of hundreds, each started the moment a slot frees; none for long Jobs, which other launchers
        with idle nodes may then take), at most CLAIM_MAX."""
        return min(CLAIM_MAX, int(self.rate * CLAIM_AHEAD_SEC))

    def _claim(self) -> tuple[list[tuple[JobRef, Placement]], int]:
        """Claim, in the site's order, the Jobs that fit the idle resources now (placed at once) and up to
        :meth:`_claim_ahead` more for the queue; returns the placed ones and how many came in all."""
        unfit: dict[str, list[int]] = {}
        placed: list[tuple[JobRef, Placement]] = []
        waiting: list[tuple[JobRef, Request, int]] = []
        room = max(0, self._claim_ahead() - len(self.queue))

        def take(ref: JobRef) -> bool:  # called for each candidate, in order, within the claim's transaction
            req = Request.of(ref.spec)
            if req not in self.why_not:  # Jobs mostly ask alike: asked once per distinct request
                self.why_not[req] = self.accepts(req) or self.pool.why_never_fits(req)
            why = self.why_not[req]
            if why is not None:
                unfit.setdefault(why, []).append(ref.id)
                return False
            placement = self.pool.place(ref.id, req) if self.pool.has_idle() else None
            if placement is not None:
                placed.append((ref, placement))
            elif len(waiting) < room:
                waiting.append((ref, req, ref.spec.wall_time_min))
            else:
                return False
            return True

        idle_cpus = sum(len(n.idle_cpus) for n in self.pool.nodes)
        try:
            claimed = self.site.store.claim(
                self.site.site_id,
                owner=self.id,
                batch_job=self.batch_job,
                filter_tags=self.partition.filter_tags,
                limit=max(1, min(CLAIM_CHUNK, idle_cpus + room)),
                accept=take,
                order=self.settings.policy,
                max_wall_time_min=self._minutes_left(),
                exclude=self.never,
            )
        except BaseException:
            for ref, _ in placed:  # nothing was claimed: the tentative placements go
                self.pool.release(ref.id)
            raise
        # every Job ``take`` accepted is claimed: placed now, or waiting
        for why, ids in unfit.items():  # say once why, and never read these Jobs again
            self._tell(ids, "DoesNotFit", why)
        if waiting:
            queued = [(ref, req, ref.spec.wall_time_min) for ref, req in self.queue]
            self.queue = [(ref, req) for ref, req, _ in sort_requests(queued + waiting, self.settings.policy)]
        return placed, len(claimed)

    def _minutes_left(self) -> float:
        """How long this launcher runs on, in minutes: a Job that asks for more is not started here."""
        return (self.deadline - time.time()) / 60

    def _tell(self, ids: Sequence[int], reason: str, why: str) -> None:
        """Record on these Jobs why this launcher will never run them, and never read them again."""
        self.never.update(ids)
        message = f"cannot run in batchjob/{self.batch_job} partition {self.partition_index}: {why}"
        condition = set_condition([], "Schedulable", "False", reason, message)[0]
        self.site.store.set_job_condition(self.site.site_id, ids, condition)

    def _tell_too_long(self) -> None:
        """Tell the Jobs that wait here only for more time than this launcher has left (they never spin silently)."""
        left = self._minutes_left()
        waits = self.site.store.claimable_wall_times(
            self.site.site_id, self.partition.filter_tags, longer_than=left, exclude=self.never
        )
        by_need: dict[int, list[int]] = {}
        for job_id, minutes in waits:
            by_need.setdefault(minutes, []).append(job_id)
        for minutes, ids in by_need.items():
            self._tell(ids, "NotEnoughTime", f"needs {minutes} min of wall time, {left:.0f} min left")

    def _hand_back_late(self, every: bool = False) -> None:
        """Hand back the claimed Jobs not started that no longer fit the time left (``every``: all of them, as the
        launcher acquires nothing more near its end)."""
        left = self._minutes_left()
        late = [ref.id for ref, _ in self.queue if every or ref.spec.wall_time_min > left]
        if late:
            gone = set(late)
            self.queue = [(ref, req) for ref, req in self.queue if ref.id not in gone]
            self.site.store.unclaim(self.site.site_id, self.id, late)

    def _start_queued(self, placed: Sequence[tuple[JobRef, Placement]] = ()) -> int:
        """Start ``placed`` (claimed and placed just now) and what of the queue fits now, in the site's order; when
        Jobs are short, queue the next ones on the lanes of running Jobs that ask for the same resources. The starts
        are recorded with the next flush."""
        if not self.queue and not placed:
            return 0
        batch: list[tuple[str, Assignment]] = []
        fresh: list[tuple[JobRef, Placement]] = []
        planned = list(placed)
        if self.queue and self.pool.has_idle():
            more, self.queue = place_in_order(self.pool, self.queue)  # the queue is kept in the policy's order
            planned += more
        later: list[tuple[JobRef, Request]] = []  # their App could not be read from the store: next turn
        for ref, placement in planned:
            try:
                task = self._task(ref, placement)
            except StoreUnavailable:
                task = None
                later.append((ref, Request.of(ref.spec)))
            if task is None:
                self.pool.release(ref.id)
                continue
            lane = self.lanes.open(ref.id, Request.of(ref.spec))
            batch.append((placement.hosts[0], (task, lane, False)))
            fresh.append((ref, placement))
        depth = self._lane_depth() if self.queue and not self.fenced else 0  # a degraded launcher fills no lane
        if depth:
            queued, left, looked = self.lanes.fill(self.queue, depth)
            if queued:
                self.queue = [self.queue[i] for i in left] + self.queue[looked:]
            for ref, lane in queued:
                placement = self.pool.placements[self.lanes.holder[lane]]
                try:
                    task = self._task(ref, placement)
                except StoreUnavailable:
                    task = None
                    later.append((ref, Request.of(ref.spec)))
                if task is None:
                    self.lanes.withdraw(ref.id)
                    continue
                batch.append((placement.hosts[0], (task, lane, True)))
        self.queue = later + self.queue  # first again: they came first in the site's order
        if batch:
            self.executor.start(batch)  # one message per node; what cannot start comes back as an outcome
        at = time.time()  # started now (the queued ones: when their Began comes)
        for ref, placement in fresh:
            self._record_start(ref, placement, at)
        return len(batch)

    def _lane_depth(self) -> int:
        """How many Jobs to queue per lane: what a lane ends in LANE_AHEAD_SEC (at most LANE_MAX; none for Jobs
        longer than that, which gain nothing from it and could run sooner elsewhere)."""
        return min(LANE_MAX, int(self.rate * LANE_AHEAD_SEC / max(1, len(self.pool.placements))))

    def _measure_rate(self) -> None:
        """Update :attr:`rate` once per window (RATE_WINDOW_SEC, or less once a slot's worth of Jobs ended, to know
        short Jobs for what they are from the start): the mean of the last window's rate and the one before, so it
        follows a change of Job mix within a second. The first window opens when the first Job ends."""
        now = time.monotonic()
        since, ended = self.rate_since
        if self.ended == 0:
            self.rate_since = (now, 0)
            return
        window = now - since
        if window >= RATE_WINDOW_SEC or (window >= RATE_WINDOW_SEC / 5 and self.ended - ended >= self.capacity):
            recent = (self.ended - ended) / window
            self.rate = recent if self.rate == 0 else (self.rate + recent) / 2
            self.rate_since = (now, self.ended)

    def _task(self, ref: JobRef, placement: Placement) -> Task | None:
        """The Task of a Job placed so; None (the Job recorded as not started) if its command cannot be built."""
        try:
            return self.build_task(ref, self._app(ref.app), placement)
        except (CommandError, SiteError) as exc:
            self.not_started.append((ref, f"could not start: {exc}"))
            return None

    def _record_start(self, ref: JobRef, placement: Placement, at: float) -> None:
        """Note a Job's start for the next flush."""
        data, summary = _where(placement.shares)
        self.started.append(RunStart(ref, at, data, summary))
        if self._app(ref.app).postprocess is None:
            self.finishes.add(ref.id)

    def _app(self, name: str) -> AppSpec:
        if name not in self.apps:
            obj = self.site.store.get_object(self.site.site_id, "App", name).manifest
            assert isinstance(obj, App)
            self.apps[name] = obj.spec
        return self.apps[name]

    # ------------------------------------------------------------------ finish
    def _reap(self, events: list[Event]) -> None:
        """Take in what the executor reports: a queued Job's start, or a Job's end (its lane's next Job then takes
        over its resources)."""
        stopping = stopped_for("signal") if self.stopping.is_set() else ""
        for event in events:
            if isinstance(event, Began):
                self._record_start(self.lanes.began(event.job_id), self.pool.placements[event.job_id], event.time)
                continue
            job_id = event.job_id
            if job_id not in self.pool.placements:
                if self.lanes.withdraw(job_id):  # taken out of its lane (deleted, fenced) before it started
                    self.handed_back.append(job_id)
                continue  # else already released (a late report of a Job stopped here)
            node = self.pool.placements[job_id].hosts[0]
            following = self.lanes.ended(job_id)
            if following is None:
                self.pool.release(job_id)
            else:
                self.pool.hand_over(job_id, following.id)
            self.ended += 1
            finish = job_id in self.finishes
            self.finishes.discard(job_id)
            if job_id in self.dropped:
                self.dropped.discard(job_id)
            else:
                self.results.append(result_of(event, stopping, node, finish))
            if event.cause in (NODE_LOST, WORKER_UNREACHABLE):
                self._fence(node, event, "as its worker was lost")
            elif event.cause:
                self._start_failed(node, event)
            elif event.return_code is not None:
                self.streaks.ran(self._place(node))

    def _place(self, node: str) -> str:
        """Where a start happens, for black-hole protection: a serial-mode Job's own node; in mpi mode the head node,
        which starts every Job (the whole launcher)."""
        return node if self.partition.job_mode == "serial" else "the head node"

    def _start_failed(self, node: str, outcome: Outcome) -> None:
        """An infrastructure failure on ``node``: fence the node off after ``infra_failure_limit`` in a row (in mpi
        mode, every node: the launcher drains and ends)."""
        if self.streaks.failed(self._place(node)):
            self._fence(node, outcome, f"after {self.streaks.limit} infrastructure failure(s) in a row, the last")

    def _fence(self, node: str, outcome: Outcome, why: str) -> None:
        """Place nothing more on ``node`` (in mpi mode, where every Job starts from the head node: on any node, so
        the launcher drains and ends), take out what waits in its lanes, and say so on the BatchJob
        (``NodesHealthy=False``, naming every node fenced and why, with the next flush)."""
        if not any(n.name == node for n in self.pool.nodes):
            return  # fenced already
        place = self._place(node)
        names = [node] if place == node else [n.name for n in self.pool.nodes]
        for name in names:
            self.pool.fence(name)
        label = f"node {node}" if place == node else f"{place} ({node})"
        self.fenced[label] = f"{why}: {outcome.tail} ({outcome.cause})"
        self.why_not.clear()  # what fits was worked out for the nodes it had
        gone = set(names)
        for job_id, lane in list(self.lanes.queued_on.items()):  # they would start on a fenced node
            if self.pool.placements[self.lanes.holder[lane]].hosts[0] in gone:
                self.executor.kill(job_id, "taken out of its lane: its node was fenced")
        where = f"launcher {self.id} (partition {self.partition_index})"
        said = "; ".join(f"{name} fenced {what}" for name, what in self.fenced.items())
        if self.pool.nodes:
            reason = "NodeFenced"
            message = f"{where}: {said}; still running on {', '.join(n.name for n in self.pool.nodes)}"
        else:
            reason, message = "NoUsableNode", f"{where}: {said}; no usable node left: drains and ends"
        log.error("launcher %s: %s", self.id, message)
        self.conditions_due["NodesHealthy"] = ("False", reason, message)

    def _flush(self, force: bool = False) -> None:
        """Write the starts and outcomes so far in one transaction (every FLUSH_EVERY_SEC, or now)."""
        self._say_conditions()
        if self.handed_back:
            self.site.store.unclaim(self.site.site_id, self.id, self.handed_back)
            self.handed_back = []
        pending = len(self.started) + len(self.results) + len(self.not_started)
        if not pending or (
            not force and pending < FLUSH_BATCH and time.monotonic() - self.last_flush < FLUSH_EVERY_SEC
        ):
            self._announce()
            return
        # a Job that could not start still has to pass through RUNNING to record its RUN_ERROR
        at = time.time()
        self.started += [RunStart(ref, at) for ref, _ in self.not_started]
        self.results += [result_of(Outcome(ref.id, ref.name, None, why)) for ref, why in self.not_started]
        self.not_started = []
        started_ids = {s.ref.id for s in self.started}
        confirmed = self.site.store.record(self.site.site_id, owner=self.id, started=self.started, results=self.results)
        for job_id in started_ids - confirmed:  # its deletion was requested before it could be recorded
            self.dropped.add(job_id)
            self.executor.kill(job_id, "stopped: the Job was deleted")
        self.unannounced = self.unannounced or bool(self.results)
        self.started, self.results = [], []
        self.last_flush = time.monotonic()
        self._announce()

    def _say_conditions(self) -> None:
        """Write the BatchJob conditions due (one by one: each is gone once written)."""
        while self.conditions_due:
            type_, (status, reason, message) = next(iter(self.conditions_due.items()))
            self.site.store.set_batchjob_condition(self.site.site_id, self.batch_job, type_, status, reason, message)
            del self.conditions_due[type_]

    def _announce(self) -> None:
        """Wake the controller (at most every POKE_EVERY_SEC) so it moves the ended Jobs on (hooks, retries, and
        the children of those finished here)."""
        if self.unannounced and time.monotonic() - self.last_poke >= POKE_EVERY_SEC:
            self.site.poke()
            self.unannounced, self.last_poke = False, time.monotonic()

    def _stop_deleted(self) -> None:
        """Stop the Jobs whose deletion was requested; hand back the claimed ones not started yet."""
        doomed = set(self.site.store.deletion_requested(self.id))
        if not doomed:
            return
        queued = [ref.id for ref, _ in self.queue if ref.id in doomed]
        if queued:
            self.queue = [(ref, req) for ref, req in self.queue if ref.id not in doomed]
            self.site.store.unclaim(self.site.site_id, self.id, queued)
        for job_id in doomed & (self.pool.placements.keys() | self.lanes.queued_on.keys()):
            self.executor.kill(job_id, "stopped: the Job was deleted")  # running, or waiting in a lane


def _first_line(exc: BaseException) -> str:
    """The first line of an error (a driver's error carries the whole statement after it)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
