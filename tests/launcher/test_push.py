"""A launcher on a PostgreSQL site claims a Job the moment the store makes it runnable, idle or with free CPUs beside
a running Job: its wait ends on its site's channel, not on its poll interval (a minute here, to tell the two apart),
which stays the safety net. A stop ends that wait too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsamctl.launcher import serial_mode
from balsamctl.launcher.mpi_mode import LocalExecutor, MpiTaskBuilder
from balsamctl.launcher.nodes import Node
from balsamctl.launcher.pilot import Executor, Launcher, TaskBuilder
from balsamctl.launcher.serial_mode import SerialExecutor, SerialTaskBuilder
from balsamctl.schemas import JobState
from balsamctl.schemas.objects import Partition
from balsamctl.site.directory import SiteDirectory
from tests.support.launcher_ops import jobs_of, running_in_thread, wait_for
from tests.support.push import pg_site
from tests.support.site_ops import advance_to_runnable, app, apply_raws, batchjob, job

POLL_SEC = 60.0
AT_ONCE_SEC = 3.0


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteDirectory]:
    settings = {"launcher": {"poll_interval_sec": POLL_SEC, "idle_ttl_sec": 600.0}}
    with pg_site(tmp_path, "push", settings) as made:
        yield made


def launcher_in(site: SiteDirectory, job_mode: str) -> Launcher:
    """A launcher of one node of two CPUs, in ``job_mode``."""
    hosts = [Node("n0", (0, 1))]
    executor: Executor
    builder: TaskBuilder
    if job_mode == "serial":
        executor, builder = SerialExecutor.for_nodes(["n0"]), SerialTaskBuilder(site, hosts)
    else:
        executor, builder = LocalExecutor(), MpiTaskBuilder(site, hosts)
    return Launcher(
        site, "bj", Partition(job_mode=job_mode, num_nodes=1), 0, hosts, time.time() + 900, "l", executor, builder,
        accepts=serial_mode.accepts,
    )  # fmt: skip


def made_runnable_and_started(site: SiteDirectory, name: str) -> float:
    """Apply Job ``name``, make it runnable (the controller's pass: PREPROCESSED, and the launchers are told); how
    long until it ran."""
    apply_raws(site, job(name, "nap", f"w/{name}", node_packing_count=2))  # half a node: two fit side by side
    runnable = time.monotonic()
    advance_to_runnable(site)
    wait_for(f"{name} running", lambda: jobs_of(site)[name].status.state == JobState.RUNNING, timeout=2 * POLL_SEC)
    return time.monotonic() - runnable


@pytest.mark.parametrize("job_mode", ["mpi", "serial"])
def test_a_launcher_claims_a_job_the_moment_it_is_runnable(site: SiteDirectory, job_mode: str) -> None:
    apply_raws(site, app("nap", "sleep 60"), batchjob("bj"))
    launcher = launcher_in(site, job_mode)
    runner, crashed = running_in_thread(launcher)
    try:
        wait_for("the launcher registered", lambda: bool(site.store.launchers_of(site.site_id, "bj")))
        time.sleep(1.0)  # its first claim found nothing: it waits, for a minute at most

        assert made_runnable_and_started(site, "idle") < AT_ONCE_SEC, "an idle launcher: claimed at once"
        assert made_runnable_and_started(site, "busy") < AT_ONCE_SEC, "a free CPU beside a running Job: at once"
    finally:
        stopping = time.monotonic()
        launcher.stop()
        runner.join(timeout=2 * POLL_SEC)
    assert not runner.is_alive() and crashed == []
    assert time.monotonic() - stopping < 15.0, "a stop ends the wait at once"
