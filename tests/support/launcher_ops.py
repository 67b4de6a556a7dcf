"""Launcher helpers: a real pilot Launcher on a site, run in a thread; its Jobs; waiting; read-only mounts."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from balsamctl.launcher.mpi_mode import LocalExecutor, MpiTaskBuilder
from balsamctl.launcher.nodes import Node
from balsamctl.launcher.pilot import Launcher
from balsamctl.schemas.objects import Job, Partition
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Selector


def launcher_on(site: SiteDirectory, cpus: int, seconds_left: float, nodes: int = 1) -> Launcher:
    """A launcher of ``nodes`` nodes of ``cpus`` CPUs on this host, stopping ``seconds_left`` from now."""
    hosts = [Node(f"n{i}", tuple(range(i * cpus, (i + 1) * cpus))) for i in range(nodes)]
    return Launcher(
        site, "bj", Partition(job_mode="mpi", num_nodes=nodes), 0, hosts, time.time() + seconds_left, "l",
        LocalExecutor(), MpiTaskBuilder(site, hosts),
    )  # fmt: skip


def jobs_of(site: SiteDirectory) -> dict[str, Job]:
    found = site.store.list_objects(Selector("Job", (site.site_id,)))
    return {o.manifest.metadata.name: o.manifest for o in found if isinstance(o.manifest, Job)}


def running_in_thread(launcher: Launcher) -> tuple[threading.Thread, list[BaseException]]:
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            launcher.run()
        except BaseException as exc:  # the test reports it
            crashed.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    return runner, crashed


def wait_for(what: str, probe: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` as an empty, read-only file system (a tmpfs mounted there) while the block runs."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
