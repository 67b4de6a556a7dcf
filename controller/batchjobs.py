"""The BatchJob reconciler: submit each allocation once, follow it, cancel it on deletion.

Desired state: the BatchJob objects. Observed state: one batched status call to the site's scheduler per pass.
Crash safety: the job name is recorded before the scheduler is called; a BatchJob found in
``pending_submission`` with a recorded job name is first looked up by that name and adopted if it exists.
"""

from __future__ import annotations

import glob
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from balsamctl.schedulers import AllocationStatus, Scheduler, SchedulerError
from balsamctl.schemas import BatchJob, BatchJobState
from balsamctl.schemas.conditions import Status, condition_of, condition_status
from balsamctl.schemas.objects import PartitionStatus
from balsamctl.site.directory import SiteDirectory, SiteError
from balsamctl.site.joboutput import read_tail
from balsamctl.site.jobscript import render_job_script, submit_request
from balsamctl.store import Selector, to_datetime
from balsamctl.store.batchjobs import LAUNCHERS_STARTED

log = logging.getLogger("balsamctl.controller.batchjobs")
B = BatchJobState
CANCEL_RETRY_SEC = 30.0
MAX_BACKOFF_SEC = 300.0
OUTPUT_FILES = 2  # an allocation's output files shown in a LaunchersStarted condition (stdout and stderr) ...
OUTPUT_LINES = 20  # ... their last lines ...
OUTPUT_BYTES = 4096  # ... of at most their last bytes
#: The BatchJob condition a launcher sets from its preflight (launcher/preflight.py).
LAUNCHER_READY = "LauncherReady"


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

    def __init__(self, site: SiteDirectory, scheduler: Scheduler) -> None:
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
        # Allocations per queue, kept up to date through the pass: those it submits count against the next ones.
        in_queue = Counter(bj.spec.queue for bj in bjs if bj.status.state in (B.queued, B.running))
        changed = False
        for bj in bjs:
            try:
                changed |= self._reconcile(bj, statuses, in_queue)
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
            if condition_status(bj.status.conditions, "SchedulerReachable") == "False":
                self._condition(bj, "SchedulerReachable", "True", "StatusOk", "the scheduler answers again")
        return statuses

    def _reconcile(self, bj: BatchJob, statuses: dict[str, AllocationStatus] | None, in_queue: Counter[str]) -> bool:
        state = bj.status.state
        if state == B.pending_submission:
            return self._submit(bj, in_queue)
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
            return self._watch_launchers(bj, alloc)
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

    def _watch_launchers(self, bj: BatchJob, alloc: AllocationStatus) -> bool:
        """While the allocation runs: report its launchers, tell whether any started, and fence a lost one. False
        even when it writes: a report is no change that calls for another pass at once."""
        rows = self.site.store.launchers_of(self.site.site_id, bj.metadata.name)
        self._fence_lost_launchers(bj, rows, alloc.scheduler_id)  # first: it needs no write to cancel
        partitions = _launcher_reports(rows)
        if partitions != bj.status.partitions:
            self.site.store.set_batchjob_status(
                self.site.site_id, bj.metadata.name, src=B.running, status={"partitions": _as_stored(partitions)}
            )
        if rows:
            self._launchers_started(bj, rows)
        else:
            self._no_launcher_yet(bj, alloc)
        return False

    def _launchers_started(self, bj: BatchJob, rows: Sequence[Mapping[str, Any]]) -> None:
        """``LaunchersStarted=True`` once a launcher has registered."""
        if condition_status(bj.status.conditions, LAUNCHERS_STARTED) != "True":
            first = rows[0]
            self._condition(
                bj, LAUNCHERS_STARTED, "True", "Registered", f"launcher {first['id']} registered on {first['host']}"
            )

    def _no_launcher_yet(self, bj: BatchJob, alloc: AllocationStatus) -> None:
        """``LaunchersStarted=False`` (``NoHeartbeat``) for an allocation running ``launcher.start_timeout_sec``
        without a launcher, with the last lines of its output. Timed from its start, as the scheduler gives it, else
        from when the controller saw it running (its ``Running`` event)."""
        if condition_status(bj.status.conditions, LAUNCHERS_STARTED) is not None:
            return
        timeout = self.site.settings.launcher.start_timeout_sec
        waited = time.time() - self._started_at(bj, alloc)
        if waited < timeout:
            return
        message = (
            f"no launcher of allocation {alloc.scheduler_id} has heartbeat {waited:.0f} s after it started "
            f"(launcher.start_timeout_sec {timeout:g})"
        )
        log.warning("batchjob/%s: %s", bj.metadata.name, message)
        self._not_started(bj, "NoHeartbeat", message)

    def _started_at(self, bj: BatchJob, alloc: AllocationStatus) -> float:
        """When the allocation started running (a POSIX time): as the scheduler says, else when this BatchJob
        entered ``running`` (some schedulers give no start time)."""
        started = alloc.start_time or bj.status.start_time
        if started is not None:
            return started.timestamp()
        seen = self.site.store.entered_at(self.site.site_id, "BatchJob", bj.metadata.name, B.running.value)
        return time.time() if seen is None else seen

    def _not_started(self, bj: BatchJob, reason: str, message: str) -> None:
        """``LaunchersStarted=False`` with the last lines of the allocation's output: ``reason`` and ``message``,
        unless a launcher of it failed its preflight (and so never registered): then ``PreflightFailed`` with the
        preflight's reason and message (read afresh: the launcher may have written it during this pass)."""
        fresh = self.site.store.get_object(self.site.site_id, "BatchJob", bj.metadata.name).manifest
        ready = condition_of(fresh.status.conditions, LAUNCHER_READY)
        if ready is not None and ready.status == "False":
            reason = "PreflightFailed"
            message = (
                f"allocation {bj.status.scheduler_id} started no launcher: one failed its preflight "
                f"({LAUNCHER_READY}=False, {ready.reason}): {ready.message}"
            )
        self._condition(bj, LAUNCHERS_STARTED, "False", reason, f"{message}; {self._output_tail(bj)}")

    def _fence_lost_launchers(self, bj: BatchJob, rows: Sequence[Mapping[str, Any]], sched_id: str) -> None:
        """Cancel the allocation of a launcher lost (declared so by the lease sweep, or silent past its lease: the
        sweep's write may wait behind a lock the frozen launcher holds, so the cancel, read-only until the scheduler
        is called, comes first) that still holds Jobs: they may still run (a frozen launcher's processes live on,
        and a serial-mode worker may start those queued on its lanes), so they run again elsewhere only once the
        allocation has ended."""
        lease, t = self.site.settings.launcher.lease_sec, time.time()
        lost = {r["id"]: r for r in rows if _lost(r) or (r["ended_at"] is None and r["heartbeat_at"] < t - lease)}
        held = self.site.store.jobs_held_by(self.site.site_id, list(lost)) if lost else {}
        if not held:
            return
        self._cancel(bj, sched_id)
        whom = "; ".join(
            f"launcher {lost[lid]['id']} on {lost[lid]['host']} silent for "
            f"{(lost[lid]['ended_at'] or t) - lost[lid]['heartbeat_at']:.0f} s (launcher.lease_sec {lease:g}) with "
            f"{running} RUNNING and {claimed} claimed Job(s)"
            for lid, (running, claimed) in sorted(held.items())
        )
        message = f"{whom}: allocation {sched_id} cancelled; its Jobs run again once it has ended"
        healthy = condition_of(bj.status.conditions, "LaunchersHealthy")
        if healthy is None or healthy.reason != "LauncherLost":
            log.warning("batchjob/%s: %s", bj.metadata.name, message)
            self._condition(bj, "LaunchersHealthy", "False", "LauncherLost", message)

    def _output_tail(self, bj: BatchJob) -> str:
        """The last lines of the allocation's own output file(s) (the job script's stdout and stderr), as the
        scheduler wrote them in ``qsubmit/``: ``<job name>.out``, ``<job name>.<id>.out``, ``.output``/``.error``."""
        name = bj.status.job_name or ""
        files = sorted(self.site.qsubmit_dir.glob(f"{glob.escape(name)}.*"), key=_mtime) if name else []
        if not files:
            return f"no output file {self.site.qsubmit_dir / name}.* found"
        return "\n".join(f"last lines of {path}:\n{_tail(path)}" for path in files[-OUTPUT_FILES:])

    def _submit(self, bj: BatchJob, in_queue: Counter[str]) -> bool:
        """Submit ``bj`` (or adopt the allocation a crashed pass submitted), within its queue's limit; ``in_queue``
        counts the queue's allocations, this one included once it may exist."""
        name = bj.metadata.name
        store, sid = self.site.store, self.site.site_id
        if not self.backoff.ready(name):
            return False
        req = submit_request(self.site, bj)
        adopted = self.scheduler.find_by_name(req.job_name) if bj.status.job_name else None
        if adopted is not None:
            in_queue[bj.spec.queue] += 1
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
        queued = in_queue[bj.spec.queue]
        if limits is not None and queued >= limits.max_queued_jobs:
            self._condition(
                bj,
                "Submitted",
                "False",
                "QueueLimit",
                f"queue {bj.spec.queue!r} already has {queued} (max_queued_jobs {limits.max_queued_jobs})",
            )
            return False
        try:
            script = render_job_script(self.site, bj)
        except SiteError as exc:
            return self._refused(bj, "TemplateError", str(exc))
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
                in_queue[bj.spec.queue] += 1
                delay = self.backoff.failed(name)
                self._condition(bj, "Submitted", "Unknown", "SubmitTimeout", f"{exc} (retry in {delay:.0f} s)")
                return False
            return self._refused(bj, "SubmitFailed", exc.stderr.strip() or str(exc))
        self.backoff.succeeded(name)
        in_queue[bj.spec.queue] += 1
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

    def _refused(self, bj: BatchJob, reason: str, message: str) -> bool:
        """``bj`` can never be submitted as it is: submit_failed, with ``Submitted=False`` saying why."""
        name = bj.metadata.name
        store, sid = self.site.store, self.site.site_id
        status = {"message": message}
        if not store.set_batchjob_status(
            sid, name, src=B.pending_submission, dst=B.submit_failed, status=status, reason=reason, message=message
        ):
            return False
        self._condition(bj, "Submitted", "False", reason, message)
        return True

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
        """The allocation has ended: its Jobs still RUNNING become RUN_TIMEOUT (a run lost with its launcher, unless
        the BatchJob was deleted), its launchers' last word is kept, and whether any launcher started is told."""
        store, sid, name = self.site.store, self.site.site_id, bj.metadata.name
        what = why or f"allocation ended: {alloc.raw_state if alloc else 'gone'}"
        if alloc is not None and alloc.exit_code is not None:
            what += f" (exit code {alloc.exit_code})"
        deleted = src == B.pending_deletion
        leftovers = store.end_runs_of_batchjob(
            sid, name, f"batchjob/{name} ended while the Job ran ({what})", crash=not deleted
        )
        rows = store.launchers_of(sid, name)
        if rows:
            self._launchers_started(bj, rows)
        elif not deleted:
            self._not_started(
                bj,
                "EndedBeforeLaunch",
                f"allocation {bj.status.scheduler_id} ended before any launcher started ({what})",
            )
        # the launchers' last word; one that never said it ended went down with the allocation
        last = [p.model_copy(update={"ended": True, "lost": p.lost or not p.ended}) for p in _launcher_reports(rows)]
        done = store.set_batchjob_status(
            sid,
            name,
            src=src,
            dst=B.finished,
            reason="Finished",
            message=what,
            status={
                "end_time": _iso(alloc.end_time if alloc else None),
                "message": what,
                "partitions": _as_stored(last),
            },
        )
        if leftovers:
            log.info("batchjob/%s: %d running Job(s) marked RUN_TIMEOUT", name, leftovers)
        if bj.metadata.deletion_timestamp is not None:
            store.remove_batchjob(sid, name)
        self.cancel_sent.pop(name, None)
        return done

    def _condition(self, bj: BatchJob, type_: str, status: Status, reason: str, message: str) -> None:
        self.site.store.set_batchjob_condition(self.site.site_id, bj.metadata.name, type_, status, reason, message)


def _launcher_reports(rows: Sequence[Mapping[str, Any]]) -> list[PartitionStatus]:
    """What each launcher (its row in the store) said in its last heartbeat. A launcher that ended on its own sent
    its last heartbeat as it ended; one ended later (by the lease sweep) was ``lost``."""
    return [
        PartitionStatus(
            launcher=r["id"],
            partition=r["partition"],
            job_mode=r["job_mode"],
            nodes=r["nodes"],
            running_jobs=r["status"].get("running_jobs", 0),
            claimed_jobs=r["status"].get("claimed_jobs", 0),
            occupancy=r["status"].get("occupancy", 0.0),
            last_heartbeat=to_datetime(r["heartbeat_at"]),
            ended=r["ended_at"] is not None,
            lost=_lost(r),
        )
        for r in rows
    ]


def _as_stored(partitions: Sequence[PartitionStatus]) -> list[dict[str, Any]]:
    """``status.partitions`` as the store keeps it (JSON)."""
    return [p.model_dump(mode="json") for p in partitions]


def _lost(row: Mapping[str, Any]) -> bool:
    """Whether a launcher was ended by the lease sweep (after its last heartbeat), not by itself."""
    return row["ended_at"] is not None and row["ended_at"] > row["heartbeat_at"]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _tail(path: Path) -> str:
    """The last OUTPUT_LINES lines of a file (at most OUTPUT_BYTES read), or why it cannot be read."""
    try:
        text = read_tail(path, OUTPUT_BYTES).replace("\x00", "\ufffd")
    except OSError as exc:
        return f"(cannot be read: {exc})"
    return "\n".join(text.splitlines()[-OUTPUT_LINES:]) or "(empty)"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
