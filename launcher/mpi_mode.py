"""The ``mpi`` job mode: the launcher on the head node starts each Job with the platform's MPI launch command."""

from __future__ import annotations

import os
from collections.abc import Sequence

from balsamctl.launcher.command import job_variables, render_command
from balsamctl.launcher.lanes import Assignment, Event, ProcessLanes
from balsamctl.launcher.mpi_command import build_mpi_command, needs_mpi, site_flavor
from balsamctl.launcher.nodes import Node, this_node
from balsamctl.launcher.placement import Placement, Request
from balsamctl.launcher.process import Pinning, ProcessGroup, Task, shell_argv
from balsamctl.schemas.objects import AppSpec
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import JobRef


class MpiTaskBuilder:
    """Turns an acquired Job into a Task: its App's command, through MPI when it needs more than one rank."""

    def __init__(self, site: SiteDirectory, nodes: Sequence[Node]) -> None:
        self.site = site
        self.flavor = site_flavor(site.settings)
        self.mpi_command = site.settings.launcher.mpi_command
        self.here = this_node(os.environ, site.settings)
        self.pinning = Pinning(nodes)
        self.gpu_variables = site.settings.launcher.gpu_visible_devices

    def __call__(self, ref: JobRef, app: AppSpec, placement: Placement) -> Task:
        """The Task of one Job."""
        workdir = self.site.workdir(ref.spec.workdir)
        command = render_command(app, ref.spec.parameters)
        req = Request.of(ref.spec)
        own = job_variables(app, ref.name, workdir, placement.environment(req, self.gpu_variables))
        remote = self.flavor != "local" and placement.hosts != [self.here]
        cpus: tuple[int, ...] = ()
        via_mpi = needs_mpi(req) or remote  # an MPI launch reaches the Job's ranks and nodes (binding: launch_params)
        if via_mpi:
            argv = tuple(
                build_mpi_command(self.flavor, self.mpi_command, placement, req, command, ref.spec.launch_params, own)
            )
        else:
            argv, cpus = shell_argv(command), self.pinning.cpus(placement)
        return Task(ref.id, ref.name, argv, str(workdir), tuple(own.items()), ref.attempts + 1, cpus, via_mpi)


class LocalExecutor:
    """Runs every Task on this host (the head node: its argv holds the MPI launch when the Job needs one)."""

    def __init__(self) -> None:
        self.group = ProcessGroup()
        self.lanes = ProcessLanes(self.group)

    def start(self, batch: Sequence[tuple[str, Assignment]]) -> None:
        """Start Tasks, or queue them on their lanes."""
        self.lanes.add(assignment for _node, assignment in batch)

    def poll(self) -> list[Event]:
        """Outcomes of the Tasks that ended or could not start, and the starts of queued ones."""
        return self.lanes.poll()

    def wait(self, timeout: float) -> None:
        """Until a Task ends, a watched descriptor is readable, or ``timeout`` passes."""
        self.group.wait(timeout)

    def watch(self, fd: int) -> None:
        """Also end :meth:`wait` when ``fd`` becomes readable (the launcher's bell)."""
        self.group.watch(fd)

    def kill(self, job_id: int, why: str) -> None:
        """Stop one Task now (its outcome comes with the next poll)."""
        self.lanes.kill(job_id, why)

    def terminate_all(self, why: str, grace: float) -> list[Event]:
        """Stop every Task."""
        return self.lanes.stop(why, grace)
