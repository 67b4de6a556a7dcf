"""The launcher's loop, common to both job modes: acquire what fits, start it, reap, write outcomes back.

It acquires only what fits its idle resources now, writes outcomes back in batches, heartbeats, and stops at its
wall time, on SIGTERM, or after ``idle_ttl_sec`` with nothing to do: running Jobs are then terminated and
recorded RUN_TIMEOUT. How a Job is started (an MPI launch on the head node, or a worker on its node) is the
job mode's :class:`Executor`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from balsamctl.site import Site, SiteError
from launcher.command import CommandError
from launcher.nodes import Node
from launcher.placement import NodePool, Placement, Request, choose
from launcher.process import Outcome, Task
from schemas import App, JobState
from schemas.objects import AppSpec, Partition
from store import JobRef

log = logging.getLogger("balsamctl.launcher")
HEARTBEAT_SEC = 10.0
STOP_GRACE_SEC = 10.0
DELETION_CHECK_SEC = 1.0
POKE_EVERY_SEC = 0.5
MAX_CANDIDATES = 200


class Executor(Protocol):
    """Where a job mode runs its Tasks."""

    def start(self, task: Task, placement: Placement) -> None:
        """Start one Task on its placement's nodes (raises OSError if it cannot)."""

    def poll(self) -> list[Outcome]:
        """Outcomes of the Tasks that ended."""

    def wait(self, timeout: float) -> None:
        """Block until a Task ends or ``timeout`` passes."""

    def kill(self, job_id: int, why: str) -> Outcome | None:
        """Stop one Task now."""

    def terminate_all(self, why: str, grace: float) -> list[Outcome]:
        """Stop every Task: SIGTERM, then SIGKILL after ``grace``."""


TaskBuilder = Callable[[JobRef, AppSpec, Placement], Task]
Chooser = Callable[[list[JobRef]], list[tuple[JobRef, Mapping[str, Any]]]]


def result_of(outcome: Outcome) -> dict[str, Any]:
    """The store result of one Outcome: RUN_DONE, RUN_ERROR, or RUN_TIMEOUT when the launcher stopped it."""
    if outcome.killed:
        state, message = JobState.RUN_TIMEOUT, outcome.killed
    elif outcome.return_code is None:
        state, message = JobState.RUN_ERROR, outcome.tail
    elif outcome.return_code == 0:
        state, message = JobState.RUN_DONE, ""
    else:
        state, message = JobState.RUN_ERROR, f"exited with return code {outcome.return_code}"
    return {
        "job_id": outcome.job_id,
        "name": outcome.name,
        "state": state,
        "return_code": outcome.return_code,
        "output_tail": outcome.tail or None,
        "message": message or None,
    }


class Launcher:
    """One launcher: one partition of one BatchJob's allocation."""

    def __init__(
        self,
        site: Site,
        batch_job: str,
        partition: Partition,
        partition_index: int,
        nodes: list[Node],
        deadline: float,
        launcher_id: str,
        executor: Executor,
        build_task: TaskBuilder,
        accepts: Callable[[Request], bool] = lambda _req: True,
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
        self.results: list[dict[str, Any]] = []
        self.apps: dict[str, AppSpec] = {}
        self.stopping = threading.Event()
        self.unannounced = False
        self.last_poke = 0.0

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        """Acquire and run Jobs until the wall time, a signal, or idleness ends the launcher."""
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
        idle_since = time.monotonic()
        last_beat = last_deletion_check = 0.0
        reason = "idle"
        while True:
            now = time.monotonic()
            if self.stopping.is_set():
                reason = "signal"
                break
            if time.time() >= self.deadline:
                reason = "wall time"
                break
            self._reap(self.executor.poll())
            if self.pool.placements and now - last_deletion_check >= DELETION_CHECK_SEC:
                self._stop_deleted()
                last_deletion_check = now
            self._flush()
            started = self._acquire()
            if self.pool.placements or started:
                idle_since = now
            elif now - idle_since >= self.settings.idle_ttl_sec:
                break
            if now - last_beat >= HEARTBEAT_SEC:
                store.heartbeat(self.id, self.status())
                last_beat = now
            if not started:
                self.executor.wait(self.settings.poll_interval_sec)
        log.info("launcher %s stopping (%s) with %d running Job(s)", self.id, reason, len(self.pool.placements))
        self._reap(self.executor.terminate_all(f"launcher stopped ({reason})", STOP_GRACE_SEC))
        self._flush()
        store.heartbeat(self.id, self.status(), ended=True)

    def stop(self) -> None:
        """Ask the loop to stop (signal handlers call this)."""
        self.stopping.set()

    def status(self) -> dict[str, Any]:
        """What the launcher reports in its heartbeat."""
        return {
            "job_mode": self.partition.job_mode,
            "nodes": [n.name for n in self.pool.nodes],
            "running_jobs": len(self.pool.placements),
            "occupancy": self.pool.occupancy(),
        }

    # ------------------------------------------------------------------ acquire and start
    def _acquire(self) -> int:
        if not self.pool.has_idle():
            return 0
        placements: dict[int, Placement] = {}

        def pick(refs: list[JobRef]) -> list[tuple[JobRef, Mapping[str, Any]]]:
            candidates = [(r, req, r.spec.wall_time_min) for r in refs if self.accepts(req := Request.of(r.spec))]
            chosen = choose(self.pool, candidates, "small_first")
            placements.update({r.id: p for r, p in chosen})
            return [(r, {"placement": p.describe()}) for r, p in chosen]

        idle_cpus = sum(len(n.idle_cpus) for n in self.pool.nodes)
        claimed = self.site.store.acquire(
            self.site.site_id,
            owner=self.id,
            batch_job=self.batch_job,
            filter_tags=self.partition.filter_tags,
            choose=pick,
            candidates=min(MAX_CANDIDATES, 2 * idle_cpus + 4),
            max_num_nodes=len(self.pool.nodes),
            max_wall_time_min=(self.deadline - time.time()) / 60,
        )
        for ref, _ in claimed:
            placement = placements[ref.id]
            try:
                self.executor.start(self.build_task(ref, self._app(ref.app), placement), placement)
            except (CommandError, SiteError, OSError) as exc:
                self._reap([Outcome(ref.id, ref.name, None, f"could not start: {exc}")])
        return len(claimed)

    def _app(self, name: str) -> AppSpec:
        if name not in self.apps:
            obj = self.site.store.get_object(self.site.site_id, "App", name).manifest
            assert isinstance(obj, App)
            self.apps[name] = obj.spec
        return self.apps[name]

    # ------------------------------------------------------------------ finish
    def _reap(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.pool.release(outcome.job_id)
            self.results.append(result_of(outcome))

    def _flush(self) -> None:
        if self.results:
            self.site.store.record_results(self.site.site_id, self.results)
            self.results = []
            self.unannounced = True
        if self.unannounced and time.monotonic() - self.last_poke >= POKE_EVERY_SEC:
            self.site.poke()  # the controller moves the finished Jobs on
            self.unannounced, self.last_poke = False, time.monotonic()

    def _stop_deleted(self) -> None:
        for job_id in self.site.store.deletion_requested(self.id):
            outcome = self.executor.kill(job_id, "stopped: the Job was deleted")
            if outcome is not None:
                self._reap([outcome])
