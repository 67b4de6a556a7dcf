"""Failure classes: who is to blame when a Job does not run, and what follows.

- A start the node or site refused (the workdir or output file refused by the file system, fork refused, the MPI
  launch command missing or not executable) is an *infrastructure* failure: the Job goes back (RUNNING ->
  RESTART_READY), never charged, with a ``StartFailed`` condition saying what and where.
- The App's own program missing or not executable, or a run that started and exited non-zero, is the Job's:
  RUN_ERROR, charged to ``max_retries``.
- Black-hole protection: ``infra_failure_limit`` infrastructure failures in a row fence the place off.

Real processes, a real store and the real launcher loop; the fork refusal is a real cgroup (pids controller).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError

from balsamctl.launcher import serial_mode
from balsamctl.launcher.health import FailureStreaks
from balsamctl.launcher.nodes import Node
from balsamctl.launcher.pilot import Launcher, result_of
from balsamctl.launcher.process import NODE_LOST, WORKER_UNREACHABLE, CannotStart, Outcome, ProcessGroup, Task
from balsamctl.launcher.serial_mode import SerialExecutor, SerialTaskBuilder
from balsamctl.launcher.worker import WorkerLost
from balsamctl.schemas import JobState
from balsamctl.schemas.objects import Partition
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import StoredObject
from tests.support.launcher_ops import jobs_of, launcher_on, read_only, running_in_thread, wait_for
from tests.support.site_ops import advance_to_runnable, app, apply_raws, batchjob, configure, job

REPO = Path(__file__).resolve().parents[2]
PIDS_CGROUP = Path("/sys/fs/cgroup/pids")


@pytest.fixture(params=["popen", "posix_spawn"])
def group(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ProcessGroup:
    """Both ways a Job is started (a launcher's Popen, serial mode's dedicated worker's posix_spawn)."""
    monkeypatch.chdir(tmp_path)
    return ProcessGroup(dedicated=request.param == "posix_spawn")


def refusal(group: ProcessGroup, task: Task) -> CannotStart:
    with pytest.raises(CannotStart) as refused:
        group.start(task)
    assert group.running == {}, "a Task that could not start is not followed"
    return refused.value


def test_a_workdir_the_file_system_refuses_is_the_sites_failure(group: ProcessGroup, tmp_path: Path) -> None:
    with read_only(tmp_path / "w") as workdir:
        refused = refusal(group, Task(1, "j", ("true",), str(workdir), (), 1))
    assert refused.cause == "WorkdirRefused"
    assert "Read-only file system" in str(refused)


def test_a_workdir_refused_for_its_own_sake_is_the_jobs_failure(group: ProcessGroup, tmp_path: Path) -> None:
    """A file where the Job's workdir should be: this Job's own doing, not its node's (it would refuse it on any
    node, and fence every one it tried)."""
    (tmp_path / "a-file").write_text("in the way")
    refused = refusal(group, Task(1, "j", ("true",), str(tmp_path / "a-file" / "w"), (), 1))
    assert refused.cause == ""
    assert "Not a directory" in str(refused)


def test_a_missing_or_unexecutable_mpi_command_is_the_allocations_failure(group: ProcessGroup, tmp_path: Path) -> None:
    missing = refusal(
        group, Task(1, "j", (str(tmp_path / "no-mpiexec"), "-n", "2", "true"), str(tmp_path), (), 1, (), True)
    )
    assert missing.cause == "MPICommandNotFound"
    plain = tmp_path / "mpiexec"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    assert refusal(group, Task(2, "j", (str(plain), "true"), str(tmp_path), (), 1, (), True)).cause == (
        "MPICommandNotExecutable"
    )


def test_the_apps_own_program_missing_or_unexecutable_is_the_jobs_failure(group: ProcessGroup, tmp_path: Path) -> None:
    assert refusal(group, Task(1, "j", ("no-such-program-here",), str(tmp_path), (), 1)).cause == ""
    plain = tmp_path / "sim"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    assert refusal(group, Task(2, "j", (str(plain),), str(tmp_path), (), 1)).cause == ""


FORK_REFUSED = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from balsamctl.launcher.process import CannotStart, ProcessGroup, Task
    cgroup = Path(sys.argv[1])
    (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    (cgroup / "pids.max").write_text((cgroup / "pids.current").read_text())  # no process more
    group = ProcessGroup(dedicated=sys.argv[3] == "posix_spawn")
    try:
        group.start(Task(1, "j", ("true",), sys.argv[2], (), 1))
    except CannotStart as exc:
        print(exc.cause, exc, sep="|")
    else:
        print("started")
    """
)


@pytest.mark.parametrize("how", ["popen", "posix_spawn"])
def test_a_node_that_cannot_fork_is_the_allocations_failure(tmp_path: Path, how: str) -> None:
    """A real fork refusal: the process starting the Job sits in a cgroup that allows it no more processes."""
    cgroup = PIDS_CGROUP / f"balsamctl-test-{os.getpid()}-{how}"
    cgroup.mkdir()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", FORK_REFUSED, str(cgroup), str(tmp_path), how],
            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False,
        )  # fmt: skip
    finally:
        cgroup.rmdir()
    assert proc.returncode == 0, proc.stderr
    cause, _, message = proc.stdout.strip().partition("|")
    assert cause == "ForkRefused", proc.stdout
    assert "Resource temporarily unavailable" in message


def test_an_infrastructure_failure_goes_back_uncharged_and_says_where() -> None:
    outcome = Outcome(7, "j", None, "could not start: [Errno 11] Resource temporarily unavailable", cause="ForkRefused")
    result = result_of(outcome, where="n2")
    assert result.state == JobState.RESTART_READY and result.reason == "StartFailed"
    assert result.condition is not None
    assert result.condition.type == "StartFailed" and result.condition.reason == "ForkRefused"
    assert result.message is not None and "on n2" in result.message and "not charged" in result.message
    assert result_of(outcome, stopping="launcher stopped (signal)", where="n2").state == JobState.RESTART_READY
    own = result_of(Outcome(7, "j", None, "could not start: [Errno 2] No such file or directory: 'sim'"))
    assert own.state == JobState.RUN_ERROR and own.condition is None  # the Job's own: charged


@given(st.integers(1, 5), st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=60))
def test_a_place_is_due_to_be_fenced_after_limit_failures_in_a_row(limit: int, events: list[tuple[str, bool]]) -> None:
    streaks = FailureStreaks(limit)
    in_a_row: dict[str, int] = {}
    for place, failed in events:
        if failed:
            in_a_row[place] = in_a_row.get(place, 0) + 1
            assert streaks.failed(place) == (in_a_row[place] >= limit), (place, in_a_row)
        else:
            streaks.ran(place)
            in_a_row[place] = 0


@pytest.fixture
def site(tmp_path: Path) -> SiteDirectory:
    made = init_site(tmp_path / "site", "classes", register=False)
    return configure(made, {"launcher": {"idle_ttl_sec": 30.0, "poll_interval_sec": 0.05}})


def events_of(site: SiteDirectory, name: str) -> list[dict[str, object]]:
    return site.store.events((site.site_id,), kind="Job", name=name)


@contextlib.contextmanager
def refused_workdir(site: SiteDirectory, name: str) -> Iterator[Path]:
    """A runnable Job ``name`` of BatchJob ``bj``'s site whose workdir, made by stage-in, then sits on a read-only
    file system while the block runs: the file system refuses its output (EROFS) when a launcher starts it."""
    apply_raws(site, app("a", "true"), job(name, "a", f"w/{name}"), batchjob("bj"))
    advance_to_runnable(site)
    with read_only(site.data_dir / "w" / name) as workdir:
        yield workdir


def test_a_launcher_whose_node_refuses_every_start_drains_and_ends_charging_nothing(site: SiteDirectory) -> None:
    """mpi mode: every Job starts on the head node, so infra_failure_limit refusals in a row there leave the
    launcher no usable node: it hands back what it holds and ends long before its idle TTL. Before failure
    classes the Job was RUN_ERROR, charged, FAILED at once (max_retries 0)."""
    with refused_workdir(site, "victim"):
        launcher = launcher_on(site, cpus=2, seconds_left=300)
        runner, crashed = running_in_thread(launcher)
        runner.join(timeout=20)
    assert not runner.is_alive(), "the launcher did not end: it should drain once it has no usable node"
    assert crashed == []
    victim = jobs_of(site)["victim"]
    assert victim.status.state == JobState.RESTART_READY and victim.status.failures == 0
    [condition] = [c for c in victim.status.conditions if c.type == "StartFailed"]
    assert condition.reason == "WorkdirRefused" and "Read-only file system" in condition.message
    failed = [e for e in events_of(site, "victim") if e["reason"] == "StartFailed"]
    assert len(failed) == site.settings.launcher.infra_failure_limit
    bj = site.store.get_object(site.site_id, "BatchJob", "bj").manifest
    [fenced] = [c for c in bj.status.conditions if c.type == "NodesHealthy"]
    assert fenced.status == "False" and fenced.reason == "NoUsableNode"
    assert "WorkdirRefused" in fenced.message and "drains and ends" in fenced.message
    assert launcher.status().claimed_jobs == 0
    claimable = site.store.claimable_wall_times(site.site_id, {}, longer_than=-1)
    assert [job_id for job_id, _ in claimable] == [site.store.get_object(site.site_id, "Job", "victim").id]


def test_a_job_that_starts_again_loses_its_start_failure_condition(site: SiteDirectory) -> None:
    site = configure(site, {"launcher": {"infra_failure_limit": 1}})
    with refused_workdir(site, "j1"):
        first = launcher_on(site, cpus=2, seconds_left=300)
        runner, crashed = running_in_thread(first)
        runner.join(timeout=20)
    assert not runner.is_alive() and crashed == []
    assert any(c.type == "StartFailed" for c in jobs_of(site)["j1"].status.conditions)
    # the file system is mended: the Job runs, and its condition goes
    second = launcher_on(site, cpus=2, seconds_left=300)
    second.id = "l2"
    runner, crashed = running_in_thread(second)
    wait_for("j1 finished", lambda: jobs_of(site)["j1"].status.state == JobState.JOB_FINISHED)
    second.stop()
    runner.join(timeout=20)
    finished = jobs_of(site)["j1"]
    assert finished.status.failures == 0
    assert [c.type for c in finished.status.conditions if c.type == "StartFailed"] == []


def test_a_worker_lost_with_a_running_job_stops_it_and_counts_a_crash_not_a_failure(site: SiteDirectory) -> None:
    """serial mode: the worker of the launcher's node dies (SIGKILL) while its Job runs. The Job's process must not
    run on unseen (it is stopped), the run counts as lost with its worker (a crash, not a failure), and the node is
    fenced: the launcher has no other, so it ends. Before, the launcher crashed on the dead link and the Job ran on."""
    apply_raws(site, app("long", "sleep 120"), job("j1", "long", "w/j1"), batchjob("bj"))
    advance_to_runnable(site)
    hosts = [Node("n0", (0, 1))]
    executor = SerialExecutor.for_nodes(["n0"])
    launcher = Launcher(
        site, "bj", Partition(job_mode="serial", num_nodes=1), 0, hosts, time.time() + 300, "l",
        executor, SerialTaskBuilder(site, hosts), accepts=serial_mode.accepts,
    )  # fmt: skip
    runner, crashed = running_in_thread(launcher)
    wait_for("j1 running", lambda: jobs_of(site)["j1"].status.state == JobState.RUNNING)
    assert executor.local is not None
    worker = psutil.Process(executor.local.pid)
    wait_for("the Job's process", lambda: any(p.cmdline() == ["sleep", "120"] for p in worker.children()))
    [sleeper] = [p for p in worker.children() if p.cmdline() == ["sleep", "120"]]
    worker.kill()
    runner.join(timeout=20)
    assert not runner.is_alive() and crashed == []
    assert not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE, "the orphaned Job ran on"
    j1 = jobs_of(site)["j1"]
    assert j1.status.state == JobState.RUN_TIMEOUT
    assert (j1.status.failures, j1.status.crashes) == (0, 1)
    bj = site.store.get_object(site.site_id, "BatchJob", "bj").manifest
    [fenced] = [c for c in bj.status.conditions if c.type == "NodesHealthy"]
    assert fenced.reason == "NoUsableNode" and "n0" in fenced.message and "worker was lost" in fenced.message


class DeadLink:
    """The link of a worker that is gone: every send and receive says so."""

    def __init__(self, sends: bool = True) -> None:
        self.sends = sends

    def send(self, tag: int, payload: object) -> None:
        if not self.sends:
            raise WorkerLost("the local link closed: end of file")

    def receive(self) -> tuple[int, object] | None:
        raise WorkerLost("the local link closed: end of file")

    def receive_wait(self) -> tuple[int, object]:
        raise WorkerLost("the local link closed: end of file")

    def ready(self) -> bool:
        return True

    def fileno(self) -> int | None:
        return None


def test_a_lost_workers_waiting_tasks_are_handed_back_before_its_running_ones_end() -> None:
    """Sent, then the worker is lost: the Task waiting in a lane comes back first, taken out (no cause: the
    launcher hands it back, never records it), then the running one as a run lost with the worker."""
    executor = SerialExecutor({"n0": DeadLink()})
    running, waiting = (Task(i, f"j{i}", ("true",), "/w", (), 1) for i in (1, 2))
    executor.start([("n0", (running, 1, False)), ("n0", (waiting, 1, True))])
    first, second = executor.poll()
    assert isinstance(first, Outcome) and isinstance(second, Outcome)
    assert (first.job_id, first.cause, bool(first.killed)) == (2, "", True)
    assert (second.job_id, second.cause) == (1, NODE_LOST)
    assert executor.links == {} and executor.poll() == []


def test_tasks_that_never_reached_a_lost_worker_could_not_start() -> None:
    executor = SerialExecutor({"n0": DeadLink(sends=False)})
    fresh, queued = (Task(i, f"j{i}", ("true",), "/w", (), 1) for i in (1, 2))
    executor.start([("n0", (fresh, 1, False)), ("n0", (queued, 1, True))])
    outcomes = {o.job_id: o for o in executor.poll() if isinstance(o, Outcome)}
    assert outcomes[1].cause == WORKER_UNREACHABLE and outcomes[2].killed and not outcomes[2].cause
    result = result_of(outcomes[1], where="n0")
    assert result.state == JobState.RESTART_READY
    assert result.condition is not None and result.condition.reason == WORKER_UNREACHABLE


def test_an_app_the_store_cannot_read_yet_delays_its_job_and_leaks_nothing(
    site: SiteDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store fails the launcher's first read of a Job's App: the Job waits in the queue (its resources freed)
    and starts on a later turn, once; the launcher goes on. Before, the error left the Job placed but never started
    (its CPUs taken for good) and taken off the queue."""
    apply_raws(site, app("a", "true"), job("j1", "a", "w/j1"), batchjob("bj"))
    advance_to_runnable(site)
    read = site.store.get_object
    failed: list[str] = []

    def flaky(site_id: int, kind: str, name: str) -> StoredObject:
        if kind == "App" and not failed:
            failed.append(name)
            raise OperationalError("SELECT ...", {}, Exception("database is locked"))
        return read(site_id, kind, name)

    monkeypatch.setattr(site.store, "get_object", flaky)
    launcher = launcher_on(site, cpus=2, seconds_left=300)
    runner, crashed = running_in_thread(launcher)
    wait_for("j1 finished", lambda: jobs_of(site)["j1"].status.state == JobState.JOB_FINISHED)
    launcher.stop()
    runner.join(timeout=20)
    assert failed == ["a"] and crashed == []
    assert [e["reason"] for e in events_of(site, "j1")].count("Started") == 1
    assert launcher.pool.placements == {} and launcher.queue == []
