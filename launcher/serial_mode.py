"""The ``serial`` job mode: one worker per node (:mod:`launcher.worker`), fanned out with mpi4py.

Rank 0 alone talks to the store: it runs the common launcher loop (acquire, place, write back) and hands each
Job to the worker of its node: a local worker process on its own node, MPI rank ``r`` on node ``r`` (started
with one MPI launch). Workers start processes on their node (no Python per task), start the Jobs queued on a
lane the moment the one before ends (:mod:`launcher.lanes`), and report outcomes and starts back as they come
(together when several happen at once). Only single-process Jobs run in this mode. A one-node partition needs
no MPI.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from balsamctl.site import Site
from launcher.command import job_variables, render_command
from launcher.lanes import Assignment, Event
from launcher.nodes import Node
from launcher.placement import Placement, Request
from launcher.process import Outcome, Pinning, Task, shell_argv
from launcher.worker import (
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
from schemas.objects import AppSpec
from store import JobRef

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

    def __init__(self, site: Site, nodes: Sequence[Node]) -> None:
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
        self.links = dict(links)  # node name -> its worker's link
        self.workers = list(self.links.values())  # one per node
        self.local = local
        self.node_of: dict[int, str] = {}  # job id -> node, while it runs

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
        for node, assignment in batch:
            by_node.setdefault(node, []).append(assignment)
            self.node_of[assignment[0].job_id] = node
        for node, assignments in by_node.items():
            self.links[node].send(TAG_TASKS, assignments)

    def poll(self) -> list[Event]:
        """What the workers reported: outcomes, and the starts of queued Tasks."""
        events: list[Event] = []
        for link in self.workers:
            while (message := link.receive()) is not None:
                events += message[1]
        for event in events:
            if isinstance(event, Outcome):
                self.node_of.pop(event.job_id, None)
        return events

    def wait(self, timeout: float) -> None:
        """Until a report arrives or ``timeout`` passes."""
        wait_any(self.workers, timeout)

    def kill(self, job_id: int, why: str) -> None:
        """Stop one Task; its outcome arrives with its worker's next report."""
        node = self.node_of.get(job_id)
        if node is not None:
            self.links[node].send(TAG_KILL, (job_id, why))

    def terminate_all(self, why: str, grace: float) -> list[Event]:
        """Stop every worker's Tasks and the workers; gather every last outcome."""
        told = []
        for node, link in self.links.items():
            try:
                link.send(TAG_STOP, (why, grace))
                told.append((node, link))
            except WorkerLost as exc:
                log.error("the worker of node %s is gone (%s): its Jobs' ends are not known here", node, exc)
        outcomes: list[Event] = []
        for node, link in told:
            try:
                while True:
                    tag, batch = link.receive_wait()
                    outcomes += batch
                    if tag == TAG_FINAL:
                        break
            except WorkerLost as exc:
                log.error("the worker of node %s was lost while stopping (%s)", node, exc)
        if self.local is not None:
            self.local.wait()
        return outcomes
