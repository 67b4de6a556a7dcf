"""LocalScheduler with real processes: submit, status, cancel, walltime, adoption and restarts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from balsamctl.schedulers import (
    AllocationStatus,
    Host,
    LocalScheduler,
    SchedulerError,
    SubmitRequest,
    get_scheduler,
    run_command,
)
from balsamctl.schemas.settings import LocalNodes

DEADLINE_S = 2.5
# A script that blocks until the test creates its "go" file, so the running state can be observed.
WAIT_FOR_GO = 'while [ ! -e "$0.go" ]; do sleep 0.02; done\n'


class Clock:
    """A wall clock the test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A site directory; allocations a failed test left running are killed afterwards."""
    (tmp_path / "qsubmit").mkdir()
    yield tmp_path
    ids = [path.stem for path in (tmp_path / "qsubmit" / ".local").glob("*.json")]
    for sid, status in LocalScheduler(tmp_path).status(ids).items():
        if status.state == "running":
            with contextlib.suppress(ProcessLookupError):  # it may end between status and kill
                os.killpg(int(sid), signal.SIGKILL)


def request(site: Path, name: str, body: str, wall_time_min: int = 5) -> SubmitRequest:
    script = site / "qsubmit" / f"{name}.sh"
    script.write_text("#!/bin/bash\n" + body)
    return SubmitRequest(
        script_path=script,
        job_name=name,
        num_nodes=2,
        wall_time_min=wall_time_min,
        queue="local",
        project="test",
        output_dir=site / "qsubmit",
    )


def release(req: SubmitRequest) -> None:
    """Let a WAIT_FOR_GO script continue."""
    Path(f"{req.script_path}.go").touch()


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def wait_finished(sched: LocalScheduler, scheduler_id: str) -> AllocationStatus:
    wait_until(lambda: sched.status([scheduler_id])[scheduler_id].state == "finished")
    return sched.status([scheduler_id])[scheduler_id]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_submit_runs_then_completes_with_env_and_output(site: Path) -> None:
    sched = LocalScheduler(site)
    req = request(
        site,
        "balsam-hello-1",
        WAIT_FOR_GO + 'echo "env $BALSAM_JOB_NAME $BALSAM_SCHEDULER_ID $BALSAM_NUM_NODES $BALSAM_WALL_TIME_MIN"\n',
    )
    sid = sched.submit(req)

    running = sched.status([sid])[sid]
    assert (running.state, running.raw_state, running.exit_code) == ("running", "RUNNING", None)
    assert running.start_time is not None and running.start_time.utcoffset() is not None
    assert running.nodes

    release(req)
    done = wait_finished(sched, sid)
    assert (done.state, done.raw_state, done.exit_code) == ("finished", "COMPLETED", 0)
    assert done.end_time is not None and running.start_time <= done.end_time
    output = (site / "qsubmit" / "balsam-hello-1.out").read_text()
    assert f"env balsam-hello-1 {sid} 2 5" in output


def test_exit_code_survives_controller_restart(site: Path) -> None:
    sid = LocalScheduler(site).submit(request(site, "balsam-fail-1", "exit 3\n"))
    restarted = LocalScheduler(site)
    done = wait_finished(restarted, sid)
    assert (done.state, done.raw_state, done.exit_code) == ("finished", "FAILED", 3)
    assert LocalScheduler(site).status([sid])[sid] == done


def test_status_of_many_in_one_call(site: Path) -> None:
    sched = LocalScheduler(site)
    reqs = [request(site, f"balsam-many-{i}", WAIT_FOR_GO) for i in range(3)]
    ids = [sched.submit(req) for req in reqs]
    statuses = sched.status([*ids, "999999999", "not-a-pid"])
    assert set(statuses) == set(ids)
    assert all(s.state == "running" for s in statuses.values())
    for req in reqs:
        release(req)
    for sid in ids:
        assert wait_finished(sched, sid).raw_state == "COMPLETED"


def test_cancel_kills_whole_process_group(site: Path) -> None:
    sched = LocalScheduler(site)
    req = request(site, "balsam-cancel-1", 'sleep 100 &\necho $! > "$0.child"\nwait\n')
    sid = sched.submit(req)
    child_file = Path(f"{req.script_path}.child")
    wait_until(lambda: child_file.exists() and child_file.read_text().strip() != "")
    child = int(child_file.read_text())

    sched.cancel(sid)
    done = wait_finished(sched, sid)
    assert (done.state, done.raw_state) == ("finished", "CANCELLED")
    assert done.exit_code == 128 + signal.SIGTERM
    wait_until(lambda: gone(child) and gone(int(sid)))

    sched.cancel(sid)  # finished: a no-op
    sched.cancel("999999999")  # unknown: a no-op
    assert sched.status([sid])[sid].raw_state == "CANCELLED"


# A launcher-like child of the script (in its process group) that records the SIGTERM it gets, then ends.
TERM_RECORDER = (
    'bash -c \'trap "echo term > $0.term; exit 0" TERM; echo $$ > $0.tmp; mv $0.tmp $0.pid; '
    'while :; do sleep 0.05; done\' "$0"\n'
)


def test_cancel_wakes_a_stopped_process_so_that_it_gets_its_sigterm(site: Path) -> None:
    """As scancel does: SIGTERM, then SIGCONT. A stopped launcher (SIGSTOP, a debugger) would otherwise hear nothing
    until the SIGKILL, and could not stop its Jobs and record them."""
    sched = LocalScheduler(site)
    req = request(site, "balsam-stopped-1", TERM_RECORDER)
    sid = sched.submit(req)
    pid_file = Path(f"{req.script_path}.pid")
    wait_until(pid_file.exists)
    os.kill(int(pid_file.read_text()), signal.SIGSTOP)

    sched.cancel(sid)
    assert wait_finished(sched, sid).raw_state == "CANCELLED"
    assert Path(f"{req.script_path}.term").read_text() == "term\n", "the stopped process never got its SIGTERM"


def test_processes_left_behind_end_with_the_script(site: Path) -> None:
    sched = LocalScheduler(site)
    req = request(site, "balsam-stray-1", 'sleep 100 &\necho $! > "$0.child"\n')
    sid = sched.submit(req)
    assert wait_finished(sched, sid).raw_state == "COMPLETED"
    wait_until(lambda: gone(int(Path(f"{req.script_path}.child").read_text())))


def test_cancel_after_completion_keeps_completed(site: Path) -> None:
    sched = LocalScheduler(site)
    sid = sched.submit(request(site, "balsam-done-1", "true\n"))
    wait_finished(sched, sid)
    sched.cancel(sid)
    assert sched.status([sid])[sid].raw_state == "COMPLETED"


def test_walltime_terminates_as_timeout(site: Path) -> None:
    clock = Clock()
    sched = LocalScheduler(site, clock=clock)
    sid = sched.submit(request(site, "balsam-wall-1", "sleep 100\n", wall_time_min=1))
    assert sched.status([sid])[sid].state == "running"

    clock.advance(61)
    done = wait_finished(sched, sid)
    assert (done.state, done.raw_state) == ("finished", "TIMEOUT")


def test_walltime_escalates_to_sigkill_after_grace(site: Path) -> None:
    clock = Clock()
    sched = LocalScheduler(site, clock=clock)
    req = request(site, "balsam-stubborn-1", "trap '' TERM\ntouch \"$0.ready\"\nsleep 100\n", wall_time_min=1)
    sid = sched.submit(req)
    wait_until(Path(f"{req.script_path}.ready").exists)

    clock.advance(61)
    terminating = sched.status([sid])[sid]
    assert terminating.state == "running" and "SIGTERM" in terminating.message
    time.sleep(0.2)
    assert sched.status([sid])[sid].state == "running"  # TERM ignored; grace not over

    clock.advance(31)
    done = wait_finished(sched, sid)
    assert (done.raw_state, done.exit_code) == ("TIMEOUT", None)


def test_recycled_pid_is_never_reported_running(site: Path) -> None:
    sched = LocalScheduler(site)
    sid = sched.submit(request(site, "balsam-recycled-1", "true\n"))
    wait_finished(sched, sid)
    record_path = site / "qsubmit" / ".local" / f"{sid}.json"
    record = json.loads(record_path.read_text())
    forged_id = str(os.getpid())  # alive, but started at another time than the record says
    record["pid"] = os.getpid()
    record["create_time"] = psutil.Process().create_time() - 3600
    (site / "qsubmit" / ".local" / f"{forged_id}.json").write_text(json.dumps(record))

    assert sched.status([forged_id])[forged_id].state == "finished"
    assert sched.status([sched.find_by_name("balsam-recycled-1") or ""]).popitem()[1].state == "finished"
    sched.cancel(forged_id)  # must not signal the test process's group


def test_find_by_name_returns_the_allocation_live_or_finished(site: Path) -> None:
    sched = LocalScheduler(site)
    assert sched.find_by_name("balsam-a-1") is None  # no records yet
    req_a = request(site, "balsam-a-1", WAIT_FOR_GO)
    req_b = request(site, "balsam-b-1", WAIT_FOR_GO)
    sid_a, sid_b = sched.submit(req_a), sched.submit(req_b)

    restarted = LocalScheduler(site)
    assert restarted.find_by_name("balsam-a-1") == sid_a
    assert restarted.find_by_name("balsam-b-1") == sid_b
    assert restarted.find_by_name("balsam-c-1") is None

    release(req_a)
    release(req_b)
    wait_finished(sched, sid_a)
    assert restarted.find_by_name("balsam-a-1") == sid_a, "a finished allocation is still found (no resubmit)"


def test_no_zombie_left_after_allocation_ends(site: Path) -> None:
    sched = LocalScheduler(site)
    sid = sched.submit(request(site, "balsam-zombie-1", "true\n"))
    wait_finished(sched, sid)
    wait_until(lambda: all(child.pid != int(sid) for child in psutil.Process().children()))


def test_submit_refuses_missing_script(site: Path) -> None:
    sched = LocalScheduler(site)
    req = request(site, "balsam-missing-1", "true\n")
    req.script_path.unlink()
    with pytest.raises(SchedulerError, match="job script not found"):
        sched.submit(req)


def test_submit_command_is_bash_running_the_script(site: Path) -> None:
    req = request(site, "balsam-argv-1", "true\n")
    argv = LocalScheduler(site).submit_command(req)
    assert argv[0] == "bash" and str(req.script_path) in argv


def test_get_scheduler(site: Path) -> None:
    assert isinstance(get_scheduler("local", site), LocalScheduler)
    with pytest.raises(ValueError, match="known kinds: cobalt, local, lsf, pbs, slurm"):
        get_scheduler("moab", site)


def test_run_command_reports_failure_and_timeout() -> None:
    assert run_command(["cat"], input="hi").stdout == "hi"
    with pytest.raises(SchedulerError) as failed:
        run_command(["bash", "-c", "echo 'qsub: Unknown queue' >&2; exit 2"])
    assert failed.value.returncode == 2
    assert "qsub: Unknown queue" in str(failed.value) and "\n" not in str(failed.value)

    started = time.monotonic()
    with pytest.raises(SchedulerError) as timed_out:
        run_command(["bash", "-c", "sleep 30 & sleep 30"], timeout=0.3)
    assert timed_out.value.returncode is None and "timed out" in str(timed_out.value)
    assert time.monotonic() - started < DEADLINE_S  # the whole group was killed, pipes closed

    with pytest.raises(SchedulerError) as missing:
        run_command(["no-such-scheduler-command"])
    assert missing.value.returncode == 127


# --- the allocation's nodes: emulated on this machine ---


def test_hosts_are_the_sites_emulated_nodes() -> None:
    three = LocalNodes(count=3, cpus_per_node=4, gpus_per_node=2)
    assert LocalScheduler.hosts_from_environment({}, three) == [Host(f"local{i}", 4, 2) for i in range(3)]
    assert LocalScheduler.hosts_from_environment({"BALSAM_NUM_NODES": "2"}, three) == [  # the allocation's share
        Host("local0", 4, 2),
        Host("local1", 4, 2),
    ]
    assert LocalScheduler.hosts_from_environment({}, LocalNodes()) == [Host("localhost", 2, 0)]
