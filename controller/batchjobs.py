"""The BatchJob reconciler: submit each allocation once, follow it, cancel it on deletion.

Desired state: the BatchJob objects. Observed state: one batched status call to the site's scheduler per pass.
Crash safety: the job name is recorded before the scheduler is called; a BatchJob found in
``pending_submission`` with a recorded job name is first looked up by that name and adopted if it exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from balsamctl.jobscript import render_job_script, submit_request
from balsamctl.site import Site, SiteError
from schedulers import AllocationStatus, Scheduler, SchedulerError
from schemas import BatchJob, BatchJobState, JobState
from schemas.conditions import Status
from store import Selector, to_datetime

log = logging.getLogger("balsamctl.controller.batchjobs")
B = BatchJobState
CANCEL_RETRY_SEC = 30.0
MAX_BACKOFF_SEC = 300.0


@dataclass
class Backoff:
    """Exponential backoff per key."""

    failures: dict[str, int] = field(default_factory=dict)
    not_before: dict[str, float] = field(default_factory=dict)

    def ready(self, key: str) -> bool:
        """Whether ``key`` may be tried now."""
        return time.monotonic() >= self.not_before.get(key, 0.0)

    def failed(self, key: str) -> float:
        """Record a failure; returns the delay before the next try."""
        n = self.failures.get(key, 0) + 1
        self.failures[key] = n
        delay = min(MAX_BACKOFF_SEC, 2.0 ** (n - 1))
        self.not_before[key] = time.monotonic() + delay
        return delay

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key``."""
        self.failures.pop(key, None)
        self.not_before.pop(key, None)


class BatchJobReconciler:
    """Keeps every BatchJob of one site in step with its allocation."""

    def __init__(self, site: Site, scheduler: Scheduler) -> None:
        self.site = site
        self.scheduler = scheduler
        self.backoff = Backoff()
        self.cancel_sent: dict[str, float] = {}

    def __call__(self) -> bool:
        """One pass; whether anything changed."""
        store, sid = self.site.store, self.site.site_id
        active = [B.pending_submission, B.queued, B.running, B.pending_deletion]
        objs = store.list_objects(Selector("BatchJob", (sid,), states=tuple(s.value for s in active)))
        bjs = [o.manifest for o in objs if isinstance(o.manifest, BatchJob)]
        statuses = self._observe(bjs)
        changed = False
        for bj in bjs:
            try:
                changed |= self._reconcile(bj, statuses, bjs)
            except Exception as exc:
                delay = self.backoff.failed(bj.metadata.name)
                log.exception("batchjob/%s: reconcile failed; retrying in %.0f s", bj.metadata.name, delay)
                self._condition(bj, "Synced", "False", "ReconcileError", str(exc))
        return changed

    def _observe(self, bjs: Sequence[BatchJob]) -> dict[str, AllocationStatus] | None:
        ids = [bj.status.scheduler_id for bj in bjs if bj.status.scheduler_id]
        if not ids:
            return {}
        if not self.backoff.ready("scheduler"):
            return None
        try:
            statuses = self.scheduler.status(ids)
        except SchedulerError as exc:
            delay = self.backoff.failed("scheduler")
            log.warning("scheduler status failed (retry in %.0f s): %s", delay, exc)
            for bj in bjs:
                self._condition(bj, "SchedulerReachable", "False", "StatusFailed", str(exc))
            return None
        self.backoff.succeeded("scheduler")
        for bj in bjs:
            if any(c.type == "SchedulerReachable" and c.status == "False" for c in bj.status.conditions):
                self._condition(bj, "SchedulerReachable", "True", "StatusOk", "the scheduler answers again")
        return statuses

    def _reconcile(self, bj: BatchJob, statuses: dict[str, AllocationStatus] | None, bjs: Sequence[BatchJob]) -> bool:
        state = bj.status.state
        if state == B.pending_submission:
            return self._submit(bj, bjs)
        if statuses is None:  # the scheduler could not be asked this pass
            return False
        sched_id = bj.status.scheduler_id
        alloc = statuses.get(sched_id) if sched_id else None
        if state == B.pending_deletion:
            if sched_id is None and bj.status.job_name:  # deleted while its submission was unresolved
                sched_id = self.scheduler.find_by_name(bj.status.job_name)
                alloc = self.scheduler.status([sched_id]).get(sched_id) if sched_id else None
            if sched_id is None or alloc is None or alloc.state == "finished":
                return self._finish(bj, B.pending_deletion, alloc, "deleted")
            self._cancel(bj, sched_id)
            return False
        assert state is not None
        if alloc is None:
            return self._finish(bj, state, None, "the allocation is no longer known to the scheduler")
        if alloc.state == "finished":
            return self._finish(bj, state, alloc, "")
        if alloc.state == "running" and state == B.running:
            return self._report_launchers(bj)
        if alloc.state == "running" and state == B.queued:
            return self.site.store.set_batchjob_status(
                self.site.site_id,
                bj.metadata.name,
                src=B.queued,
                dst=B.running,
                status={"start_time": _iso(alloc.start_time), "nodes": list(alloc.nodes)},
                reason="Running",
                message=f"allocation {sched_id} started on {','.join(alloc.nodes) or '?'}",
            )
        return False

    def _report_launchers(self, bj: BatchJob) -> bool:
        """Copy the launchers' heartbeats (nodes, running Jobs, occupancy) into ``status.partitions``; False even
        when it does: a report is no change that calls for another pass at once."""
        partitions = self._launcher_reports(bj)
        if partitions != bj.status.partitions:
            self.site.store.set_batchjob_status(
                self.site.site_id, bj.metadata.name, src=B.running, status={"partitions": partitions}
            )
        return False

    def _launcher_reports(self, bj: BatchJob) -> list[dict[str, Any]]:
        """What each launcher of ``bj`` said in its last heartbeat. A launcher that ended on its own sent its last
        heartbeat as it ended; one ended later (by the lease sweep) was ``lost``."""
        rows = self.site.store.launchers_of(self.site.site_id, bj.metadata.name)
        return [
            {
                "launcher": r["id"],
                "partition": r["partition"],
                "job_mode": r["job_mode"],
                "nodes": r["nodes"],
                "running_jobs": r["status"].get("running_jobs", 0),
                "claimed_jobs": r["status"].get("claimed_jobs", 0),
                "occupancy": r["status"].get("occupancy", 0.0),
                "last_heartbeat": _iso(to_datetime(r["heartbeat_at"])),
                "ended": r["ended_at"] is not None,
                "lost": r["ended_at"] is not None and r["ended_at"] > r["heartbeat_at"],
            }
            for r in rows
        ]

    def _submit(self, bj: BatchJob, bjs: Sequence[BatchJob]) -> bool:
        name = bj.metadata.name
        store, sid = self.site.store, self.site.site_id
        if not self.backoff.ready(name):
            return False
        req = submit_request(self.site, bj)
        adopted = self.scheduler.find_by_name(req.job_name) if bj.status.job_name else None
        if adopted is not None:
            return store.set_batchjob_status(
                sid,
                name,
                src=B.pending_submission,
                dst=B.queued,
                scheduler_id=adopted,
                observed_generation=bj.metadata.generation,
                reason="Adopted",
                message=f"found allocation {adopted} submitted before a controller restart",
            )
        limits = self.site.settings.allowed_queues.get(bj.spec.queue)
        in_queue = sum(1 for b in bjs if b.spec.queue == bj.spec.queue and b.status.state in (B.queued, B.running))
        if limits is not None and in_queue >= limits.max_queued_jobs:
            self._condition(
                bj,
                "Submitted",
                "False",
                "QueueLimit",
                f"queue {bj.spec.queue!r} already has {in_queue} (max_queued_jobs {limits.max_queued_jobs})",
            )
            return False
        try:
            script = render_job_script(self.site, bj)
        except SiteError as exc:
            return store.set_batchjob_status(
                sid,
                name,
                src=B.pending_submission,
                dst=B.submit_failed,
                status={"message": str(exc)},
                reason="TemplateError",
                message=str(exc),
            )
        req.script_path.write_text(script)
        store.set_batchjob_status(
            sid,
            name,
            src=B.pending_submission,
            status={"submit_script": str(req.script_path), "job_name": req.job_name},
        )
        try:
            sched_id = self.scheduler.submit(req)
        except SchedulerError as exc:
            if exc.returncode is None:  # timed out: it may have gone through; look it up by name next time
                delay = self.backoff.failed(name)
                self._condition(bj, "Submitted", "Unknown", "SubmitTimeout", f"{exc} (retry in {delay:.0f} s)")
                return False
            words = exc.stderr.strip() or str(exc)
            return store.set_batchjob_status(
                sid,
                name,
                src=B.pending_submission,
                dst=B.submit_failed,
                status={"message": words},
                reason="SubmitFailed",
                message=words,
            )
        self.backoff.succeeded(name)
        return store.set_batchjob_status(
            sid,
            name,
            src=B.pending_submission,
            dst=B.queued,
            scheduler_id=sched_id,
            observed_generation=bj.metadata.generation,
            status={"message": None},
            reason="Submitted",
            message=f"submitted as {sched_id}: {' '.join(self.scheduler.submit_command(req))}",
        )

    def _cancel(self, bj: BatchJob, sched_id: str) -> None:
        last = self.cancel_sent.get(bj.metadata.name)
        if last is not None and time.monotonic() - last < CANCEL_RETRY_SEC:
            return
        try:
            self.scheduler.cancel(sched_id)
            self.cancel_sent[bj.metadata.name] = time.monotonic()
            self._condition(bj, "Cancelled", "True", "CancelRequested", f"cancel of {sched_id} sent")
        except SchedulerError as exc:
            self._condition(bj, "Cancelled", "False", "CancelFailed", str(exc))

    def _finish(self, bj: BatchJob, src: BatchJobState, alloc: AllocationStatus | None, why: str) -> bool:
        store, sid, name = self.site.store, self.site.site_id, bj.metadata.name
        what = why or f"allocation ended: {alloc.raw_state if alloc else 'gone'}"
        if alloc is not None and alloc.exit_code is not None:
            what += f" (exit code {alloc.exit_code})"
        leftovers = store.advance(
            sid,
            JobState.RUNNING,
            JobState.RUN_TIMEOUT,
            reason="AllocationEnded",
            batch_job=name,
            message=f"batchjob/{name} ended while the Job ran",
        )
        # the launchers' last word; one that never said it ended went down with the allocation
        last = [{**r, "ended": True, "lost": r["lost"] or not r["ended"]} for r in self._launcher_reports(bj)]
        done = store.set_batchjob_status(
            sid,
            name,
            src=src,
            dst=B.finished,
            reason="Finished",
            message=what,
            status={"end_time": _iso(alloc.end_time if alloc else None), "message": what, "partitions": last},
        )
        if leftovers:
            log.info("batchjob/%s: %d running Job(s) marked RUN_TIMEOUT", name, leftovers)
        if bj.metadata.deletion_timestamp is not None:
            store.remove_batchjob(sid, name)
        self.cancel_sent.pop(name, None)
        return done

    def _condition(self, bj: BatchJob, type_: str, status: Status, reason: str, message: str) -> None:
        self.site.store.set_batchjob_condition(self.site.site_id, bj.metadata.name, type_, status, reason, message)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
