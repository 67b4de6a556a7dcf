"""Preflight: before a launcher claims anything, it checks what it needs, so a broken allocation burns no Job.

Checked in order: the node list read from the scheduler's environment (non-empty, as many nodes as the BatchJob's
partition asks for), the site's ``data/`` (a file can be made there), and the MPI launch command when the job mode
needs one (it resolves: an executable path, or a name on ``PATH``). The store was reached already: the launcher
read its BatchJob from it. A failed check is a :class:`Problem` with a CamelCase reason; the launcher records it as
the BatchJob's ``LauncherReady=False`` condition and ends, so the allocation does not idle for its wall time.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from balsamctl.launcher.nodes import Node


@dataclass(frozen=True)
class Problem:
    """A failed check: ``reason`` (CamelCase, the condition's) and a message saying what and where."""

    reason: str
    message: str


def check_nodes(nodes: Sequence[Node], num_nodes: int, where: str) -> Problem | None:
    """The allocation's node list is non-empty and holds the ``num_nodes`` the partition asks for."""
    if not nodes:
        return Problem("NoNodes", f"{where}: the scheduler's environment names no node")
    if len(nodes) != num_nodes:
        names = ",".join(n.name for n in nodes)
        return Problem(
            "NodeListMismatch",
            f"{where} asks for {num_nodes} node(s); the scheduler's environment names {len(nodes)}: {names}",
        )
    return None


def check_data_dir(data_dir: Path) -> Problem | None:
    """A file can be made in the site's ``data/`` (where every Job's workdir and output go)."""
    try:
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".preflight-"):
            pass
    except OSError as exc:
        return Problem("DataNotWritable", f"the site's data directory {data_dir} is not writable here: {exc}")
    return None


def check_mpi_command(mpi_command: str, env: Mapping[str, str]) -> Problem | None:
    """``launcher.mpi_command``'s program resolves: an executable file at its path, or found on ``PATH``."""
    try:
        words = shlex.split(mpi_command)
    except ValueError as exc:
        return Problem("MPICommandInvalid", f"launcher.mpi_command {mpi_command!r} cannot be read: {exc}")
    program = words[0] if words else ""
    search = env.get("PATH", os.defpath)
    if "/" in program:
        if not os.path.isfile(program):
            return Problem("MPICommandNotFound", f"launcher.mpi_command {program!r}: no such file")
        if not os.access(program, os.X_OK):
            return Problem("MPICommandNotExecutable", f"launcher.mpi_command {program!r} is not executable")
        return None
    if not program or shutil.which(program, path=search) is None:
        return Problem("MPICommandNotFound", f"launcher.mpi_command {program!r} is not on PATH (searched {search})")
    return None


def first_problem(*problems: Problem | None) -> Problem | None:
    """The first failed check of several, or None when every one passed."""
    return next((p for p in problems if p is not None), None)
