"""The controller's loop: woken by watchdog file events, its site's store (PostgreSQL: a notification on the site's
channel, :mod:`balsamctl.store.notify`) and its own timers, it runs each reconciler.

Level-triggered (controller-runtime style): a reconciler reads desired and observed state, acts, and says
whether it changed anything; one that changed something runs again at once, one that raised backs off
exponentially, and nothing stops the loop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from balsamctl.controller.batchjobs import BatchJobReconciler
from balsamctl.controller.jobs import JobReconciler
from balsamctl.controller.manifests import ManifestReconciler
from balsamctl.schedulers import get_scheduler
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import site_channel

log = logging.getLogger("balsamctl.controller")
MAX_ROUNDS = 50
JOB_PERIOD_SEC = 5.0
MANIFEST_RESYNC_SEC = 30.0
LEASE_SWEEP_SEC = 5.0
WOKEN_TASKS = ("jobs", "batchjobs")  # what a wake-up (the poke file, the site's channel) runs at once


@dataclass
class TimedReconciler:
    """One reconciler with its timer and its backoff."""

    name: str
    reconcile: Callable[[], bool]
    period: float
    due: float = 0.0
    failures: int = 0
    dirty: bool = True
    retry_after: Callable[[], float | None] = lambda: None


@dataclass
class Controller:
    """The site agent of one site."""

    site: SiteDirectory
    wake: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        scheduler = get_scheduler(self.site.settings.scheduler, self.site.path)
        manifests = ManifestReconciler(self.site)
        self.jobs = JobReconciler(self.site, lambda: self.poke(("jobs",)))
        self.tasks = [
            TimedReconciler("manifests", manifests, MANIFEST_RESYNC_SEC, retry_after=manifests.retry_after),
            TimedReconciler("jobs", self.jobs, JOB_PERIOD_SEC),
            TimedReconciler("batchjobs", BatchJobReconciler(self.site, scheduler), self.site.settings.sync_period_sec),
        ]

    def poke(self, task_names: tuple[str, ...] = ("manifests", "jobs", "batchjobs")) -> None:
        """Mark tasks to run now and wake the loop."""
        for task in self.tasks:
            if task.name in task_names:
                task.dirty = True
        self.wake.set()

    def run_once(self) -> None:
        """Run every task that is due or was poked."""
        now = time.monotonic()
        for task in self.tasks:
            if not (task.dirty or now >= task.due):
                continue
            task.dirty = False
            try:
                rounds = 0
                while task.reconcile() and rounds < MAX_ROUNDS:
                    rounds += 1
                task.failures = 0
                retry = task.retry_after()
                task.due = time.monotonic() + (task.period if retry is None else min(task.period, retry))
            except Exception:
                task.failures += 1
                delay = min(300.0, task.period * 2**task.failures)
                log.exception("%s reconciler failed (%d in a row); next try in %.0f s", task.name, task.failures, delay)
                task.due = time.monotonic() + delay

    def sweep_leases(self) -> None:
        """On its own timer, whatever the loop is doing: free what lost launchers held (the batchjobs reconciler,
        poked, cancels the allocation of a lost launcher whose Jobs still run)."""
        lease = self.site.settings.launcher.lease_sec
        while not self.stopping.wait(min(LEASE_SWEEP_SEC, lease / 4)):
            try:
                swept = self.site.store.sweep_lost_launchers(self.site.site_id, lease)
            except Exception:
                log.exception("lease sweep failed; retrying")
                continue
            if swept.launchers:
                log.warning(
                    "launcher(s) %s lost (no heartbeat for %.0f s): %d claim(s) handed back and %d Job(s) RUN_TIMEOUT "
                    "(allocation ended), %d Job(s) held until their allocation ends (it is cancelled)",
                    ", ".join(swept.launchers),
                    lease,
                    swept.handed_back,
                    swept.timed_out,
                    swept.kept,
                )
                self.poke(("jobs", "batchjobs"))

    def run(self) -> None:
        """Run until SIGTERM/SIGINT."""
        self.site.wake_dir.mkdir(exist_ok=True)
        observer = Observer()
        observer.schedule(_Wake(self, ("manifests",)), str(self.site.manifests_dir), recursive=True)
        observer.schedule(_Wake(self, WOKEN_TASKS), str(self.site.wake_dir), recursive=False)
        observer.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        sweeper = threading.Thread(target=self.sweep_leases, name="lease-sweep", daemon=True)
        sweeper.start()
        # a write for the site from anywhere (another host's CLI): as the wake-up file's poke, which it cannot touch
        listener = self.site.store.listen(site_channel(self.site.site_id))
        if listener is not None:
            listener.start(lambda: self.poke(WOKEN_TASKS), "push")
        log.info("controller of site %s started (scheduler %s)", self.site.name, self.site.settings.scheduler)
        try:
            while not self.stopping.is_set():
                self.run_once()
                next_due = min(t.due for t in self.tasks) - time.monotonic()
                self.wake.wait(timeout=max(0.0, next_due))
                self.wake.clear()
        finally:
            observer.stop()
            observer.join(timeout=5)
            if listener is not None:
                listener.close()
            sweeper.join(timeout=5)
            self.jobs.close()
            log.info("controller of site %s stopped", self.site.name)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %d, stopping", signum)
        self.stopping.set()
        self.wake.set()


class _Wake(FileSystemEventHandler):
    """Turns file events into pokes of some tasks."""

    def __init__(self, controller: Controller, tasks: tuple[str, ...]) -> None:
        self.controller = controller
        self.task_names = tasks

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        self.controller.poke(self.task_names)
