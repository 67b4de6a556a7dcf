"""The one place that builds the platform's MPI launch command for a placed Job.

The result is an argv list (never a shell string): the Job's shell command is one ``bash -c`` argument and every
launch parameter value is its own argv item, so no value is ever interpolated by a shell.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Literal

from balsamctl.launcher.placement import Placement, Request
from balsamctl.schemas.settings import MpiFlavor, SiteSettings

Flavor = MpiFlavor | Literal["local"]
_PARAM_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def site_flavor(settings: SiteSettings) -> Flavor:
    """The MPI flavor a site's launchers use: ``local`` without a batch scheduler (emulated nodes), else its setting."""
    return "local" if settings.scheduler == "local" else settings.launcher.mpi_flavor


def needs_mpi(req: Request) -> bool:
    """Whether the Job needs an MPI launcher: more than one rank in all."""
    return req.num_ranks > 1


def build_mpi_command(
    flavor: Flavor,
    mpi_command: str,
    placement: Placement,
    req: Request,
    command: str,
    launch_params: Mapping[str, str],
    env: Mapping[str, str],
) -> list[str]:
    """The argv that runs the shell ``command`` with ``req``'s ranks on ``placement``'s nodes.

    ``mpi_command`` is the launcher executable (``mpiexec``, ``srun``, a path, may carry extra words). ``env`` holds
    the variables to forward explicitly to every rank (the Job's own; the argv is meant to run with them set too).
    ``launch_params`` become ``--key value`` flags, underscores in keys turned into hyphens; an empty value gives
    a bare flag (``aprun`` takes its long options so: ``{bypass_app_transfer: ""}`` is ``--bypass-app-transfer``).
    ``local`` (emulated nodes on this machine) has no host list and passes no launch parameters.
    """
    for key in env:
        if not key or "=" in key:
            raise ValueError(f"invalid environment variable name {key!r}")
    ranks, per_node, hosts = str(req.num_ranks), str(req.ranks_per_node), placement.hosts
    shell = ["bash", "-c", command]
    params = _param_flags(launch_params)
    if flavor == "local":
        return [*shlex.split(mpi_command), "-n", ranks, *_hydra_env(env), *shell]
    if flavor == "mpich":
        return [
            *shlex.split(mpi_command), "-n", ranks, "-ppn", per_node, "-hosts", ",".join(hosts),
            *_hydra_env(env), *params, *shell,
        ]  # fmt: skip
    if flavor == "openmpi":
        return [
            *shlex.split(mpi_command), "-n", ranks, "--npernode", per_node,
            "--host", ",".join(f"{h}:{per_node}" for h in hosts),
            *(item for key, value in env.items() for item in ("-x", f"{key}={value}")),
            "--oversubscribe", *params, *shell,
        ]  # fmt: skip
    if flavor == "srun":
        return [
            *shlex.split(mpi_command), "-N", str(len(hosts)), "-n", ranks, "--ntasks-per-node", per_node,
            "--nodelist", ",".join(hosts), "--cpus-per-task", str(req.cpus_per_rank), _srun_export(env),
            *([] if "mpi" in launch_params else ["--mpi=pmi2"]), *params, *shell,
        ]  # fmt: skip
    if flavor == "aprun":  # Cray ALPS: -d counts hardware threads per rank, -j of them per core; nodes are nids
        return [
            *shlex.split(mpi_command), "-n", ranks, "-N", per_node, "-d", str(req.threads_per_rank),
            "-j", str(req.threads_per_core), "-L", ",".join(hosts),
            *(item for key, value in env.items() for item in ("-e", f"{key}={value}")), *params, *shell,
        ]  # fmt: skip
    raise ValueError(f"unknown MPI flavor {flavor!r}; expected mpich, openmpi, srun, aprun or local")


def _param_flags(launch_params: Mapping[str, str]) -> list[str]:
    """``{"cpu_bind": "depth"}`` -> ``["--cpu-bind", "depth"]``; an empty value gives the bare flag."""
    flags: list[str] = []
    for key, value in launch_params.items():
        if not _PARAM_KEY.match(key):
            raise ValueError(f"invalid launch parameter name {key!r}")
        flags.append("--" + key.replace("_", "-"))
        if value != "":
            flags.append(value)
    return flags


def _hydra_env(env: Mapping[str, str]) -> list[str]:
    """MPICH hydra's ``--env K V`` flags."""
    return [item for key, value in env.items() for item in ("--env", key, value)]


def _srun_export(env: Mapping[str, str]) -> str:
    """``--export=ALL,K=V,...``; a variable with a comma cannot be listed and reaches the tasks through ``ALL``."""
    pairs = [f"{key}={value}" for key, value in env.items() if "," not in key + value]
    return ",".join(["--export=ALL", *pairs])
