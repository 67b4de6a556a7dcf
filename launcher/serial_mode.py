"""The ``serial`` job mode: one worker per node, started with one MPI launch, fanned out with mpi4py.

Rank 0 alone talks to the store: it runs the common launcher loop (acquire, place, write back) and owns the
first node; every other rank is a worker that starts processes on its node (no Python per task) and reports
their outcomes back in batches. Only single-process Jobs run in this mode. A one-node partition needs no MPI.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

from balsamctl.site import Site
from launcher.command import job_variables, render_command
from launcher.placement import Placement, Request
from launcher.process import Outcome, ProcessGroup, Task, host_cpus, shell_argv
from schemas.objects import AppSpec
from store import JobRef

TAG_TASKS, TAG_KILL, TAG_STOP, TAG_OUTCOMES, TAG_FINAL = 1, 2, 3, 4, 5
REPORT_BATCH = 256
REPORT_EVERY_SEC = 0.005
TICK_SEC = 0.002


def accepts(req: Request) -> str | None:
    """Why serial mode cannot run a Job (it runs single-process, single-node Jobs only), or None."""
    if req.num_nodes == 1 and req.ranks_per_node == 1:
        return None
    return (
        f"serial mode runs single-process Jobs; this one needs {req.num_nodes} node(s) x {req.ranks_per_node} rank(s)"
    )


class SerialTaskBuilder:
    """Turns an acquired Job into a Task that a worker runs directly on its node."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.own_cpus = os.sched_getaffinity(0)  # read once, not per Job

    def __call__(self, ref: JobRef, app: AppSpec, placement: Placement) -> Task:
        """The Task of one Job."""
        workdir = self.site.workdir(ref.spec.workdir)
        own = job_variables(app, ref.name, workdir, placement.environment(Request.of(ref.spec)))
        argv = shell_argv(render_command(app, ref.spec.parameters))
        cpus = host_cpus(placement.cpu_ids, self.own_cpus)
        return Task(ref.id, ref.name, argv, str(workdir), tuple(own.items()), ref.attempts + 1, cpus)


def _start_all(group: ProcessGroup, tasks: list[Task]) -> list[Outcome]:
    failed = []
    for task in tasks:
        try:
            group.start(task)
        except OSError as exc:
            failed.append(Outcome(task.job_id, task.name, None, f"could not start: {exc}"))
    return failed


class SerialExecutor:
    """Rank 0's side: sends each Task to the rank that owns its node, gathers outcomes."""

    def __init__(self, comm: Any, node_names: list[str]) -> None:
        self.comm = comm
        self.rank_of = {name: rank for rank, name in enumerate(node_names)}
        self.local = ProcessGroup()
        self.outbox: dict[int, list[Task]] = defaultdict(list)
        self.remote: dict[int, int] = {}
        self.failed: list[Outcome] = []

    def start(self, task: Task, placement: Placement) -> None:
        """Queue one Task for the worker of its node (the head node's run here)."""
        rank = self.rank_of[placement.shares[0].node]
        if rank == 0:
            self.local.start(task)
        else:
            self.outbox[rank].append(task)
            self.remote[task.job_id] = rank

    def _send(self) -> None:
        for rank, tasks in self.outbox.items():
            if tasks:
                self.comm.send(tasks, dest=rank, tag=TAG_TASKS)
        self.outbox.clear()

    def poll(self) -> list[Outcome]:
        """Outcomes of the head node's Tasks and the workers' reports."""
        self._send()
        outcomes, self.failed = self.failed + self.local.poll(), []
        while self.comm.Iprobe(tag=TAG_OUTCOMES):
            outcomes += self.comm.recv(tag=TAG_OUTCOMES)
        for outcome in outcomes:
            self.remote.pop(outcome.job_id, None)
        return outcomes

    def wait(self, timeout: float) -> None:
        """Until a report arrives, a local process ends, or ``timeout`` passes."""
        self._send()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.comm.Iprobe(tag=TAG_OUTCOMES):
            if self.local.running and self.local.poll_ready(TICK_SEC):
                return
            if not self.local.running:
                time.sleep(TICK_SEC)

    def kill(self, job_id: int, why: str) -> Outcome | None:
        """Stop one Task; a worker's outcome arrives with its next report."""
        rank = self.remote.get(job_id)
        if rank is None:
            return self.local.kill(job_id, why)
        self.comm.send((job_id, why), dest=rank, tag=TAG_KILL)
        return None

    def terminate_all(self, why: str, grace: float) -> list[Outcome]:
        """Stop every worker's Tasks and the head node's; gather every last outcome."""
        self._send()
        workers = sorted(set(self.rank_of.values()) - {0})
        for rank in workers:
            self.comm.send((why, grace), dest=rank, tag=TAG_STOP)
        outcomes = self.failed + self.local.terminate_all(why, grace)
        for rank in workers:
            while True:
                status = _status()
                batch = self.comm.recv(source=rank, status=status)
                outcomes += batch
                if status.Get_tag() == TAG_FINAL:
                    break
        return outcomes


def _status() -> Any:
    from mpi4py import MPI

    return MPI.Status()


def worker(comm: Any) -> None:
    """A worker rank: start the Tasks rank 0 sends, report outcomes in batches, stop when told."""
    group = ProcessGroup()
    pending: list[Outcome] = []
    last_report = time.monotonic()
    status = _status()
    while True:
        while comm.Iprobe(source=0, status=status):
            tag = status.Get_tag()
            message = comm.recv(source=0, tag=tag)
            if tag == TAG_TASKS:
                pending += _start_all(group, message)
            elif tag == TAG_KILL:
                outcome = group.kill(*message)
                pending += [outcome] if outcome else []
            elif tag == TAG_STOP:
                why, grace = message
                comm.send(pending + group.poll() + group.terminate_all(why, grace), dest=0, tag=TAG_FINAL)
                return
        pending += group.poll()
        now = time.monotonic()
        if pending and (len(pending) >= REPORT_BATCH or now - last_report >= REPORT_EVERY_SEC):
            comm.send(pending, dest=0, tag=TAG_OUTCOMES)
            pending, last_report = [], now
        if not group.poll_ready(TICK_SEC) and not group.running:
            time.sleep(TICK_SEC)
