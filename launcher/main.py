"""The launcher entry point: find the allocation's nodes, split them into partitions, run one launcher each.

``python -m balsamctl.launcher --site PATH --batch-job NAME`` is what a rendered job script runs. With several
partitions it starts one launcher process per partition, each with its node slice in ``BALSAM_NODES``. A serial-mode
partition of several nodes re-launches itself under MPI (``--serial-ranks``): rank 0 runs the launcher, the other
ranks are workers.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from balsamctl.launcher import serial_mode
from balsamctl.launcher.mpi_command import build_mpi_command, site_flavor
from balsamctl.launcher.mpi_mode import LocalExecutor, MpiTaskBuilder
from balsamctl.launcher.nodes import Node, nodes_from_environment, split_nodes, this_node
from balsamctl.launcher.pilot import Executor, Launcher, TaskBuilder
from balsamctl.launcher.placement import NodePool, Request
from balsamctl.launcher.preflight import Problem, check_data_dir, check_mpi_command, check_nodes, first_problem
from balsamctl.launcher.worker import MpiLink, work
from balsamctl.schemas import BatchJob
from balsamctl.schemas.objects import Partition
from balsamctl.site.directory import SiteDirectory, SiteError
from balsamctl.store import NotFound, StoreUnavailable

log = logging.getLogger("balsamctl.launcher")


def stop_margin_sec(wall_time_min: int) -> float:
    """How long before the wall time a launcher stops, to record its Jobs before the scheduler kills it."""
    return min(60.0, wall_time_min * 60 * 0.1)


def main(argv: Sequence[str]) -> int:
    """Run the launcher(s) of one BatchJob; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m balsamctl.launcher")
    parser.add_argument("--site", required=True, type=Path)
    parser.add_argument("--batch-job", required=True)
    parser.add_argument("--partition", type=int, default=None, help="run only this partition (internal)")
    parser.add_argument("--deadline", type=float, default=None, help="epoch seconds to stop at (internal)")
    parser.add_argument("--serial-ranks", action="store_true", help="this process is one rank of a serial launcher")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    comm = _world() if args.serial_ranks else None
    if comm is not None and comm.Get_rank() > 0:  # a serial-mode worker: rank 0 alone talks to the store
        work(MpiLink(comm, 0))
        return 0
    try:
        site = SiteDirectory.load(args.site)
        bj = site.store.get_object(site.site_id, "BatchJob", args.batch_job).manifest
    except (SiteError, NotFound, *StoreUnavailable) as exc:  # no store to say it in: the allocation's output says it
        log.error("preflight failed (LauncherReady=False, StoreUnreachable): %s", exc)
        return 1
    assert isinstance(bj, BatchJob)
    deadline = args.deadline or time.time() + bj.spec.wall_time_min * 60 - stop_margin_sec(bj.spec.wall_time_min)
    sizes = site.settings.launcher
    nodes = nodes_from_environment(os.environ, site.settings)
    partitions = bj.spec.launcher_partitions()
    where = f"batchjob/{args.batch_job}"
    if args.partition is None and len(partitions) > 1:
        problem = check_nodes(nodes, bj.spec.num_nodes, where)
        if problem is not None:
            return _not_ready(site, args.batch_job, problem)
        return _fan_out(args.site, args.batch_job, [p.num_nodes for p in partitions], nodes, deadline)
    index = args.partition or 0
    part = partitions[index]
    elsewhere = site.settings.scheduler != "local" and [n.name for n in nodes] != [this_node(os.environ, site.settings)]
    relaunch = part.job_mode == "serial" and (len(nodes) > 1 or elsewhere) and not args.serial_ranks
    uses_mpi = relaunch or (part.job_mode == "mpi" and site_flavor(site.settings) != "local")
    problem = first_problem(
        check_nodes(nodes, part.num_nodes, where + (f" partition {index}" if len(partitions) > 1 else "")),
        check_data_dir(site.data_dir),
        check_mpi_command(sizes.mpi_command, os.environ) if uses_mpi else None,
    )
    if problem is not None:
        return _not_ready(site, args.batch_job, problem)
    if relaunch:
        return _relaunch_under_mpi(site, args.batch_job, index, nodes, deadline)
    launcher_id = f"{args.batch_job}.{index}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    if part.job_mode == "serial":
        executor: Executor = serial_mode.SerialExecutor.for_nodes([n.name for n in nodes], comm)
        builder: TaskBuilder = serial_mode.SerialTaskBuilder(site, nodes)
        accepts: Callable[[Request], str | None] = serial_mode.accepts
    else:
        executor, builder, accepts = LocalExecutor(), MpiTaskBuilder(site, nodes), lambda _req: None
    launcher = Launcher(
        site, args.batch_job, part, index, nodes, deadline, launcher_id, executor, builder, accepts=accepts
    )
    passed = f"launcher {launcher_id} ({part.job_mode} mode) passed its preflight on {','.join(n.name for n in nodes)}"
    try:
        site.store.set_batchjob_condition(
            site.site_id, args.batch_job, "LauncherReady", "True", "PreflightPassed", passed, unless="False"
        )
    except StoreUnavailable as exc:  # its heartbeats say it runs; the launcher fences itself if the store stays away
        log.warning("could not record its preflight in the store: %s", exc)
    return _run(launcher, part, nodes)


def _not_ready(site: SiteDirectory, batch_job: str, problem: Problem) -> int:
    """Record a failed preflight on the BatchJob (``LauncherReady=False``) and end: nothing was claimed."""
    log.error("preflight failed (LauncherReady=False, %s): %s", problem.reason, problem.message)
    try:
        site.store.set_batchjob_condition(
            site.site_id, batch_job, "LauncherReady", "False", problem.reason, problem.message
        )
    except StoreUnavailable as exc:
        log.error("could not record it in the store: %s", exc)
    return 1


def _run(launcher: Launcher, part: Partition, nodes: list[Node]) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: launcher.stop())
    log.info(
        "launcher %s: %s mode on %d node(s): %s",
        launcher.id,
        part.job_mode,
        len(nodes),
        ",".join(n.name for n in nodes),
    )
    gc.freeze()  # what start-up made (modules, the site, the store) lives as long as the launcher: never scanned
    launcher.run()
    return 0


def _world() -> Any:
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _relaunch_under_mpi(site: SiteDirectory, batch_job: str, index: int, nodes: list[Node], deadline: float) -> int:
    """Start this partition again as one rank per node (rank 0 the launcher, the rest workers)."""
    req = Request(num_nodes=len(nodes))
    placement = NodePool(nodes).place("workers", req)
    assert placement is not None
    command = shlex.join(_launcher_argv(site.path, batch_job, index, deadline, "--serial-ranks"))
    argv = build_mpi_command(
        site_flavor(site.settings), site.settings.launcher.mpi_command, placement, req, command, {}, {}
    )
    return _supervise([_start(argv, nodes)])


def _fan_out(site_path: Path, batch_job: str, sizes: list[int], nodes: list[Node], deadline: float) -> int:
    """Start one launcher process per partition, each with its own node slice."""
    return _supervise(
        [
            _start(_launcher_argv(site_path, batch_job, index, deadline), part_nodes)
            for index, part_nodes in enumerate(split_nodes(nodes, sizes))
        ]
    )


def _launcher_argv(site_path: Path, batch_job: str, index: int, deadline: float, *extra: str) -> list[str]:
    """The command line of one partition's launcher."""
    return [
        sys.executable,
        "-m",
        "balsamctl.launcher",
        "--site",
        str(site_path),
        "--batch-job",
        batch_job,
        "--partition",
        str(index),
        "--deadline",
        str(deadline),
        *extra,
    ]


def _start(argv: list[str], nodes: list[Node]) -> subprocess.Popen[bytes]:
    """Start ``argv`` with ``nodes`` as its allocation (``BALSAM_NODES``)."""
    return subprocess.Popen(argv, env={**os.environ, "BALSAM_NODES": ",".join(n.name for n in nodes)})


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait for child launchers, forwarding SIGTERM/SIGINT to them.

    A child killed by a signal takes the allocation down with it: the others are stopped and this process ends,
    so the allocation's end stops every Job left behind (the dead launcher's Jobs then run again elsewhere, once).
    """

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    running = list(children)
    while running:
        for child in list(running):
            if child.poll() is None:
                continue
            running.remove(child)
            if child.returncode < 0:
                log.error("a launcher died of signal %d: ending the allocation", -child.returncode)
                forward(signal.SIGTERM, None)
                for other in running:
                    other.wait()
                return 1
        time.sleep(0.2)
    return max(child.returncode for child in children)
