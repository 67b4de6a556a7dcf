"""PbsScheduler against fake qsub, qstat and qdel replaying PBS Pro output, and its qstat JSON parser."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakes import JSONISH, Fakes, expected_state, job_script
from hypothesis import given
from hypothesis import strategies as st

from schedulers.base import SchedulerError, SubmitRequest
from schedulers.pbs import STATES, PbsScheduler, parse_status

NAME = "balsam-polaris-big-run-1a2b3c4d"
STIME = "Tue Nov 24 10:05:11 2026"
NODES = ("x3006c0s13b0n0", "x3006c0s13b1n0")


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Fakes:
    return Fakes("pbs", monkeypatch, tmp_path)


@pytest.fixture
def sched(fakes: Fakes, tmp_path: Path) -> PbsScheduler:
    return PbsScheduler(tmp_path, timeout=10)


@pytest.fixture
def req(tmp_path: Path) -> SubmitRequest:
    script = tmp_path / "qsubmit" / "big-run.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/bash\n")
    return SubmitRequest(script, NAME, 2, 90, "prod", "datascience", tmp_path / "out", ("-l", "filesystems=home"))


def local(text: str) -> datetime:
    return datetime.strptime(text, "%a %b %d %H:%M:%S %Y").astimezone(UTC)


def test_submit_command_is_exact(sched: PbsScheduler, req: SubmitRequest) -> None:
    assert sched.submit_command(req) == [
        *("qsub", "-N", NAME, "-l", "select=2", "-l", "walltime=01:30:00", "-q", "prod", "-A", "datascience"),
        *("-j", "oe", "-o", str(req.output_dir / f"{NAME}.out"), "-l", "filesystems=home", str(req.script_path)),
    ]


def test_submit_returns_the_job_id(sched: PbsScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    fakes.scenario("submit")
    assert sched.submit(req) == "8214.pbs01"
    assert fakes.calls == [{"prog": "qsub", "argv": sched.submit_command(req)[1:], "stdin": ""}]
    assert req.output_dir.is_dir()


def test_a_refusal_carries_the_words_of_qsub(sched: PbsScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    fakes.scenario("refused")
    with pytest.raises(SchedulerError, match="qsub: Unknown queue") as caught:
        sched.submit(req)
    assert caught.value.returncode == 170


def test_a_missing_job_script_is_refused_before_qsub(sched: PbsScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    req.script_path.unlink()
    with pytest.raises(SchedulerError, match="job script not found"):
        sched.submit(req)
    assert fakes.calls == []


def test_every_state_from_one_qstat_call(sched: PbsScheduler, fakes: Fakes) -> None:
    path = fakes.scenario("status")
    jobs = json.loads((path / "qstat.stdout").read_text())["Jobs"]
    assert {job["job_state"] for job in jobs.values()} == set(STATES)  # the fixture has every documented state
    statuses = sched.status([*jobs, "8206.pbs01"])
    assert [call["argv"] for call in fakes.calls] == [["-f", "-F", "json", "-x", *jobs]]
    assert {sid: (s.raw_state, s.state) for sid, s in statuses.items()} == {
        sid: (job["job_state"], STATES[job["job_state"]]) for sid, job in jobs.items()
    }
    running = statuses["8206.pbs01"]
    assert running.nodes == NODES and running.start_time == local(STIME)
    assert running.end_time is None and running.exit_code is None
    assert statuses["8201.pbs01"].message.startswith("Not Running: Insufficient amount of resource")
    done = statuses["8211.pbs01"]
    assert (done.exit_code, done.end_time) == (0, local("Tue Nov 24 10:35:40 2026"))
    assert done.message.startswith("exit code 0; Job run at")
    walltime = statuses["8212.pbs01"]
    assert walltime.state == "finished" and walltime.exit_code == -29
    assert walltime.message.startswith("walltime limit reached")


def test_an_unknown_state_is_kept(sched: PbsScheduler, fakes: Fakes) -> None:
    fakes.scenario("unknown-state")
    statuses = sched.status(["8220.pbs01", "8221.pbs01"])
    assert (statuses["8220.pbs01"].state, statuses["8221.pbs01"].state) == ("running", "queued")
    assert statuses["8220.pbs01"].message == "unknown PBS state K"
    assert statuses["8220.pbs01"].nodes == NODES


def test_ids_qstat_does_not_know_are_absent(sched: PbsScheduler, fakes: Fakes) -> None:
    fakes.scenario("unknown-ids")
    statuses = sched.status(["8206.pbs01", "8299.pbs01"])
    assert list(statuses) == ["8206.pbs01"] and statuses["8206.pbs01"].state == "running"
    assert [call["argv"][-2:] for call in fakes.calls] == [["8206.pbs01", "8299.pbs01"], ["-x", "8206.pbs01"]]


def test_an_id_matches_whatever_server_name_qsub_printed(sched: PbsScheduler, fakes: Fakes) -> None:
    fakes.scenario("status")
    statuses = sched.status(["8206.pbs01.cluster.example"])
    assert statuses["8206.pbs01.cluster.example"].scheduler_id == "8206.pbs01.cluster.example"


def test_output_cut_short_fails_rather_than_lose_an_allocation(sched: PbsScheduler, fakes: Fakes) -> None:
    fakes.scenario("truncated")
    assert sched.status(["8206.pbs01"])["8206.pbs01"].state == "running"
    with pytest.raises(SchedulerError, match="cannot read the output of qstat"):
        sched.status(["8206.pbs01", "8207.pbs01"])


def test_no_ids_no_call(sched: PbsScheduler, fakes: Fakes) -> None:
    assert sched.status([]) == {}
    assert fakes.calls == []


def test_a_hang_times_out(fakes: Fakes, tmp_path: Path) -> None:
    fakes.assert_a_hang_times_out(lambda: PbsScheduler(tmp_path, timeout=0.5).status(["8206.pbs01"]))


def test_cancel_runs_qdel(sched: PbsScheduler, fakes: Fakes) -> None:
    sched.cancel("8206.pbs01")
    fakes.scenario("cancel-finished")
    sched.cancel("8211.pbs01")  # "Job has finished": nothing to do
    assert [[call["prog"], *call["argv"]] for call in fakes.calls] == [["qdel", "8206.pbs01"], ["qdel", "8211.pbs01"]]
    fakes.scenario("cancel-refused")
    with pytest.raises(SchedulerError, match="Unauthorized Request"):
        sched.cancel("8211.pbs01")


def test_find_by_name_picks_the_newest_allocation(sched: PbsScheduler, fakes: Fakes) -> None:
    fakes.scenario("find")
    assert sched.find_by_name(NAME) == "8305.pbs01"
    assert sched.find_by_name("balsam-polaris-nothing-00000000") is None
    assert fakes.calls[0]["argv"] == ["-f", "-F", "json", "-x"]


def test_job_template(tmp_path: Path) -> None:
    lines, command = job_script(tmp_path, "pbs", filesystems="home:eagle")
    assert lines[0] == "#!/bin/bash" and lines[-1] == command
    assert {"#PBS -r n", "#PBS -l place=scatter", "export BALSAM_OPT_FILESYSTEMS=home:eagle"} <= set(lines)


# --- the parser, on generated output ---

STATE = st.sampled_from(sorted(STATES)) | st.text(min_size=1, max_size=4).filter(lambda s: s not in STATES)
JOBS = st.dictionaries(
    st.integers(1, 10**7).map(lambda n: f"{n}.pbs01"),
    st.tuples(STATE, st.booleans()),  # state, started
    max_size=8,
)


def document(jobs: dict[str, tuple[str, bool]]) -> tuple[str, dict[str, int]]:
    """qstat -f -F json output for ``jobs``, and where each job's record ends in it."""
    text, ends = '{"timestamp":1795514820,"pbs_version":"2022.1.5","pbs_server":"pbs01","Jobs":{', {}
    for i, (sid, (state, started)) in enumerate(jobs.items()):
        record: dict[str, Any] = {"Job_Name": f"job-{i}", "job_state": state}
        record.update({"stime": STIME, "exec_host": "n1/0*64"} if started else {})
        text += ("," if i else "") + json.dumps(sid) + ":" + json.dumps(record, indent=4)
        ends[sid] = len(text)
    return text + "}}\n", ends


@given(JOBS)
def test_parser_maps_every_record_per_the_table(jobs: dict[str, tuple[str, bool]]) -> None:
    statuses, unparsed = parse_status(document(jobs)[0])
    assert unparsed == []
    assert {sid: s.state for sid, s in statuses.items()} == {sid: expected_state(STATES, *j) for sid, j in jobs.items()}
    for sid, (state, started) in jobs.items():
        assert statuses[sid].raw_state == state
        assert ("unknown PBS state" in statuses[sid].message) == (state not in STATES)
        assert statuses[sid].start_time == (local(STIME) if started else None)


@given(JOBS, st.data())
def test_parser_reads_output_cut_short_up_to_the_cut(jobs: dict[str, tuple[str, bool]], data: st.DataObject) -> None:
    text, ends = document(jobs)
    cut = data.draw(st.integers(0, len(text)))
    statuses, _ = parse_status(text[:cut])
    assert {sid for sid, end in ends.items() if end <= cut} <= set(statuses) <= set(jobs)
    assert all(status.state == expected_state(STATES, *jobs[sid]) for sid, status in statuses.items())


@given(st.text() | JSONISH.map(lambda jobs: json.dumps({"Jobs": jobs})))
def test_parser_never_raises_on_garbage(text: str) -> None:
    statuses, unparsed = parse_status(text)
    assert all(status.state in ("queued", "running", "finished") for status in statuses.values())
    assert all(isinstance(line, str) for line in unparsed)
