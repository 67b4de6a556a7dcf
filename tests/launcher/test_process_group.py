"""ProcessGroup: each Task's outcome reported once, per-attempt output kept, no output file held by the launcher;
the same with Popen (a launcher) and with posix_spawn (serial mode's dedicated local worker); the local worker
itself over its socket link."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from balsamctl.launcher import main as launcher_main
from balsamctl.launcher import worker as launcher_worker
from balsamctl.launcher.lanes import Event
from balsamctl.launcher.process import CannotStart, Outcome, ProcessGroup, Task
from balsamctl.launcher.worker import TAG_FINAL, TAG_KILL, TAG_OUTCOMES, TAG_READY, TAG_STOP, TAG_TASKS, start_local
from balsamctl.site.directory import SiteDirectory


@pytest.fixture(params=["popen", "posix_spawn"])
def group(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ProcessGroup:
    """Both ways of starting Jobs; the dedicated one changes this process's working directory (restored after)."""
    monkeypatch.chdir(tmp_path)
    return ProcessGroup(dedicated=request.param == "posix_spawn")


def task(job_id: int, workdir: Path, command: str, attempt: int = 1) -> Task:
    return Task(job_id, f"j{job_id}", ("sh", "-c", command), str(workdir), (("JOB_VAR", str(job_id)),), attempt)


def run_all(group: ProcessGroup) -> list[Outcome]:
    """Outcomes until every running Task ended."""
    outcomes: list[Outcome] = []
    while group.running:
        group.wait(1.0)
        outcomes += group.poll()
    return outcomes


def test_every_task_ends_once_with_its_return_code_and_tail(group: ProcessGroup, tmp_path: Path) -> None:
    commands = {1: "true", 2: "echo oops; exit 3", 3: 'test "$JOB_VAR" = 3', 4: "exit 1"}
    commands[5] = 'test "$(readlink /proc/$$/fd/0)" = /dev/null'  # stdin: nothing to read
    for job_id, command in commands.items():
        group.start(task(job_id, tmp_path / "w" / str(job_id), command))
    outcomes = run_all(group)
    assert sorted((o.job_id, o.return_code) for o in outcomes) == [(1, 0), (2, 3), (3, 0), (4, 1), (5, 0)]
    assert next(o.tail for o in outcomes if o.job_id == 2) == "oops\n"
    assert group.poll() == []
    assert group.job_of == {}


def test_a_later_attempt_keeps_the_earlier_attempts_output(group: ProcessGroup, tmp_path: Path) -> None:
    group.start(task(1, tmp_path, "echo first", attempt=1))
    run_all(group)
    group.start(task(1, tmp_path, "echo second", attempt=2))
    run_all(group)
    assert (tmp_path / "job.out.1").read_text() == "first\n"
    assert (tmp_path / "job.out").read_text() == "second\n"


def test_the_launcher_holds_no_output_file_open_while_a_task_runs(group: ProcessGroup, tmp_path: Path) -> None:
    group.start(task(1, tmp_path, "sleep 30"))
    try:
        held = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
        assert str(tmp_path / "job.out") not in held
    finally:
        outcome = group.kill(1, "test over")
    assert outcome is not None and outcome.killed == "test over"


def test_a_task_starts_in_its_workdir_with_default_signals_and_its_own_path(
    group: ProcessGroup, tmp_path: Path
) -> None:
    """The workdir is made if stage-in did not; SIGPIPE is not left ignored (Python ignores it); a bare command
    is looked up on the Job's own PATH; a command found nowhere cannot start (OSError), as with Popen."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "only-here").write_text("#!/bin/sh\npwd\ngrep SigIgn /proc/$$/status\n")
    (bin_dir / "only-here").chmod(0o755)
    work = tmp_path / "made" / "by" / "start"
    path = f"{bin_dir}:{os.environ['PATH']}"
    group.start(Task(1, "j1", ("only-here",), str(work), (("PATH", path),), 1))
    [outcome] = run_all(group)
    assert outcome.return_code == 0
    cwd, ignored = (work / "job.out").read_text().splitlines()
    assert cwd == str(work)
    assert int(ignored.split()[1], 16) & (1 << (signal.SIGPIPE - 1)) == 0, f"SIGPIPE left ignored: {ignored}"
    with pytest.raises(CannotStart, match="No such file") as refused:
        group.start(Task(2, "j2", ("no-such-command-here",), str(tmp_path / "w2"), (), 1))
    assert refused.value.cause == ""  # the App's own program is missing: the Job's failure
    assert group.running == {}


def test_the_local_worker_runs_what_it_is_sent_and_stops_its_jobs_when_its_launcher_is_gone(tmp_path: Path) -> None:
    link, proc = start_local()
    try:
        assert link.receive_wait() == (TAG_READY, None), "a worker says it is ready before anything else"
        first = [task(1, tmp_path / "a", "ls /proc/self/fd > fds"), task(2, tmp_path / "b", "exit 4")]
        link.send(TAG_TASKS, [(t, lane, False) for lane, t in enumerate(first, 1)])
        outcomes: list[Outcome] = []
        while len(outcomes) < 2:
            tag, batch = link.receive_wait()
            assert tag == TAG_OUTCOMES
            outcomes += batch
        assert sorted((o.job_id, o.return_code) for o in outcomes) == [(1, 0), (2, 4)]
        fds = (tmp_path / "a" / "fds").read_text().split()
        assert sorted(fds, key=int)[:3] == ["0", "1", "2"] and len(fds) == 4, f"a Job inherited {fds}"  # + ls's own
        link.send(TAG_TASKS, [(task(3, tmp_path / "c", "echo $$ > pid; exec sleep 60"), 3, False)])
        pid_file = tmp_path / "c" / "pid"
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
        job_pid = int(pid_file.read_text())
        link.conn.close()  # the launcher is gone (as if SIGKILLed): its worker stops the Job and ends
        assert proc.wait(timeout=10) == 0
        with pytest.raises(ProcessLookupError):
            os.kill(job_pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("signalled", [False, True])
def test_the_local_worker_reports_every_last_outcome_when_stopped(tmp_path: Path, signalled: bool) -> None:
    """Told to stop, it stops its Jobs and reports them; it outlives the SIGTERM that ends an allocation (its
    launcher, signalled too, then tells it to stop)."""
    link, proc = start_local()
    try:
        assert link.receive_wait() == (TAG_READY, None)
        sent = [(task(1, tmp_path / "a", "sleep 60"), 1, False), (task(2, tmp_path / "b", "true"), 1, True)]
        link.send(TAG_TASKS, sent)
        if signalled:
            time.sleep(0.2)  # its signal handler is in place once it has taken the Tasks
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            assert proc.poll() is None, "the worker died of the allocation's SIGTERM"
        link.send(TAG_STOP, ("launcher stopped (test)", 1.0))
        outcomes: list[Outcome] = []
        while True:
            tag, batch = link.receive_wait()
            outcomes += batch
            if tag == TAG_FINAL:
                break
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [(o.job_id, o.return_code, o.killed) for o in outcomes] == [(1, -signal.SIGTERM, "launcher stopped (test)")]
    assert not (tmp_path / "b").exists(), "a Task queued behind a stopped one started"


def test_the_local_worker_runs_a_lanes_tasks_one_after_another_and_reports_each_start(tmp_path: Path) -> None:
    """Tasks queued on a lane start in order, each once the one before it ended (never two at once), with a
    Began after the Outcome it followed; one taken out of its lane before it started never runs; another lane
    runs beside it."""
    link, proc = start_local()
    try:
        assert link.receive_wait() == (TAG_READY, None)
        log, go = tmp_path / "log", tmp_path / "go"  # the first Task waits for "go": the kill comes first
        step = f'echo "start $JOB_VAR" >> {log}; until [ -e {go} ]; do sleep 0.01; done; echo "end $JOB_VAR" >> {log}'
        link.send(
            TAG_TASKS,
            [
                (task(1, tmp_path / "1", step), 1, False),
                (task(2, tmp_path / "2", step), 1, True),
                (task(3, tmp_path / "3", step), 1, True),
                (task(4, tmp_path / "4", step), 1, True),
                (task(9, tmp_path / "9", "true"), 2, False),
            ],
        )
        link.send(TAG_KILL, (3, "deleted"))
        events: list[Event] = []
        while sum(isinstance(e, Outcome) for e in events) < 5:
            tag, batch = link.receive_wait()
            assert tag == TAG_OUTCOMES
            events += batch
            if any(isinstance(e, Outcome) and e.job_id == 3 for e in events):
                go.touch()
    finally:
        link.conn.close()
        proc.wait(timeout=10)
    lane_one = [(type(e).__name__, e.job_id) for e in events if e.job_id != 9]
    assert lane_one == [("Outcome", 3), ("Outcome", 1), ("Began", 2), ("Outcome", 2), ("Began", 4), ("Outcome", 4)]
    withdrawn = next(e for e in events if isinstance(e, Outcome) and e.job_id == 3)
    assert (withdrawn.return_code, withdrawn.killed) == (None, "deleted")
    assert log.read_text().split("\n")[:-1] == ["start 1", "end 1", "start 2", "end 2", "start 4", "end 4"]
    assert not (tmp_path / "3" / "job.out").exists(), "a Task taken out of its lane ran"
    other_lane = [(type(e).__name__, e.job_id) for e in events if e.job_id == 9]
    assert other_lane == [("Outcome", 9)], "a Task of another lane waited"


def test_a_serial_mode_worker_rank_never_opens_the_site_or_its_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks above 0 of a serial-mode launcher go straight to the worker loop: rank 0 alone talks to the store."""
    served: list[int] = []

    class Rank1:
        def Get_rank(self) -> int:
            return 1

    def no_site(*_args: object) -> None:
        raise AssertionError("a worker rank opened the site")

    monkeypatch.setattr(launcher_main, "_world", Rank1)
    monkeypatch.setattr(launcher_main, "work", lambda link: served.append(link.peer))
    monkeypatch.setattr(SiteDirectory, "load", no_site)
    monkeypatch.setattr(launcher_worker.MpiLink, "__init__", lambda self, comm, peer: setattr(self, "peer", peer))
    argv = ["--site", "/nonexistent", "--batch-job", "bj", "--partition", "0", "--serial-ranks"]
    assert launcher_main.main(argv) == 0
    assert served == [0], "the worker talks to rank 0"
