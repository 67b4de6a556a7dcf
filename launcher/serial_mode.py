"""The ``serial`` job mode: one worker per node (:mod:`balsamctl.launcher.worker`), fanned out with mpi4py.

Rank 0 alone talks to the store: it runs the common launcher loop (acquire, place, write back) and hands each
Job to the worker of its node: a local worker process on its own node, MPI rank ``r`` on node ``r`` (started
with one MPI launch). Workers start processes on their node (no Python per task), start the Jobs queued on a
lane the moment the one before ends (:mod:`balsamctl.launcher.lanes`), and report outcomes and starts back as they come
(together when several happen at once). Only single-process Jobs run in this mode. A one-node partition needs
no MPI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psutil

from balsamctl.launcher.command import job_variables, render_command
from balsamctl.launcher.lanes import Assignment, Event
from balsamctl.launcher.nodes import Node
from balsamctl.launcher.placement import Placement, Request
from balsamctl.launcher.process import NODE_LOST, WORKER_UNREACHABLE, Outcome, Pinning, Task, shell_argv
from balsamctl.launcher.worker import (
    TAG_FINAL,
    TAG_KILL,
    TAG_READY,
    TAG_STOP,
    TAG_TASKS,
    Link,
    MpiLink,
    WorkerLost,
    start_local,
    wait_any,
)
from balsamctl.schemas.objects import AppSpec
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import JobRef

log = logging.getLogger("balsamctl.launcher")


def accepts(req: Request) -> str | None:
    """Why serial mode cannot run a Job (it runs single-process, single-node Jobs only), or None."""
    if req.num_nodes == 1 and req.ranks_per_node == 1:
        return None
    return (
        f"serial mode runs single-process Jobs; this one needs {req.num_nodes} node(s) x {req.ranks_per_node} rank(s)"
    )


class SerialTaskBuilder:
    """Turns an acquired Job into a Task that a worker runs directly on its node."""

    def __init__(self, site: SiteDirectory, nodes: Sequence[Node]) -> None:
        self.site = site
        self.pinning = Pinning(nodes)
        self.gpu_variables = site.settings.launcher.gpu_visible_devices

    def __call__(self, ref: JobRef, app: AppSpec, placement: Placement) -> Task:
        """The Task of one Job."""
        workdir = self.site.workdir(ref.spec.workdir)
        own = job_variables(app, ref.name, workdir, placement.environment(Request.of(ref.spec), self.gpu_variables))
        argv = shell_argv(render_command(app, ref.spec.parameters))
        cpus = self.pinning.cpus(placement)
        return Task(ref.id, ref.name, argv, str(workdir), tuple(own.items()), ref.attempts + 1, cpus)


class SerialExecutor:
    """The launcher's side: sends each Task to the worker of its node, gathers the workers' outcomes."""

    def __init__(self, links: Mapping[str, Link], local: subprocess.Popen[bytes] | None = None) -> None:
        self.links = dict(links)  # node name -> its worker's link (a lost worker's is taken out)
        self.workers = list(self.links.values())  # one per node
        self.local = local
        self.node_of: dict[int, tuple[str, Task]] = {}  # job id -> its node and Task, while it runs or waits
        self.waiting: set[int] = set()  # Tasks sent to wait in a lane, whose start was not reported yet
        self.lost: list[Event] = []  # the outcomes of a lost worker's Tasks, for the next poll
        self.watched: list[int] = []  # descriptors that also end a wait (the launcher's bell)

    @classmethod
    def for_nodes(cls, nodes: list[str], comm: Any = None) -> SerialExecutor:
        """Start the worker of the first node (this one) as a local process; with ``comm``, rank ``r`` is the
        worker of node ``r`` for every other node."""
        link, proc = start_local()
        links: dict[str, Link] = {nodes[0]: link}
        links.update({name: MpiLink(comm, rank) for rank, name in enumerate(nodes) if rank > 0})
        for worker in links.values():  # a start recorded is a start made: the local one takes ~50 ms to start
            tag, _ = worker.receive_wait()
            if tag != TAG_READY:
                raise WorkerLost(f"a worker spoke (tag {tag}) before it said it was ready")
        return cls(links, proc)

    def start(self, batch: Sequence[tuple[str, Assignment]]) -> None:
        """Send the Tasks to the workers of their nodes: one message per node."""
        by_node: dict[str, list[Assignment]] = {}
        for node, (task, lane, queued) in batch:
            by_node.setdefault(node, []).append((task, lane, queued))
            if node in self.links:
                self.node_of[task.job_id] = (node, task)
                if queued:
                    self.waiting.add(task.job_id)
        for node, assignments in by_node.items():
            try:
                self.links[node].send(TAG_TASKS, assignments)
            except (WorkerLost, KeyError) as exc:
                self._worker_lost(node, exc, assignments)

    def poll(self) -> list[Event]:
        """What the workers reported: outcomes, and the starts of queued Tasks; the Tasks of a worker that was lost
        end with it (:meth:`_worker_lost`)."""
        events: list[Event] = []
        for node, link in list(self.links.items()):
            try:
                while (message := link.receive()) is not None:
                    events += message[1]
            except WorkerLost as exc:
                self._worker_lost(node, exc)
        events, self.lost = events + self.lost, []
        return self._ended(events)

    def _ended(self, events: list[Event]) -> list[Event]:
        """``events``, once the Tasks they end are no longer counted on their nodes (and those whose start they
        report no longer wait)."""
        for event in events:
            if isinstance(event, Outcome):
                self.node_of.pop(event.job_id, None)
            self.waiting.discard(event.job_id)
        return events

    def _worker_lost(self, node: str, exc: Exception, unsent: Sequence[Assignment] = ()) -> None:
        """The worker of ``node`` is gone: its node is used no more, and its Tasks end now: those still waiting in
        a lane are taken out (handed back), those never sent could not start (``WORKER_UNREACHABLE``), the others
        ran, or may have, and were lost with it (``NODE_LOST``); a process of theirs that outlived the worker (as
        it may when only the worker died) is stopped first."""
        link = self.links.pop(node, None)
        if link is not None:
            self.workers.remove(link)
            log.error("the worker of node %s was lost (%s): its Jobs go back, the node is fenced", node, exc)
        ours = {job_id: task for job_id, (where, task) in self.node_of.items() if where == node}
        for job_id in ours:
            del self.node_of[job_id]
        stopped = stop_orphans(task.workdir for task in ours.values())
        if stopped:
            log.error("stopped %d Job process(es) that outlived the worker of node %s", stopped, node)
        why = f"could not run: the worker of node {node} was lost ({exc})"
        never_sent = {task.job_id for task, _, _ in unsent}
        waited = [job_id for job_id in ours if job_id in self.waiting]  # first: before their lane's holder ends
        self.waiting.difference_update(waited)
        self.lost += [Outcome(job_id, ours[job_id].name, None, "", killed=why) for job_id in waited]
        for job_id, task in ours.items():
            if job_id not in waited:
                cause = WORKER_UNREACHABLE if job_id in never_sent else NODE_LOST
                self.lost.append(Outcome(job_id, task.name, None, why, cause=cause))

    def wait(self, timeout: float) -> None:
        """Until a report arrives, a watched descriptor is readable, or ``timeout`` passes."""
        wait_any(self.workers, timeout, self.watched)

    def watch(self, fd: int) -> None:
        """Also end :meth:`wait` when ``fd`` becomes readable (the launcher's bell)."""
        self.watched.append(fd)

    def kill(self, job_id: int, why: str) -> None:
        """Stop one Task; its outcome arrives with its worker's next report."""
        node = self.node_of[job_id][0] if job_id in self.node_of else ""
        if node in self.links:
            try:
                self.links[node].send(TAG_KILL, (job_id, why))
            except WorkerLost as exc:
                self._worker_lost(node, exc)

    def terminate_all(self, why: str, grace: float) -> list[Event]:
        """Stop every worker's Tasks and the workers; gather every last outcome."""
        told = []
        for node, link in list(self.links.items()):
            try:
                link.send(TAG_STOP, (why, grace))
                told.append((node, link))
            except WorkerLost as exc:
                self._worker_lost(node, exc)
        outcomes: list[Event] = []
        for node, link in told:
            try:
                while True:
                    tag, batch = link.receive_wait()
                    outcomes += self._ended(batch)
                    if tag == TAG_FINAL:
                        break
            except WorkerLost as exc:
                self._worker_lost(node, exc)  # what it reported before is in: those Jobs are not stopped again
        if self.local is not None:
            self.local.wait()
        outcomes, self.lost = outcomes + self.lost, []
        return outcomes


def stop_orphans(workdirs: Iterable[str]) -> int:
    """Kill the process groups of the Jobs of these workdirs that run on in this launcher's session (their worker
    died but they did not: a Job must never run on unseen while it runs again elsewhere); how many. A Job's process
    is found by its ``BALSAM_JOB_WORKDIR`` (one per Job, absolute); it leads a process group of its own."""
    wanted = set(workdirs)
    if not wanted:
        return 0
    session, stopped = os.getsid(0), 0
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            leads = proc.pid == os.getpgid(proc.pid) and os.getsid(proc.pid) == session
            if leads and proc.environ().get("BALSAM_JOB_WORKDIR") in wanted:
                os.killpg(proc.pid, signal.SIGKILL)
                stopped += 1
    return stopped
