"""The Job lifecycle reconciler: parents, staging, hooks, and the defaults of an App without hooks.

Level-triggered: every pass reads which Jobs sit in which state and moves them on. Jobs of Apps without a hook
move in bulk, in SQL (stage-in also makes each Job's workdir and empty output file, so that a launcher only opens
it); Jobs whose App has a hook run it on a small thread pool, exactly once per transition (the transition is
conditional on the Job still being in the hook's state).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from balsamctl.controller.hooks import HOOKS, forget, run_hook
from balsamctl.schemas import App, Job, JobState
from balsamctl.schemas.conditions import set_condition
from balsamctl.schemas.objects import AppSpec
from balsamctl.schemas.retries import Verdict, after_failure
from balsamctl.schemas.states import FINISHING_STEPS
from balsamctl.site.directory import SiteDirectory, SiteError
from balsamctl.site.joboutput import prepare_workdir
from balsamctl.store import JobRef, Selector, Transition

log = logging.getLogger("balsamctl.controller.jobs")
S = JobState
HOOK_BATCH = 64

STAGE_IN_BATCH = 2000  # Jobs staged in (their workdirs made) per pass
#: Moves that need no hook: (from, to, reason).
PLAIN_MOVES: tuple[tuple[JobState, JobState, str], ...] = FINISHING_STEPS[1:]
#: States left by a failed run, where max_retries applies.
RETRYABLE = frozenset({S.RUN_ERROR, S.RUN_TIMEOUT})
#: Per processing hook, where a Job of an App without that hook goes.
DEFAULT_MOVES: dict[str, tuple[JobState, str]] = {
    "preprocess": (S.PREPROCESSED, "Preprocessed"),
    "postprocess": FINISHING_STEPS[0][1:],
}


class JobReconciler:
    """Moves every Job of one site towards JOB_FINISHED (or FAILED)."""

    def __init__(self, site: SiteDirectory, wake: Callable[[], None], workers: int = 4) -> None:
        self.site = site
        self.wake = wake
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hook")
        self.in_flight: set[int] = set()
        self.finished: set[int] = set()  # hooks done since this pass's reads began (those reads may be stale)
        self.lock = threading.Lock()
        self.records = site.state_dir / "hooks"
        self.stage_in_after = 0  # where the next stage-in pass starts (a Job id)
        self.refused: dict[int, str] = {}  # Jobs told their workdir is refused (StagedIn=False), with what was said
        self._forget_stale_records()

    def _forget_stale_records(self) -> None:
        """Remove hook records (``JOBID-EVENTID-HOOK.*``) whose transition was stored before a crash let them be
        forgotten: their Job has moved on since."""
        store, sid = self.site.store, self.site.site_id
        for path in self.records.glob("*-*-*"):
            job_id, event_id, _ = path.name.split("-", 2)
            if job_id.isdigit() and str(store.last_transition(sid, int(job_id))) != event_id:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Wait for running hooks."""
        self.pool.shutdown(wait=True)

    def __call__(self) -> bool:
        """One pass; whether anything moved (the caller repeats while it does)."""
        store, sid = self.site.store, self.site.site_id
        with self.lock:
            self.finished.clear()
        apps = {
            o.name: o.manifest.spec for o in store.list_objects(Selector("App", (sid,))) if isinstance(o.manifest, App)
        }
        moved = store.advance(sid, S.CREATED, S.READY, reason="Ready", parents="none")
        moved += store.advance(sid, S.CREATED, S.AWAITING_PARENTS, reason="AwaitingParents", parents="some")
        moved += self._fail_orphans()
        moved += store.advance(sid, S.AWAITING_PARENTS, S.READY, reason="ParentsFinished", parents="all_finished")
        moved += self._stage_in()
        for src, dst, reason in PLAIN_MOVES:
            moved += store.advance(sid, src, dst, reason=reason)
        for hook_name, (src, _) in HOOKS.items():
            without = [n for n, a in apps.items() if getattr(a, hook_name) is None]
            if src in RETRYABLE:  # handle_error, handle_timeout: Balsam's defaults within max_retries
                moved += self._retry_or_fail(src, without, apps)
            else:
                dst, reason = DEFAULT_MOVES[hook_name]
                moved += store.advance(sid, src, dst, reason=reason, apps_without_hook=without)
            with_hook = [n for n, a in apps.items() if getattr(a, hook_name) is not None]
            if with_hook:
                self._start_hooks(hook_name, src, with_hook, apps)
        moved += store.purge_deleted_jobs(sid)
        return moved > 0

    def _stage_in(self) -> int:
        """READY Jobs get their workdir (checked to stay inside ``data/``) and empty output file: STAGED_IN.

        A workdir leading out of ``data/`` FAILS its Job; one the file system refuses (full, no permission) stays
        READY, says so (the condition ``StagedIn=False``, reason ``WorkdirRefused``, gone in the same transaction as
        its stage-in) and is tried again later. A pass takes STAGE_IN_BATCH Jobs after where the last full one
        stopped (from the oldest again once one comes back short), so Jobs that stay READY never starve newer ones.
        """
        store, sid = self.site.store, self.site.site_id
        staged: list[int] = []
        failed = []
        waiting: set[int] = set()
        after = self.stage_in_after
        batch = store.jobs_in_state(sid, S.READY, limit=STAGE_IN_BATCH, after=after)
        full = len(batch) == STAGE_IN_BATCH
        self.stage_in_after = batch[-1].id if full else 0
        for ref in batch:
            try:
                prepare_workdir(self.site.workdir(ref.spec.workdir))
            except SiteError as exc:
                failed.append(Transition(ref.id, S.READY, S.FAILED, "WorkdirRefused", str(exc)))
            except OSError as exc:
                self._workdir_refused(ref, exc)
                waiting.add(ref.id)
            else:
                staged.append(ref.id)
        # a refusal told before (perhaps by a controller since restarted) goes with the stage-in that ends it
        moved = store.advance(sid, S.READY, S.STAGED_IN, reason="StagedIn", ids=staged, drop_condition="StagedIn")
        moved += store.transition(sid, failed)
        # this pass saw every READY Job after ``after`` (up to its last, if it was full): what was told of one of
        # them that no longer waits (staged, failed, deleted, moved on) is forgotten
        last = batch[-1].id if full else math.inf
        self.refused = {i: said for i, said in self.refused.items() if i in waiting or not after < i <= last}
        return moved

    def _workdir_refused(self, ref: JobRef, exc: OSError) -> None:
        """Tell a Job that the file system refuses its workdir (once per distinct error: no write every pass)."""
        message = f"its workdir cannot be made: {exc}; tried again on later passes"
        if self.refused.get(ref.id) != message:
            log.warning("job/%s: %s", ref.name, message)
            condition = set_condition([], "StagedIn", "False", "WorkdirRefused", message)[0]
            self.site.store.set_job_condition(self.site.site_id, [ref.id], condition)
            self.refused[ref.id] = message

    def _retry_or_fail(self, src: JobState, app_names: list[str], apps: dict[str, AppSpec]) -> int:
        """Failed runs of Apps without a hook for them: retried while max_retries allow, else FAILED."""
        if not app_names:
            return 0
        store, sid = self.site.store, self.site.site_id
        failed = store.list_objects(Selector("Job", (sid,), states=(src.value,), apps=tuple(app_names)), limit=1000)
        moves = []
        for obj in failed:
            job = obj.manifest
            assert isinstance(job, Job)
            app = apps[job.spec.app]
            # Balsam's defaults: an error FAILS the Job unless retries were asked for; a timeout is retried
            retry = src == S.RUN_TIMEOUT or _max_retries(job, app) is not None
            verdict = self._after_failure(src, job, app, S.RESTART_READY if retry else S.FAILED)
            moves.append(
                Transition(
                    obj.id, src, verdict.state, verdict.reason, verdict.message, status={"failures": verdict.failures}
                )
            )
        return store.transition(sid, moves)

    def _fail_orphans(self) -> int:
        store, sid = self.site.store, self.site.site_id
        orphans = store.failed_parent_children(sid)
        return store.transition(
            sid,
            [
                Transition(cid, S.AWAITING_PARENTS, S.FAILED, "ParentFailed", f"parent job/{parent} FAILED")
                for cid, _, parent in orphans
            ],
        )

    def _start_hooks(self, hook_name: str, src: JobState, app_names: list[str], apps: dict[str, AppSpec]) -> None:
        for ref in self.site.store.jobs_in_state(self.site.site_id, src, apps=app_names, limit=HOOK_BATCH):
            with self.lock:
                if ref.id in self.in_flight or ref.id in self.finished:
                    continue
                self.in_flight.add(ref.id)
            self.pool.submit(self._hook, hook_name, src, ref, apps[ref.app])

    def _hook(self, hook_name: str, src: JobState, ref: JobRef, app: AppSpec) -> None:
        try:
            store, sid = self.site.store, self.site.site_id
            job = store.get_object(sid, "Job", ref.name).manifest
            assert isinstance(job, Job)
            if job.status.state != src:  # moved on since it was listed
                return
            try:
                workdir = self.site.workdir(ref.spec.workdir)
            except SiteError as exc:  # a workdir that leads out of data/: the hook never runs
                store.transition(sid, [Transition(ref.id, src, S.FAILED, "WorkdirRefused", str(exc))])
                return
            # one record per entry into ``src``: a hook completed before a controller crash is not run again
            record = self.records / f"{ref.id}-{store.last_transition(sid, ref.id)}-{hook_name}"
            outcome = run_hook(hook_name, job, app, workdir, self.site.path, record)
            reason = hook_name.title().replace("_", "")
            state, message, patch = outcome.state, outcome.message, {}
            if src in RETRYABLE:
                verdict = self._after_failure(src, job, app, outcome.state)
                state, patch = verdict.state, {"failures": verdict.failures}
                message = f"{outcome.message}; {verdict.message}"
            try:
                store.transition(sid, [Transition(ref.id, src, state, reason, message, status=patch)])
            except ValueError as exc:  # the hook asked for a state the machine forbids
                store.transition(sid, [Transition(ref.id, src, S.FAILED, reason, f"{hook_name}: {exc}")])
            forget(record)
        except Exception:
            log.exception("job/%s: %s hook could not be run", ref.name, hook_name)
        finally:
            with self.lock:
                self.finished.add(ref.id)
                self.in_flight.discard(ref.id)
            self.wake()

    def _after_failure(self, src: JobState, job: Job, app: AppSpec, next_state: JobState) -> Verdict:
        """Where a failed run of ``job`` goes, within its retries and the site's crash limit, when its hook (or the
        default) says ``next_state``."""
        return after_failure(
            src,
            job.status.failures,
            _max_retries(job, app),
            next_state,
            crashes=job.status.crashes,
            crash_limit=self.site.settings.launcher.crash_limit,
        )


def _max_retries(job: Job, app: AppSpec) -> int | None:
    return app.max_retries if job.spec.max_retries is None else job.spec.max_retries
