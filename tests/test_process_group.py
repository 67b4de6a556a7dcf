"""ProcessGroup: each Task's outcome reported once, per-attempt output kept, no output file held by the launcher."""

from __future__ import annotations

import os
from pathlib import Path

from launcher.process import Outcome, ProcessGroup, Task


def task(job_id: int, workdir: Path, command: str, attempt: int = 1) -> Task:
    return Task(job_id, f"j{job_id}", ("sh", "-c", command), str(workdir), (("JOB_VAR", str(job_id)),), attempt)


def run_all(group: ProcessGroup) -> list[Outcome]:
    """Outcomes until every running Task ended."""
    outcomes: list[Outcome] = []
    while group.running:
        group.wait(1.0)
        outcomes += group.poll()
    return outcomes


def test_every_task_ends_once_with_its_return_code_and_tail(tmp_path: Path) -> None:
    group = ProcessGroup()
    commands = {1: "true", 2: "echo oops; exit 3", 3: 'test "$JOB_VAR" = 3', 4: "exit 1"}
    commands[5] = 'test "$(readlink /proc/$$/fd/0)" = /dev/null'  # stdin: nothing to read
    for job_id, command in commands.items():
        group.start(task(job_id, tmp_path / "w" / str(job_id), command))
    outcomes = run_all(group)
    assert sorted((o.job_id, o.return_code) for o in outcomes) == [(1, 0), (2, 3), (3, 0), (4, 1), (5, 0)]
    assert next(o.tail for o in outcomes if o.job_id == 2) == "oops\n"
    assert group.poll() == []
    assert group.job_of == {}


def test_a_later_attempt_keeps_the_earlier_attempts_output(tmp_path: Path) -> None:
    group = ProcessGroup()
    group.start(task(1, tmp_path, "echo first", attempt=1))
    run_all(group)
    group.start(task(1, tmp_path, "echo second", attempt=2))
    run_all(group)
    assert (tmp_path / "job.out.1").read_text() == "first\n"
    assert (tmp_path / "job.out").read_text() == "second\n"


def test_the_launcher_holds_no_output_file_open_while_a_task_runs(tmp_path: Path) -> None:
    group = ProcessGroup()
    group.start(task(1, tmp_path, "sleep 30"))
    try:
        held = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
        assert str(tmp_path / "job.out") not in held
    finally:
        outcome = group.kill(1, "test over")
    assert outcome is not None and outcome.killed == "test over"
