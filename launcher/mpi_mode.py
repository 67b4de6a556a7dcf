"""The ``mpi`` job mode: the launcher on the head node starts each Job with the platform's MPI launch command."""

from __future__ import annotations

from balsamctl.site import Site
from launcher.command import job_variables, render_command
from launcher.mpi_command import build_mpi_command, needs_mpi
from launcher.placement import Placement, Request
from launcher.process import Outcome, ProcessGroup, Task, shell_argv
from schemas.objects import AppSpec
from store import JobRef


class MpiExecutor:
    """Every Job runs as a process group on the head node; its MPI launch reaches the other nodes."""

    def __init__(self) -> None:
        self.group = ProcessGroup()

    def start(self, task: Task, placement: Placement) -> None:
        """Start one Task (its argv already holds the MPI launch when it needs one)."""
        self.group.start(task)

    def poll(self) -> list[Outcome]:
        """Outcomes of the Tasks that ended."""
        return self.group.poll()

    def kill(self, job_id: int, why: str) -> Outcome | None:
        """Stop one Task now."""
        return self.group.kill(job_id, why)

    def terminate_all(self, why: str, grace: float) -> list[Outcome]:
        """Stop every Task."""
        return self.group.terminate_all(why, grace)


class MpiTaskBuilder:
    """Turns an acquired Job into a Task: its App's command, through MPI when it needs more than one rank."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.flavor = "local" if site.settings.scheduler == "local" else site.settings.launcher.mpi_flavor
        self.mpi_command = site.settings.launcher.mpi_command

    def __call__(self, ref: JobRef, app: AppSpec, placement: Placement) -> Task:
        """The Task of one Job."""
        workdir = self.site.workdir(ref.spec.workdir)
        command = render_command(app, ref.spec.parameters)
        req = Request.of(ref.spec)
        own = job_variables(app, ref.name, workdir, placement.environment(req))
        if needs_mpi(req):
            argv = tuple(
                build_mpi_command(self.flavor, self.mpi_command, placement, req, command, ref.spec.launch_params, own)
            )
        else:
            argv = shell_argv(command)
        return Task(ref.id, ref.name, argv, str(workdir), tuple(own.items()), ref.attempts)
