"""The launcher entry point: find the allocation's nodes, split them into partitions, run one launcher each."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from balsamctl.site import Site
from launcher.mpi_mode import MpiExecutor, MpiTaskBuilder
from launcher.nodes import Node, nodes_from_environment, split_nodes
from launcher.pilot import Launcher
from schemas import BatchJob

log = logging.getLogger("balsamctl.launcher")


def stop_margin_sec(wall_time_min: int) -> float:
    """How long before the wall time a launcher stops, to record its Jobs before the scheduler kills it."""
    return min(60.0, wall_time_min * 60 * 0.1)


def main(argv: Sequence[str]) -> int:
    """Run the launcher(s) of one BatchJob; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m launcher")
    parser.add_argument("--site", required=True, type=Path)
    parser.add_argument("--batch-job", required=True)
    parser.add_argument("--partition", type=int, default=None, help="run only this partition (internal)")
    parser.add_argument("--deadline", type=float, default=None, help="epoch seconds to stop at (internal)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    site = Site.load(args.site)
    bj = site.store.get_object(site.site_id, "BatchJob", args.batch_job).manifest
    assert isinstance(bj, BatchJob)
    deadline = args.deadline or time.time() + bj.spec.wall_time_min * 60 - stop_margin_sec(bj.spec.wall_time_min)
    nodes = nodes_from_environment(os.environ, site.settings.local_nodes)
    partitions = bj.spec.launcher_partitions()
    if args.partition is None and len(partitions) > 1:
        return _fan_out(args.site, args.batch_job, [p.num_nodes for p in partitions], nodes, deadline)
    index = args.partition or 0
    part = partitions[index]
    launcher_id = f"{args.batch_job}.{index}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    launcher = Launcher(
        site, args.batch_job, part, index, nodes, deadline, launcher_id, MpiExecutor(), MpiTaskBuilder(site)
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: launcher.stop())
    log.info(
        "launcher %s: %s mode on %d node(s): %s",
        launcher_id,
        part.job_mode,
        len(nodes),
        ",".join(n.name for n in nodes),
    )
    launcher.run()
    return 0


def _fan_out(site_path: Path, batch_job: str, sizes: list[int], nodes: list[Node], deadline: float) -> int:
    """Start one launcher process per partition, each with its own node slice; forward SIGTERM to them."""
    children: list[subprocess.Popen[bytes]] = []
    for index, part_nodes in enumerate(split_nodes(nodes, sizes)):
        env = {**os.environ, "BALSAM_NODES": ",".join(n.name for n in part_nodes)}
        argv = [
            sys.executable,
            "-m",
            "launcher",
            "--site",
            str(site_path),
            "--batch-job",
            batch_job,
            "--partition",
            str(index),
            "--deadline",
            str(deadline),
        ]
        children.append(subprocess.Popen(argv, env=env))

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    return max(codes)
