"""LsfScheduler against fake bsub, bjobs and bkill replaying LSF output, and its bjobs JSON parser."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balsamctl.schedulers.base import Host, SchedulerError, SubmitRequest, UnsupportedScheduler
from balsamctl.schedulers.jsonish import Unread
from balsamctl.schedulers.lsf import FIELDS, STATES, LsfScheduler, parse_status
from balsamctl.schemas.settings import LocalNodes
from tests.schedulers.fakes import JSONISH, Fakes, expected_state, job_script

SCHEDULER = "lsf"  # the fakes fixture (conftest.py) replays this scheduler's programs

NAME = "balsam-summit-big-run-1a2b3c4d"
NODES = ("batch3", "h36n01", "h36n02")  # LSF lists the launch node first
NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)


@pytest.fixture
def sched(fakes: Fakes, tmp_path: Path) -> LsfScheduler:
    return LsfScheduler(tmp_path, timeout=10)


@pytest.fixture
def req(tmp_path: Path) -> SubmitRequest:
    script = tmp_path / "qsubmit" / "big-run.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/bash\n#BSUB -alloc_flags smt4\n")
    return SubmitRequest(script, NAME, 2, 90, "batch", "csc123", tmp_path / "out", ("-alloc_flags", "gpumps"))


def local(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    """A local time of this machine as UTC."""
    return datetime(year, month, day, hour, minute, second).astimezone(UTC)


def test_submit_command_is_exact(sched: LsfScheduler, req: SubmitRequest) -> None:
    assert sched.submit_command(req) == [
        *("bsub", "-J", NAME, "-nnodes", "2", "-W", "90", "-q", "batch", "-P", "csc123"),
        *("-o", str(req.output_dir / f"{NAME}.%J.out"), "-alloc_flags", "gpumps"),
    ]


def test_submit_feeds_the_script_to_bsub(sched: LsfScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    fakes.scenario("submit")
    assert sched.submit(req) == "4213"
    assert fakes.calls == [
        {"prog": "bsub", "argv": sched.submit_command(req)[1:], "stdin": req.script_path.read_text()}
    ]


def test_a_refusal_carries_the_words_of_bsub(sched: LsfScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    fakes.scenario("refused")
    with pytest.raises(SchedulerError, match=r"Queue <nosuch>: No such queue\. Job not submitted\.") as caught:
        sched.submit(req)
    assert caught.value.returncode == 255


def test_every_state_from_one_bjobs_call(sched: LsfScheduler, fakes: Fakes) -> None:
    path = fakes.scenario("status")
    records = json.loads((path / "bjobs.stdout").read_text())["RECORDS"]
    jobs = {r["JOBID"]: r["STAT"] for r in records if "STAT" in r}
    assert set(jobs.values()) == set(STATES)  # the fixture has every documented state
    statuses = sched.status([*jobs, "4299"])  # 4299: bjobs says "not found" in its JSON
    assert [call["argv"] for call in fakes.calls] == [["-json", "-a", "-o", FIELDS, *jobs, "4299"]]
    assert {sid: (s.raw_state, s.state) for sid, s in statuses.items()} == {
        sid: (stat, STATES[stat]) for sid, stat in jobs.items()
    }
    running = statuses["4205"]
    assert running.nodes == NODES and running.end_time is None
    assert running.start_time is not None
    assert running.start_time.astimezone().timetuple()[1:5] == (11, 24, 10, 5)
    assert statuses["4201"].start_time is None and statuses["4201"].nodes == ()
    done = statuses["4210"]
    assert done.exit_code == 0 and done.end_time is not None
    assert done.end_time.astimezone().timetuple()[1:5] == (11, 24, 10, 41)
    walltime = statuses["4211"]
    assert (walltime.state, walltime.exit_code) == ("finished", 140)
    assert walltime.message.startswith("TERM_RUNLIMIT")


def test_an_unknown_state_is_kept(sched: LsfScheduler, fakes: Fakes) -> None:
    fakes.scenario("unknown-state")
    statuses = sched.status(["4220", "4221"])
    assert (statuses["4220"].state, statuses["4221"].state) == ("running", "queued")
    assert statuses["4220"].message == "unknown LSF state FROZEN"


def test_ids_bjobs_does_not_know_are_absent(sched: LsfScheduler, fakes: Fakes) -> None:
    fakes.scenario("unknown-ids")
    assert list(sched.status(["4205", "4298"])) == ["4205"]
    assert [call["argv"][-2:] for call in fakes.calls] == [["4205", "4298"], [FIELDS, "4205"]]


def test_a_hang_times_out(fakes: Fakes, tmp_path: Path) -> None:
    fakes.assert_a_hang_times_out(lambda: LsfScheduler(tmp_path, timeout=0.5).status(["4205"]))


def test_cancel_runs_bkill(sched: LsfScheduler, fakes: Fakes) -> None:
    fakes.scenario("cancel")
    sched.cancel("4205")
    fakes.scenario("cancel-finished")
    sched.cancel("4210")  # "Job has already finished": nothing to do
    assert [[call["prog"], *call["argv"]] for call in fakes.calls] == [["bkill", "4205"], ["bkill", "4210"]]
    fakes.scenario("cancel-refused")
    with pytest.raises(SchedulerError, match="User permission denied"):
        sched.cancel("4210")


def test_find_by_name_picks_the_newest_allocation(sched: LsfScheduler, fakes: Fakes) -> None:
    fakes.scenario("find")
    assert sched.find_by_name(NAME) == "4305"
    assert fakes.calls[0]["argv"] == ["-json", "-a", "-o", FIELDS, "-J", NAME]
    fakes.scenario("find-none")
    assert sched.find_by_name(NAME) is None


def test_job_template(tmp_path: Path) -> None:
    lines, command = job_script(tmp_path, "lsf", alloc="smt4")
    assert lines[0] == "#!/bin/bash" and lines[-1] == command
    assert {"#BSUB -rn", "export BALSAM_OPT_ALLOC=smt4"} <= set(lines)


# --- outputs as other projects recorded them (tests/schedulers/recorded/lsf/real/README.md) ---


def test_summit_bjobs_and_bsub(sched: LsfScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    fakes.scenario("real/summit-bjobs")
    statuses = sched.status(["806290", "806291"])
    assert (statuses["806290"].state, statuses["806290"].nodes) == ("running", ("batch2", "a01n01", "a01n02"))
    walltime = statuses["806291"]
    assert (walltime.state, walltime.exit_code) == ("finished", 140)
    assert sched.find_by_name("balsam-summit-b-5e6f7a8b") == "806291"
    fakes.scenario("real/summit-bsub")
    assert sched.submit(req) == "806292"


def test_an_id_bjobs_no_longer_knows_is_absent_once_it_says_so(sched: LsfScheduler, fakes: Fakes) -> None:
    fakes.scenario("real/summit-not-found")
    assert sched.status(["806299"]) == {}
    assert len(fakes.calls) == 1


def test_an_id_missing_from_a_clean_answer_is_asked_for_alone(sched: LsfScheduler, fakes: Fakes) -> None:
    fakes.scenario("real/summit-bjobs")  # asked for 806293 too, bjobs answers without it and without an ERROR
    with pytest.raises(SchedulerError, match="bjobs did not list 806293 when asked twice"):
        sched.status(["806290", "806293"])
    assert [call["argv"][4:] for call in fakes.calls] == [["806290", "806293"], ["806293"]]


def test_output_cut_between_records_never_says_not_found(sched: LsfScheduler, fakes: Fakes) -> None:
    """bjobs's JSON cut short after a complete record, before the end of RECORDS (a prefix of summit-bjobs): a job
    past the cut is never "not found" (a restarted controller would submit it again) nor absent; no answer at all is
    no better."""
    fakes.scenario("real/summit-bjobs-cut")
    assert sched.find_by_name("balsam-summit-a-1a2b3c4d") == "806290"
    with pytest.raises(SchedulerError, match="cannot tell whether an allocation is called balsam-summit-b"):
        sched.find_by_name("balsam-summit-b-5e6f7a8b")
    with pytest.raises(SchedulerError, match="about 806291: a record: the output ends inside 'RECORDS'"):
        sched.status(["806291"])
    fakes.scenario("none")  # bjobs exits 0 and prints nothing
    with pytest.raises(SchedulerError, match="a record: no 'RECORDS' in the output"):
        sched.find_by_name("balsam-summit-b-5e6f7a8b")


def test_site_init_refuses_lsf_without_json(fakes: Fakes) -> None:
    fakes.scenario("real/lsid-10.1")
    assert LsfScheduler.check_version() == "LSF 10.1.0.15"
    fakes.scenario("real/lsid-9.1")
    with pytest.raises(UnsupportedScheduler, match=r"LSF 9\.1\.3\.0: its bjobs has no -json"):
        LsfScheduler.check_version()


# --- the parser, on recorded and generated output ---


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("Nov 24 10:05", local(2026, 11, 24, 10, 5)),
        ("Nov 24 10:05 L", local(2026, 11, 24, 10, 5)),
        ("Jan  7 09:59 E", local(2026, 1, 7, 9, 59)),
        ("Dec 31 23:59", local(2025, 12, 31, 23, 59)),  # bjobs prints no year: the latest past one
        ("Nov 24 10:05:31 2025", local(2025, 11, 24, 10, 5, 31)),
        ("-", None),
        ("", None),
        ("Nov 31 10:05", None),
    ],
)
def test_times(printed: str, expected: datetime | None) -> None:
    record = {"JOBID": "1", "STAT": "RUN", "START_TIME": printed}
    status = parse_status(json.dumps({"RECORDS": [record]}), now=NOW)[0]["1"]
    assert status.start_time == expected


STATE = st.sampled_from(sorted(STATES)) | st.text(min_size=1, max_size=6).filter(lambda s: s not in STATES)
JOBS = st.dictionaries(st.integers(1, 10**7).map(str), st.tuples(STATE, st.booleans()), max_size=8)  # state, started


def document(jobs: dict[str, tuple[str, bool]]) -> tuple[str, dict[str, int]]:
    """bjobs -json output for ``jobs`` with an ERROR record between each two, and where each job's record ends."""
    text, ends = f'{{\n  "COMMAND":"bjobs",\n  "JOBS":{2 * len(jobs)},\n  "RECORDS":[', {}
    for i, (sid, (state, started)) in enumerate(jobs.items()):
        record: dict[str, Any] = {"JOBID": sid, "STAT": state, "EXIT_CODE": "", "START_TIME": ""}
        record.update({"START_TIME": "Nov 24 10:05", "EXEC_HOST": "1*batch3:42*h36n01"} if started else {})
        text += ("," if i else "") + json.dumps({"JOBID": f"9{sid}", "ERROR": f"Job <9{sid}> is not found"})
        text += "," + json.dumps(record, indent=2)
        ends[sid] = len(text)
    return text + "]\n}\n", ends


@given(JOBS)
def test_parser_maps_every_record_per_the_table(jobs: dict[str, tuple[str, bool]]) -> None:
    statuses, unparsed = parse_status(document(jobs)[0], now=NOW)
    assert unparsed == []
    assert {sid: s.state for sid, s in statuses.items()} == {sid: expected_state(STATES, *j) for sid, j in jobs.items()}
    for sid, (state, started) in jobs.items():
        assert statuses[sid].raw_state == state
        assert ("unknown LSF state" in statuses[sid].message) == (state not in STATES)
        assert statuses[sid].start_time == (local(2026, 11, 24, 10, 5) if started else None)
        assert statuses[sid].exit_code == (0 if state == "DONE" else None)


@given(JOBS, st.data())
def test_parser_reads_output_cut_short_up_to_the_cut(jobs: dict[str, tuple[str, bool]], data: st.DataObject) -> None:
    text, ends = document(jobs)
    cut = data.draw(st.integers(0, len(text)))
    statuses, _ = parse_status(text[:cut], now=NOW)
    assert {sid for sid, end in ends.items() if end <= cut} <= set(statuses) <= set(jobs)
    assert all(status.state == expected_state(STATES, *jobs[sid]) for sid, status in statuses.items())


@given(st.text() | JSONISH.map(lambda records: json.dumps({"RECORDS": records})))
def test_parser_never_raises_on_garbage(text: str) -> None:
    statuses, unread = parse_status(text, now=NOW)
    assert all(status.state in ("queued", "running", "finished") for status in statuses.values())
    assert all(isinstance(record, Unread) for record in unread)


# --- the allocation's nodes, from the job's environment ---


def test_hosts_from_the_lsf_environment_skip_the_launch_host() -> None:
    env = {"LSB_MCPU_HOSTS": "batch1 1 a01 42 a02 40", "LSB_HOSTS": "batch1 a01 a01 a02"}
    assert LsfScheduler.hosts_from_environment(env, LocalNodes()) == [Host("a01", 42), Host("a02", 40)]
    alone = {"LSB_MCPU_HOSTS": "h1 4 h2 4"}  # no LSB_HOSTS to tell the launch host: every host is kept
    assert LsfScheduler.hosts_from_environment(alone, LocalNodes()) == [Host("h1", 4), Host("h2", 4)]
    assert LsfScheduler.hosts_from_environment({}, LocalNodes()) == [], "not inside an allocation"
    with pytest.raises(ValueError, match="malformed LSB_MCPU_HOSTS"):
        LsfScheduler.hosts_from_environment({"LSB_MCPU_HOSTS": "h1 4 h2"}, LocalNodes())
