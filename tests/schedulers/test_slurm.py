"""SlurmScheduler against the real Slurm cluster of scripts/slurm-up.sh, its squeue parser, and the allocation's
nodes read from a job's environment."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balsamctl.schedulers.base import AllocationStatus, Host, SchedulerError, SubmitRequest
from balsamctl.schedulers.hostlist import expand_hostlist
from balsamctl.schedulers.slurm import SQUEUE_FORMAT, STATES, SlurmScheduler, parse_squeue, split_id
from balsamctl.schemas import BatchJob
from balsamctl.schemas.settings import LocalNodes
from balsamctl.site.create import init_site
from balsamctl.site.jobscript import launcher_command, render_job_script
from tests.schedulers.fakes import Fakes

SCHEDULER = "slurm"  # the fakes fixture (conftest.py) replays this scheduler's programs

FIXTURES = Path(__file__).parent / "recorded" / "slurm"
CLUSTER_NODES = {"n1", "n2", "n3", "n4"}
UNKNOWN_ID = "99999999"
DEADLINE_S = 30.0  # generous: other test runs may share the cluster

Submit = Callable[..., tuple[str, SubmitRequest]]


@pytest.fixture
def sched(cluster: None, tmp_path: Path) -> SlurmScheduler:
    return SlurmScheduler(tmp_path)


@pytest.fixture
def submit(sched: SlurmScheduler, tmp_path: Path) -> Iterator[Submit]:
    """Submit a bash body as a job script; every job submitted is cancelled afterwards."""
    submitted: list[str] = []

    def _submit(
        body: str, *, nodes: int = 1, queue: str = "debug", project: str = "test", extra: tuple[str, ...] = ()
    ) -> tuple[str, SubmitRequest]:
        name = f"balsam-test-{uuid.uuid4().hex[:10]}"
        script = tmp_path / f"{name}.sh"
        script.write_text("#!/bin/bash\n" + body + "\n")
        req = SubmitRequest(script, name, nodes, 5, queue, project, tmp_path / "out", extra)
        sid = sched.submit(req)
        submitted.append(sid)
        return sid, req

    yield _submit
    for sid in submitted:
        sched.cancel(sid)


@pytest.fixture
def squeue_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a ``squeue`` first on PATH that logs its arguments, then runs the real one."""
    real = shutil.which("squeue")
    assert real is not None
    log = tmp_path / "squeue.log"
    fake_on_path(tmp_path, monkeypatch, f'echo "$*" >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"')
    log.touch()
    return log


def fake_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, name: str = "squeue") -> None:
    """Put a shell script called ``name`` first on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def wait_for(sched: SlurmScheduler, sid: str, state: str, deadline_s: float = DEADLINE_S) -> AllocationStatus:
    deadline = time.monotonic() + deadline_s
    while True:
        status = sched.status([sid]).get(sid)
        if status is not None and status.state == state:
            return status
        assert time.monotonic() < deadline, f"job {sid} not {state} after {deadline_s} s: {status}"
        time.sleep(0.05)


def test_submit_command(tmp_path: Path) -> None:
    req = SubmitRequest(tmp_path / "bj.sh", "bj", 2, 30, "debug", "proj", tmp_path / "out", ("--qos", "high"))
    out = str(tmp_path / "out" / "bj.%j.out")
    assert SlurmScheduler(tmp_path).submit_command(req) == [
        *("sbatch", "--parsable", "--job-name", "bj", "-N", "2", "-t", "30", "-p", "debug", "-A", "proj"),
        *("--output", out, "--qos", "high", str(tmp_path / "bj.sh")),
    ]
    bare = SubmitRequest(tmp_path / "bj.sh", "bj", 1, 5, "default", "none", tmp_path / "out")
    assert "-p" not in SlurmScheduler(tmp_path).submit_command(bare)
    assert "-A" not in SlurmScheduler(tmp_path).submit_command(bare)


def test_completed_job_goes_queued_running_finished(sched: SlurmScheduler, submit: Submit) -> None:
    sid, req = submit("sleep 2; exit 0", queue="default", project="none")
    assert sched.status([sid])[sid].state in ("queued", "running")
    running = wait_for(sched, sid, "running")
    assert running.raw_state == "RUNNING" and running.end_time is None and running.exit_code is None
    done = wait_for(sched, sid, "finished")
    assert (done.raw_state, done.exit_code, done.message) == ("COMPLETED", 0, "exit code 0")
    assert done.start_time is not None and done.end_time is not None
    assert done.start_time.tzinfo == UTC and done.end_time.tzinfo == UTC
    assert timedelta(seconds=1) <= done.end_time - done.start_time < timedelta(seconds=DEADLINE_S)
    assert abs(datetime.now(UTC) - done.end_time) < timedelta(minutes=1)
    assert done.nodes == running.nodes and len(done.nodes) == 1 and done.nodes[0] in CLUSTER_NODES
    assert (req.output_dir / f"{req.job_name}.{sid}.out").is_file()


def test_exit_3_is_failed_with_exit_code_3(sched: SlurmScheduler, submit: Submit) -> None:
    sid, _ = submit("exit 3")
    done = wait_for(sched, sid, "finished")
    assert (done.raw_state, done.exit_code, done.message) == ("FAILED", 3, "exit code 3")


def test_two_node_allocation(sched: SlurmScheduler, submit: Submit) -> None:
    sid, req = submit('echo "NODELIST=$SLURM_JOB_NODELIST"', nodes=2)
    done = wait_for(sched, sid, "finished")
    assert done.raw_state == "COMPLETED"
    output = (req.output_dir / f"{req.job_name}.{sid}.out").read_text()
    nodelist = re.search(r"NODELIST=(\S+)", output)
    assert nodelist is not None, output
    assert done.nodes == tuple(expand_hostlist(nodelist[1]))
    assert len(set(done.nodes)) == 2 and set(done.nodes) <= CLUSTER_NODES


def test_cancel_running_job(sched: SlurmScheduler, submit: Submit) -> None:
    sid, req = submit("echo started; sleep 60")
    wait_for(sched, sid, "running")
    # A job killed a few ms after its allocation, before its script started, stays COMPLETING for tens of seconds.
    output = req.output_dir / f"{req.job_name}.{sid}.out"
    deadline = time.monotonic() + DEADLINE_S
    while not (output.is_file() and "started" in output.read_text()):
        assert time.monotonic() < deadline, "the job script did not start"
        time.sleep(0.05)
    sched.cancel(sid)
    done = wait_for(sched, sid, "finished", deadline_s=5)
    assert (done.raw_state, done.exit_code) == ("CANCELLED", 143)
    # bash killed by SIGTERM, or bash exiting 143 after its sleep was: Slurm reports either
    assert done.message in ("killed by signal 15", "exit code 143")
    sched.cancel(sid)  # already finished: no-op
    sched.cancel(UNKNOWN_ID)  # unknown: no-op


def test_refused_submit_raises_with_sbatch_words(submit: Submit) -> None:
    with pytest.raises(SchedulerError) as refused:
        submit("exit 0", queue="nosuchpart")
    assert refused.value.returncode == 1
    assert "Batch job submission failed: Invalid partition name specified" in refused.value.stderr
    assert "Invalid partition name specified" in str(refused.value)
    with pytest.raises(SchedulerError, match="unrecognized option"):
        submit("exit 0", extra=("--no-such-option",))


def test_status_of_many_ids_in_one_squeue_call(sched: SlurmScheduler, submit: Submit, squeue_log: Path) -> None:
    held, _ = submit("exit 0", extra=("--hold",))
    ok, _ = submit("exit 0")
    failed, _ = submit("exit 3")
    wait_for(sched, ok, "finished")
    wait_for(sched, failed, "finished")
    squeue_log.write_text("")
    statuses = sched.status([held, ok, failed, UNKNOWN_ID])
    everyone, alone = squeue_log.read_text().splitlines()  # the one missing is asked for alone: Slurm denies it
    assert f"-j {held},{ok},{failed},{UNKNOWN_ID}" in everyone and f"-j {UNKNOWN_ID} " in alone
    assert set(statuses) == {held, ok, failed}
    assert (statuses[held].state, statuses[held].raw_state, statuses[held].message) == (
        "queued",
        "PENDING",
        "reason JobHeldUser",
    )
    assert (statuses[ok].raw_state, statuses[ok].exit_code) == ("COMPLETED", 0)
    assert (statuses[failed].raw_state, statuses[failed].exit_code) == ("FAILED", 3)


def test_unknown_id_alone_is_absent(sched: SlurmScheduler, squeue_log: Path) -> None:
    assert sched.status([]) == {}
    assert squeue_log.read_text() == ""
    assert sched.status([UNKNOWN_ID]) == {}
    # Slurm refuses a lone unknown id ("Invalid job id specified"): its word that the job is gone.
    assert len(squeue_log.read_text().splitlines()) == 1


def test_heterogeneous_and_array_jobs_have_one_id_throughout(sched: SlurmScheduler, submit: Submit) -> None:
    """The id sbatch gives is the id status, find_by_name and cancel use: squeue's 123_4 and 5000+1 (whose JobID
    is another number) are parts of it."""
    array, req = submit("sleep 30", extra=("--array=1-3",))
    running = wait_for(sched, array, "running")
    assert running.message.startswith("3 parts: ")
    assert sched.find_by_name(req.job_name) == array
    het, het_req = submit("sleep 30", extra=("--hold", "-N", "1", ":", "-N", "1"))
    held = sched.status([het])[het]
    assert (held.state, held.message) == ("queued", "2 parts: 2 PENDING; reason JobHeldUser")
    assert sched.find_by_name(het_req.job_name) == het
    sched.cancel(het)
    sched.cancel(array)
    assert wait_for(sched, het, "finished").raw_state == "CANCELLED"
    assert wait_for(sched, array, "finished").raw_state == "CANCELLED"


def test_find_by_name_finds_the_newest_allocation(sched: SlurmScheduler, submit: Submit) -> None:
    older, req = submit("exit 0", extra=("--hold",))
    newer = sched.submit(req)
    try:
        assert sched.find_by_name(req.job_name) == newer
        sched.cancel(newer)
        sched.cancel(older)
        assert sched.find_by_name(req.job_name) == newer, "finished allocations are still found (no resubmit)"
        assert sched.find_by_name(f"{req.job_name}-nope") is None
    finally:
        sched.cancel(newer)


def test_hanging_squeue_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_on_path(tmp_path, monkeypatch, "exec sleep 100")
    started = time.monotonic()
    with pytest.raises(SchedulerError) as hung:
        SlurmScheduler(tmp_path, timeout=0.3).status(["1"])
    assert hung.value.returncode is None and hung.value.command[0] == "squeue"
    assert time.monotonic() - started < 5


def test_sbatch_and_squeue_output_edge_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = SubmitRequest(tmp_path / "bj.sh", "bj", 1, 5, "debug", "none", tmp_path / "out")
    req.script_path.write_text("#!/bin/bash\n")
    fake_on_path(tmp_path, monkeypatch, "echo 'Submitted batch job 4242'", name="sbatch")  # a wrapper's words
    assert SlurmScheduler(tmp_path).submit(req) == "4242"
    fake_on_path(tmp_path, monkeypatch, "echo 'Job 4242 is queued'", name="sbatch")
    with pytest.raises(SchedulerError, match="unexpected sbatch output"):
        SlurmScheduler(tmp_path).submit(req)
    fake_on_path(tmp_path, monkeypatch, "echo '77|garbled line'")  # a requested id must not silently go missing
    with pytest.raises(SchedulerError, match="cannot parse squeue line"):
        SlurmScheduler(tmp_path).status(["77"])


def test_state_table_covers_every_state_squeue_knows(cluster: None) -> None:
    proc = subprocess.run(["squeue", "-t", "NO_SUCH_STATE"], capture_output=True, text=True, timeout=30)
    listed = re.search(r"Valid job states include: (\S+)", proc.stderr)
    assert listed is not None, proc.stderr
    assert set(listed[1].split(",")) == set(STATES)


def test_job_template_renders_a_script_slurm_accepts(sched: SlurmScheduler, tmp_path: Path) -> None:
    site = init_site(tmp_path / "site", "slurm-site", "slurm", register=False)
    try:
        bj = BatchJob.model_validate(
            {
                "metadata": {"name": "bj-1"},
                "spec": {"num_nodes": 2, "wall_time_min": 5, "queue": "debug", "project": "none"},
            }
        )
        bj.spec.optional_params["qos"] = "high prio"
        script = render_job_script(site, bj)
        command = launcher_command(site, bj)
    finally:
        site.close()
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and lines[-1] == command
    assert "export BALSAM_OPT_QOS='high prio'" in lines
    assert lines.index("#SBATCH --no-requeue") < min(i for i, line in enumerate(lines) if not line.startswith("#"))
    path = tmp_path / "bj-1.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    req = SubmitRequest(path, "balsam-test-template", 2, 5, "debug", "none", tmp_path / "out", ("--hold",))
    sid = sched.submit(req)  # held: it never runs
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", sid], capture_output=True, text=True, check=True)
        assert " Requeue=0 " in shown.stdout
    finally:
        sched.cancel(sid)


# --- outputs as other projects recorded them (recorded/slurm/real/README.md), through fake programs ---


@pytest.mark.parametrize(
    ("scenario", "sid"),
    [
        ("sbatch-cluster-mpp2", "630114;mpp2"),
        ("sbatch-cluster-clustername", "75168975;clustername"),
        ("sbatch-sentence-cluster", "60060368;slaking"),
        ("sbatch-plain", "15786755"),
    ],
)
def test_the_id_sbatch_gives_keeps_its_cluster(fakes: Fakes, tmp_path: Path, scenario: str, sid: str) -> None:
    fakes.scenario(f"real/{scenario}")
    script = tmp_path / "bj.sh"
    script.write_text("#!/bin/bash\n")
    req = SubmitRequest(script, "bj", 1, 5, "debug", "none", tmp_path / "out")
    assert SlurmScheduler(tmp_path).submit(req) == sid


def test_the_cluster_is_passed_to_squeue_and_scancel(fakes: Fakes, tmp_path: Path) -> None:
    """squeue and scancel see a job on another cluster only with -M: without it the allocation seemed gone."""
    fakes.scenario("real/sbatch-cluster-mpp2")
    sched = SlurmScheduler(tmp_path)
    status = sched.status(["630114;mpp2"])["630114;mpp2"]
    assert (status.state, status.nodes) == ("running", ("i22r07c05s01", "i22r07c05s02"))
    sched.cancel("630114;mpp2")
    assert [[call["prog"], *call["argv"]] for call in fakes.calls] == [
        ["squeue", "-M", "mpp2", "-h", "-t", "all", "-j", "630114", "-O", SQUEUE_FORMAT],
        ["scancel", "-M", "mpp2", "630114"],
    ]


def test_find_by_name_looks_on_the_clusters_the_site_submits_to(
    fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.scenario("real/squeue-array-ids")
    (tmp_path / "job-template.sh").write_text("#!/bin/bash\n#SBATCH --clusters=mpp2\n#SBATCH -M cm2_tiny\n")
    monkeypatch.setenv("SBATCH_CLUSTERS", "mpp2")
    assert SlurmScheduler(tmp_path).find_by_name("bj") == "2653325;cm2_tiny"
    assert [call["argv"][:2] for call in fakes.calls] == [["-M", "mpp2"], ["-M", "cm2_tiny"]]


def test_find_by_name_gives_an_array_its_own_id(fakes: Fakes, tmp_path: Path) -> None:
    fakes.scenario("real/squeue-array-ids")
    assert SlurmScheduler(tmp_path).find_by_name("bj") == "2653325"
    assert fakes.calls[0]["argv"] == ["-h", "-n", "bj", "-o", "%i", "-t", "all"]


def test_find_by_name_never_says_none_while_a_line_cannot_be_read(
    fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As with PBS, LSF and Cobalt: squeue -n NAME lists only that name's jobs, so a line that is not a job id, or a
    last line cut short, may be the allocation: an error, never "not found" (a restarted controller would submit it
    again) nor a job id cut short (26533 of 2653316). A CLUSTER line is not a job's."""
    sched = SlurmScheduler(tmp_path)
    fakes.scenario("find-cut")
    with pytest.raises(SchedulerError, match="called bj: a record: the output ends inside this line: '26533'"):
        sched.find_by_name("bj")
    fakes.scenario("find-unreadable")
    with pytest.raises(SchedulerError, match="called bj: a record: not a job id: 'squeue is not available"):
        sched.find_by_name("bj")
    fakes.scenario("find-cluster-line")
    monkeypatch.setenv("SBATCH_CLUSTERS", "mpp2")
    assert sched.find_by_name("bj") == "630114;mpp2"


# --- the parser, on recorded outputs and generated ones ---


@contextlib.contextmanager
def local_time(zone: str) -> Iterator[None]:
    """Run with this machine's local time zone set to ``zone``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", zone)
        time.tzset()
        try:
            yield
        finally:
            patch.undo()
            time.tzset()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_parse_recorded_squeue_output() -> None:
    with local_time("UTC"):  # the local time zone of the machine they were recorded on
        statuses, unparsed = parse_squeue((FIXTURES / "squeue-22.05.txt").read_text())
    assert unparsed == []
    got = {sid: (s.state, s.raw_state, s.exit_code, s.nodes, s.message) for sid, s in statuses.items()}
    assert got == {
        "8": ("finished", "TIMEOUT", 143, ("n1",), "killed by signal 15"),
        "10": ("finished", "COMPLETED", 0, ("n1",), "exit code 0"),
        "11": ("finished", "FAILED", 3, ("n1",), "exit code 3"),
        "12": ("finished", "CANCELLED", 143, ("n2",), "killed by signal 15"),
        "13": ("finished", "CANCELLED", 0, (), "exit code 0"),
        "14": ("queued", "PENDING", None, (), "reason JobHeldUser"),
        "15": ("running", "RUNNING", None, ("n2", "n3"), ""),
        "16": ("running", "COMPLETING", None, ("n1",), ""),
    }
    assert (statuses["8"].start_time, statuses["8"].end_time) == (at("2026-11-24T19:03:03"), at("2026-11-24T19:04:15"))
    assert (statuses["15"].start_time, statuses["15"].end_time) == (at("2026-11-24T19:04:51"), None)
    assert (statuses["14"].start_time, statuses["14"].end_time) == (None, None)
    assert statuses["13"].start_time is None  # cancelled while pending: never started


def test_parse_recorded_heterogeneous_and_array_jobs() -> None:
    """Recorded on the test cluster: an array (76_1..3), a failed one (79_1..2), a held array (19_[1-3]) and
    heterogeneous jobs (83+0, 83+1; 85+0, 85+1): one allocation each, under the id sbatch gave."""
    with local_time("UTC"):
        statuses, unparsed = parse_squeue((FIXTURES / "squeue-22.05-het-array.txt").read_text())
    assert unparsed == []
    got = {sid: (s.state, s.raw_state, s.exit_code, s.nodes, s.message) for sid, s in statuses.items()}
    assert got == {
        "79": ("finished", "FAILED", 3, ("n3",), "2 parts: 2 FAILED; exit code 3"),
        "76": ("running", "RUNNING", None, ("n1", "n2"), "3 parts: 3 RUNNING"),
        "85": ("queued", "PENDING", None, (), "2 parts: 2 PENDING; reason JobHeldUser"),
        "83": ("finished", "COMPLETED", 0, ("n1", "n2"), "2 parts: 2 COMPLETED; exit code 0"),
        "19": ("queued", "PENDING", None, (), "reason JobHeldUser"),
    }
    assert (statuses["83"].start_time, statuses["83"].end_time) == (
        at("2026-12-07T09:02:26"),
        at("2026-12-07T09:02:34"),
    )
    assert (statuses["76"].start_time, statuses["76"].end_time) == (at("2026-12-07T09:01:37"), None)


def test_parse_converts_slurm_local_time_to_utc() -> None:
    line = "7|COMPLETED|2026-11-24T19:00:25|2026-07-01T12:00:00|n1|0|None|x"
    with local_time("America/Chicago"):
        status = parse_squeue(line)[0]["7"]
    assert status.start_time == at("2026-11-25T01:00:25")  # CST, UTC-6
    assert status.end_time == at("2026-07-01T17:00:00")  # CDT, UTC-5


def test_parse_garbage_lines_are_returned_unparsed() -> None:
    text = "slurm_load_jobs error: Invalid job id specified\n\n42|RUNNING|N/A|N/A|n[1-2|zz|None|x|y\n"
    statuses, unparsed = parse_squeue(text)
    assert unparsed == ["slurm_load_jobs error: Invalid job id specified"]
    assert statuses["42"].nodes == () and "cannot expand node list 'n[1-2'" in statuses["42"].message
    assert statuses["42"].state == "running" and statuses["42"].start_time is None


TIMES = st.one_of(
    st.sampled_from(["N/A", "Unknown", "None", "NONE", "", "2026-13-40T99:00:00"]),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=0).isoformat()
    ),
)
NO_BAR = st.text(st.characters(blacklist_characters="|\n"), max_size=12)
LINES = st.tuples(
    st.from_regex(r"[0-9]{1,9}(_[0-9]{1,3}|_\[[0-9]{1,2}-[0-9]{1,2}\]|\+[0-9])?", fullmatch=True),
    st.one_of(st.sampled_from(sorted(STATES)), st.from_regex(r"[A-Z][A-Z_]{0,14}", fullmatch=True)),
    TIMES,
    TIMES,
    st.one_of(st.sampled_from(["", "n1", "n[1-4]", "n[2-3],x7", "n[", "a]b"]), NO_BAR),
    st.one_of(st.integers(-1, 70000).map(str), NO_BAR),
    st.one_of(st.sampled_from(["None", "Resources", "JobHeldUser"]), NO_BAR),
    st.text(st.characters(blacklist_characters="\n"), max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(LINES, max_size=8, unique_by=lambda line: line[0]))
def test_parse_keeps_every_parsable_line_and_maps_every_state(lines: list[tuple[str, ...]]) -> None:
    statuses, unparsed = parse_squeue("\n".join("|".join(line) for line in lines))
    allocations: dict[str, list[tuple[str, ...]]] = {}
    for line in lines:
        allocations.setdefault(split_id(line[0])[0], []).append(line)
    assert unparsed == [] and set(statuses) == set(allocations)
    for sid, parts in allocations.items():
        status = statuses[sid]
        if len(parts) == 1:
            raw_state = parts[0][1]
            assert status.raw_state == raw_state
            if raw_state in STATES:
                assert status.state == STATES[raw_state]
            else:
                assert status.state == ("queued" if status.start_time is None else "running")
                assert f"unknown Slurm state {raw_state}" in status.message
        else:  # one allocation: running while a part runs, queued while one waits, finished once all ended
            assert status.message.startswith(f"{len(parts)} parts: ")
            if all(part[1] in STATES for part in parts):
                states = {STATES[part[1]] for part in parts}
                assert status.state == next(s for s in ("running", "queued", "finished") if s in states)
        assert status.exit_code is None or status.state == "finished"
        assert all(t is None or t.tzinfo == UTC for t in (status.start_time, status.end_time))


@settings(max_examples=200, deadline=None)
@given(st.lists(LINES, max_size=4, unique_by=lambda line: line[0]), st.binary(max_size=200))
def test_parse_garbage_bytes_never_raise(lines: list[tuple[str, ...]], garbage: bytes) -> None:
    noise = garbage.decode("utf-8", errors="replace")
    text = "\n".join(["|".join(line) for line in lines] + [noise])
    statuses, unparsed = parse_squeue(text)
    assert {split_id(line[0])[0] for line in lines} <= set(statuses)
    for line in text.split("\n"):
        assert not line.strip() or line in unparsed or parse_squeue(line)[0] or line.startswith("CLUSTER: ")
    assert all(line in noise for line in unparsed)


# --- the allocation's nodes, from the job's environment ---


def test_hosts_from_the_slurm_environment() -> None:
    env = {"SLURM_JOB_NODELIST": "nid[001-002]", "SLURM_CPUS_ON_NODE": "64", "SLURM_GPUS_ON_NODE": "4"}
    assert SlurmScheduler.hosts_from_environment(env, LocalNodes()) == [Host("nid001", 64, 4), Host("nid002", 64, 4)]
    older = {"SLURM_NODELIST": "c[1-2]"}  # no CPU count: the launcher's setting, else the node's CPUs
    assert SlurmScheduler.hosts_from_environment(older, LocalNodes()) == [Host("c1", None, 0), Host("c2", None, 0)]
    assert SlurmScheduler.hosts_from_environment({}, LocalNodes()) == [], "not inside an allocation"
    with pytest.raises(ValueError, match="n\\[1-"):
        SlurmScheduler.hosts_from_environment({"SLURM_JOB_NODELIST": "n[1-"}, LocalNodes())
