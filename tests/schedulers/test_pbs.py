"""PbsScheduler against fake qsub, qstat and qdel replaying PBS Pro output, and its qstat JSON parser."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from balsamctl.cli.app import app
from balsamctl.schedulers.base import Host, SchedulerError, SubmitRequest, UnsupportedScheduler
from balsamctl.schedulers.jsonish import Unread, members
from balsamctl.schedulers.pbs import STATES, PbsScheduler, parse_status
from balsamctl.schemas.settings import LocalNodes
from balsamctl.site.create import init_site
from tests.schedulers.fakes import JSONISH, Fakes, expected_state, job_script

SCHEDULER = "pbs"  # the fakes fixture (conftest.py) replays this scheduler's programs

NAME = "balsam-polaris-big-run-1a2b3c4d"
STIME = "Tue Nov 24 10:05:11 2026"
NODES = ("x3006c0s13b0n0", "x3006c0s13b1n0")
POLARIS = ".polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"
AURORA = ".aurora-pbs-0001.hostmgmt.cm.aurora.alcf.anl.gov"


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


# --- outputs as other projects recorded them (tests/schedulers/recorded/pbs/real/README.md) ---


@pytest.mark.parametrize(
    ("scenario", "expected", "after"),
    [
        (
            "env-leading-zeros",
            {f"412630{POLARIS}": "running", f"412631{POLARIS}": "queued", f"412632{POLARIS}": "finished"},
            "balsam-polaris-c-9c0d1e2f",
        ),
        (
            "env-malformed-numbers",
            {f"412640{POLARIS}": "running", f"412641{POLARIS}": "queued"},
            "balsam-polaris-b-5e6f7a8b",
        ),
        (
            "env-stray-backslashes",
            {f"412650{POLARIS}": "queued", f"412651{POLARIS}": "running"},
            "balsam-polaris-b-5e6f7a8b",
        ),
        (
            "polaris-invalid-escape",
            {f"412660{POLARIS}": "running", f"412661{POLARIS}": "queued"},
            "balsam-polaris-a-1a2b3c4d",
        ),
        (
            "env-bash-functions",
            {f"412670{POLARIS}": "running", f"412671{POLARIS}": "queued"},
            "balsam-polaris-b-5e6f7a8b",
        ),
        ("aurora-unquoted-values", {f"3001{AURORA}": "queued", f"3002{AURORA}": "running"}, "balsam-aurora-b-5e6f7a8b"),
        ("aurora-history", {f"3010{AURORA}": "finished"}, "balsam-aurora-a-1a2b3c4d"),
    ],
)
def test_qstat_json_as_pbs_prints_it_reads_every_record(
    sched: PbsScheduler, fakes: Fakes, scenario: str, expected: dict[str, str], after: str
) -> None:
    """PBS prints numeric-looking values bare, keeps stray backslashes, raw newlines and quotes: every allocation is
    still read, and find_by_name (every user's jobs) still finds the last one, after the broken records."""
    fakes.scenario(f"real/{scenario}")
    statuses = sched.status(list(expected))
    assert {sid: status.state for sid, status in statuses.items()} == expected
    assert sched.find_by_name(after) == list(expected)[-1]


def test_a_history_job_ends_with_its_exit_status(sched: PbsScheduler, fakes: Fakes) -> None:
    fakes.scenario("real/aurora-history")
    done = sched.status([f"3010{AURORA}"])[f"3010{AURORA}"]
    assert (done.state, done.exit_code, done.nodes[0]) == ("finished", -29, "x4102c0s0b0n0")
    assert done.message.startswith("walltime limit reached")


def test_a_record_that_cannot_be_read_is_said_never_dropped(sched: PbsScheduler, fakes: Fakes) -> None:
    """Reading goes on after a record that cannot be read even leniently; an allocation whose record that is is an
    error, never "gone", and find_by_name does not say "none" while that record may be the one."""
    fakes.scenario("garbled")
    assert sched.status(["8302.pbs01"])["8302.pbs01"].state == "queued"
    with pytest.raises(SchedulerError, match=r"cannot read the output of qstat about 8301\.pbs01"):
        sched.status(["8301.pbs01", "8302.pbs01"])
    assert sched.find_by_name("balsam-polaris-other-9f8e7d6c") == "8302.pbs01"
    assert sched.find_by_name(NAME) == "8305.pbs01"
    with pytest.raises(SchedulerError, match="cannot tell whether an allocation is called balsam-polaris-lost"):
        sched.find_by_name("balsam-polaris-lost-0a0b0c0d")


def test_output_cut_between_records_never_says_not_found(sched: PbsScheduler, fakes: Fakes) -> None:
    """qstat's JSON cut short after a complete record, before its closing braces (a prefix of env-leading-zeros):
    the records before the cut are read; a job past the cut is never "not found" (a restarted controller would
    submit it again) nor absent."""
    fakes.scenario("real/cut-between-records")
    assert sched.find_by_name("balsam-polaris-b-5e6f7a8b") == f"412631{POLARIS}"
    with pytest.raises(SchedulerError, match="cannot tell whether an allocation is called balsam-polaris-c"):
        sched.find_by_name("balsam-polaris-c-9c0d1e2f")
    assert sched.status([f"412630{POLARIS}"])[f"412630{POLARIS}"].state == "running"
    with pytest.raises(SchedulerError, match=r"about 412632\S*: a record: the output ends inside 'Jobs'"):
        sched.status([f"412632{POLARIS}"])


def test_a_job_missing_from_a_clean_answer_is_asked_for_alone(sched: PbsScheduler, fakes: Fakes) -> None:
    """OpenPBS may answer a multi-id qstat for the first job only, exit 0: the others are asked for alone."""
    fakes.scenario("real/multi-id-answers-one")
    ids = ["10.ip-10-0-6-176", "11.ip-10-0-6-176"]
    statuses = sched.status(ids)
    assert {sid: status.state for sid, status in statuses.items()} == dict.fromkeys(ids, "running")
    assert [call["argv"][4:] for call in fakes.calls] == [ids, ids[1:]]


def test_absent_when_qstat_says_it_does_not_know_the_job(sched: PbsScheduler, fakes: Fakes) -> None:
    fakes.scenario("real/unknown-job-id")
    assert sched.status([f"412635{POLARIS}"]) == {}
    assert len(fakes.calls) == 1


def test_a_job_neither_listed_nor_denied_is_not_taken_as_ended(sched: PbsScheduler, fakes: Fakes) -> None:
    fakes.scenario("real/missing-twice")
    with pytest.raises(SchedulerError, match=f"did not list 412681{POLARIS} when asked twice"):
        sched.status([f"412680{POLARIS}", f"412681{POLARIS}"])


def test_site_init_refuses_torque_naming_its_version(fakes: Fakes, tmp_path: Path) -> None:
    """`balsamctl site init --scheduler pbs` where qstat is Torque's: exit 1, the version found, no site made."""
    fakes.scenario("real/version-torque")
    result = CliRunner().invoke(app, ["site", "init", str(tmp_path / "s"), "--scheduler", "pbs"])
    assert result.exit_code == 1
    assert "qstat is Torque 6.1.2: it has no JSON output" in result.output
    assert not (tmp_path / "s").exists()
    fakes.scenario("real/version-polaris")
    init_site(tmp_path / "s", "s", "pbs", register=False).close()


def test_site_init_reads_pbs_and_refuses_torque(fakes: Fakes) -> None:
    fakes.scenario("real/version-polaris")
    assert PbsScheduler.check_version() == "PBS 2022.1.1.20220926110806"
    fakes.scenario("real/version-torque")
    with pytest.raises(UnsupportedScheduler, match=r"Torque 6\.1\.2: it has no JSON output"):
        PbsScheduler.check_version()
    fakes.scenario("real/torque-no-json")
    with pytest.raises(SchedulerError, match="invalid option -- 'F'"):
        PbsScheduler(Path("."), timeout=10).status(["8206.server"])


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
    statuses, unread = parse_status(text)
    assert all(status.state in ("queued", "running", "finished") for status in statuses.values())
    assert all(isinstance(record, Unread) for record in unread)


# What PBS prints bare: digits that may not be JSON numbers (005, .5, 12., -00), resource strings (1:ncpus=64)
BARE = st.from_regex(
    r"-?([0-9]{1,6}|\.[0-9]{1,3}|[0-9]{1,3}\.|[0-9]{1,3}\.[0-9]{1,3}|0[0-9]{1,5}|[0-9]{1,3}e[0-9]{1,2}x?)"
    r"(:ncpus=[0-9]{1,3})?",
    fullmatch=True,
)
NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
RAW = st.text(st.sampled_from("ab $(){}@:-\n\t"), max_size=12)  # bash functions: raw newlines, braces, no escapes
STRAY = st.text(st.sampled_from("ab,' "), max_size=8)  # PBS keeps a backslash before , and '
VALUES = st.one_of(
    BARE.map(lambda v: (v, json.loads(v) if NUMBER.fullmatch(v) else v)),
    st.text(max_size=12).map(lambda v: (json.dumps(v), v)),
    RAW.map(lambda v: (f'"{v}"', v)),
    STRAY.map(lambda v: ('"' + v.replace(",", "\\,").replace("'", "\\'") + '"', v)),
)
RECORD = st.tuples(
    st.sampled_from(sorted(STATES)),
    st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), VALUES, max_size=4),
)
RECORDS = st.dictionaries(st.integers(1, 10**7).map(lambda n: f"{n}.pbs01"), RECORD, max_size=6)
# few small ids: job names (job-<id>) that are prefixes of one another (job-1, job-12)
FEW_RECORDS = st.dictionaries(st.integers(1, 150).map(lambda n: f"{n}.pbs01"), RECORD, max_size=5)


def job_name(sid: str) -> str:
    return f"job-{sid.split('.')[0]}"


def as_pbs_prints(records: dict[str, tuple[str, dict[str, tuple[str, Any]]]]) -> tuple[str, dict[str, int]]:
    """qstat -f -F json output as PBS writes it: four-space indentation, every member on its own line, each value
    printed as PBS prints it (the first of each pair); and where each job's record ends in it."""
    text, ends = '{\n    "pbs_version":"2022.1.5",\n    "Jobs":{\n', {}
    for i, (sid, (state, variables)) in enumerate(records.items()):
        lines = [
            f'        "{sid}":{{',
            f'            "Job_Name":"{job_name(sid)}",',
            f'            "job_state":"{state}",',
        ]
        lines += [
            '            "Variable_List":{',
            *[f'                "{k}":{printed},' for k, (printed, _) in variables.items()],
        ]
        lines += ['                "PBS_O_HOME":"/home/balsam"', "            }", "        }"]
        text += (",\n" if i else "") + "\n".join(lines)
        ends[sid] = len(text)
    return text + "\n    }\n}\n", ends


@given(RECORDS)
def test_parser_reads_back_every_record_as_pbs_prints_it(
    records: dict[str, tuple[str, dict[str, tuple[str, Any]]]],
) -> None:
    """Any record set, with values printed bare, with stray backslashes or raw newlines, reads back every record
    and every value."""
    text, _ = as_pbs_prints(records)
    read, unread = members(text, "Jobs")
    assert unread == []
    assert {sid: job["Variable_List"] for sid, job in read} == {
        sid: {**{k: value for k, (_, value) in variables.items()}, "PBS_O_HOME": "/home/balsam"}
        for sid, (_, variables) in records.items()
    }
    statuses, _ = parse_status(text)
    assert {sid: status.raw_state for sid, status in statuses.items()} == {
        sid: state for sid, (state, _) in records.items()
    }


class Printing(PbsScheduler):
    """A PbsScheduler whose qstat prints ``output`` whatever it is asked."""

    def __init__(self, output: str) -> None:
        super().__init__(Path("."))
        self.output = output

    def _run(self, argv: list[str], input: str | None = None) -> str:
        return self.output


@settings(deadline=None)  # no timing: it runs qstat's reading twice per job
@given(FEW_RECORDS, st.data())
def test_output_cut_anywhere_never_loses_an_allocation(
    records: dict[str, tuple[str, dict[str, tuple[str, Any]]]], data: st.DataObject
) -> None:
    """Any prefix of qstat's output: a job whose record ends before the cut is found and read; one whose record is
    cut or missing past the cut is an error, never "not found" by find_by_name (a restarted controller would
    submit it again) nor absent from status, and never taken for another."""
    text, ends = as_pbs_prints(records)
    names = [text.index(f'"Job_Name":"{job_name(sid)}"') + len('"Job_Name":"') for sid in records]
    inside_a_name = [start + n for start in names for n in range(len("job-") + 1, len("job-123") + 1)]  # job-1|23
    cut = data.draw(st.integers(0, len(text)) | st.sampled_from(inside_a_name or [0]))
    sched = Printing(text[:cut])
    for sid, (state, _) in records.items():
        whole = ends[sid] <= cut
        try:
            found = sched.find_by_name(job_name(sid))
        except SchedulerError:
            assert not whole
        else:
            assert found == sid
        try:
            statuses = sched.status([sid])
        except SchedulerError:
            assert not whole
        else:
            assert statuses[sid].raw_state == state


def test_a_job_name_cut_short_is_not_taken_for_a_shorter_one() -> None:
    """job-12's record cut inside its Job_Name, after "job-1", and job-1's record past the cut: job-12 is not taken
    for job-1, nor is job-1 "not found"."""
    text, _ = as_pbs_prints({"12.pbs01": ("R", {}), "1.pbs01": ("R", {})})
    with pytest.raises(SchedulerError, match="cannot tell whether an allocation is called job-1: "):
        Printing(text[: text.index('"job-12"') + len('"job-1')]).find_by_name("job-1")


# --- the allocation's nodes, from the job's environment ---


def test_hosts_from_the_pbs_node_file(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x1.local\nx1.local\nx2.local\nx1.local\n")  # a host once per chunk or slot
    hosts = PbsScheduler.hosts_from_environment({"PBS_NODEFILE": str(nodefile)}, LocalNodes())
    assert hosts == [Host("x1.local"), Host("x2.local")]
    assert PbsScheduler.hosts_from_environment({}, LocalNodes()) == [], "not inside an allocation"
