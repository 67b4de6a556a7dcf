"""CobaltScheduler against fake qsub, qstat and qdel replaying Cobalt output, and its qstat table parser."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balsamctl.schedulers.base import Host, SchedulerError, SubmitRequest
from balsamctl.schedulers.cobalt import HEADER, STATES, CobaltScheduler, parse_status
from balsamctl.schedulers.jsonish import Unread
from balsamctl.schemas.settings import LocalNodes
from tests.schedulers.fakes import Fakes, expected_state, job_script

SCHEDULER = "cobalt"  # the fakes fixture (conftest.py) replays this scheduler's programs

NAME = "balsam-theta-big-run-1a2b3c4d"
START = "Tue Nov 24 16:05:11 2026 +0000 (UTC)"
QSTAT = ["--header", "JobID:JobName:State:StartTime:Location", "-u", "balsam"]


@pytest.fixture
def sched(fakes: Fakes, tmp_path: Path) -> CobaltScheduler:
    return CobaltScheduler(tmp_path, timeout=10, user="balsam")


@pytest.fixture
def req(tmp_path: Path) -> SubmitRequest:
    script = tmp_path / "qsubmit" / "big-run.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/bash\n")
    script.chmod(0o600)
    return SubmitRequest(
        script, NAME, 2, 30, "debug-cache-quad", "datascience", tmp_path / "out", ("--attrs", "ssds=required")
    )


def table(rows: list[tuple[str, ...]]) -> str:
    """qstat's table as Cobalt prints it: job ids right-aligned, then every column left-aligned to its widest value
    and followed by two spaces, a rule of '=' under the titles."""
    width = max((len(row[0]) for row in rows), default=0)
    lines = [HEADER, *((row[0].rjust(width), *row[1:]) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    text = ["".join(f"{value:<{w}}  " for value, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join([text[0], "=" * (sum(widths) + 2 * len(widths)), *text[1:]]) + "\n"


def test_submit_command_is_exact(sched: CobaltScheduler, req: SubmitRequest) -> None:
    assert sched.submit_command(req) == [
        *("qsub", "-n", "2", "-t", "30", "-q", "debug-cache-quad", "-A", "datascience", "--jobname", NAME),
        *("-O", str(req.output_dir / NAME), "--attrs", "ssds=required", str(req.script_path)),
    ]


def test_submit_returns_the_job_id(sched: CobaltScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    fakes.scenario("submit")
    assert sched.submit(req) == "355114"
    assert fakes.calls == [{"prog": "qsub", "argv": sched.submit_command(req)[1:], "stdin": ""}]
    assert req.script_path.stat().st_mode & 0o100  # Cobalt runs the script itself


def test_a_refusal_carries_the_words_of_qsub(sched: CobaltScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    fakes.scenario("refused")
    with pytest.raises(SchedulerError, match="Invalid queue: nosuch") as caught:
        sched.submit(req)
    assert caught.value.returncode == 1


def test_every_state_from_one_qstat_call(sched: CobaltScheduler, fakes: Fakes) -> None:
    path = fakes.scenario("status")
    rows = [line.split()[:3] for line in (path / "qstat.stdout").read_text().splitlines()[2:]]
    assert {state for _, _, state in rows} == set(STATES)  # the fixture has every documented state
    statuses = sched.status([sid for sid, _, _ in rows])
    assert [call["argv"] for call in fakes.calls] == [QSTAT]
    assert {sid: (s.raw_state, s.state) for sid, s in statuses.items()} == {
        sid: (state, STATES[state]) for sid, _, state in rows
    }
    running = statuses["355109"]
    assert running.nodes == ("3824", "3825", "3826", "3827", "3830")
    assert running.start_time == datetime(2026, 11, 24, 16, 5, 11, tzinfo=UTC)
    assert (statuses["355101"].start_time, statuses["355101"].nodes) == (None, ())


def test_ids_two_answers_of_qstat_no_longer_list_are_absent(sched: CobaltScheduler, fakes: Fakes) -> None:
    """Cobalt keeps no history: a second answer without the job is its only word that the job has ended."""
    fakes.scenario("status")
    assert list(sched.status(["355109", "355000"])) == ["355109"]
    assert [call["argv"] for call in fakes.calls] == [QSTAT, QSTAT]
    fakes.scenario("empty")
    assert sched.status(["355109"]) == {}


def test_a_job_missing_from_one_answer_is_not_taken_as_ended(sched: CobaltScheduler, fakes: Fakes) -> None:
    fakes.scenario("vanished-once")
    assert sched.status(["355109"])["355109"].state == "running"


def test_an_unknown_state_is_kept(sched: CobaltScheduler, fakes: Fakes) -> None:
    fakes.scenario("unknown-state")
    statuses = sched.status(["355120", "355121"])
    assert (statuses["355120"].state, statuses["355121"].state) == ("running", "queued")
    assert statuses["355120"].message == "unknown Cobalt state frozen"


def test_a_hang_times_out(fakes: Fakes, tmp_path: Path) -> None:
    fakes.assert_a_hang_times_out(lambda: CobaltScheduler(tmp_path, timeout=0.5, user="balsam").status(["355109"]))


def test_cancel_runs_qdel(sched: CobaltScheduler, fakes: Fakes) -> None:
    fakes.scenario("cancel")
    sched.cancel("355109")
    fakes.scenario("cancel-gone")
    sched.cancel("355113")  # "Failed to match any jobs": nothing to do
    assert [[call["prog"], *call["argv"]] for call in fakes.calls] == [["qdel", "355109"], ["qdel", "355113"]]


def test_find_by_name_picks_the_newest_allocation(sched: CobaltScheduler, fakes: Fakes) -> None:
    fakes.scenario("find")
    assert sched.find_by_name(NAME) == "355305"
    assert sched.find_by_name("balsam-theta-nothing-00000000") is None
    assert fakes.calls[0]["argv"] == QSTAT


def test_find_by_name_never_says_none_while_a_row_that_may_be_it_cannot_be_read(
    sched: CobaltScheduler, fakes: Fakes
) -> None:
    """As with PBS and LSF: a row that cannot be read and names the job, a last row cut short, or no table at all is
    an error, never "not found" (a restarted controller would submit the allocation again); a row that cannot be
    read and names another job does not stop the search."""
    fakes.scenario("find-unreadable")
    assert sched.find_by_name(NAME) == "355305"
    assert sched.find_by_name("balsam-theta-nothing-00000000") is None
    with pytest.raises(SchedulerError, match="called balsam-theta-lost-0a0b0c0d: a record: not a row of the table"):
        sched.find_by_name("balsam-theta-lost-0a0b0c0d")
    fakes.scenario("find-cut")
    with pytest.raises(SchedulerError, match="called balsam-theta-other-9f8e7d6c: a record: the output ends inside"):
        sched.find_by_name("balsam-theta-other-9f8e7d6c")
    fakes.scenario("none")  # qstat exits 0 and prints nothing, not even the header it always prints
    with pytest.raises(SchedulerError, match=f"called {NAME}: a record: no table header"):
        sched.find_by_name(NAME)


def test_an_answer_without_the_table_never_takes_a_job_as_ended(sched: CobaltScheduler, fakes: Fakes) -> None:
    """Cobalt's qstat prints its header even when it lists no job: two answers with nothing at all (nor a header)
    are not its word that the job has ended."""
    fakes.scenario("none")
    with pytest.raises(SchedulerError, match="cannot read the output of qstat about 355109: a record: no table header"):
        sched.status(["355109"])


@pytest.mark.parametrize(("prime", "primed"), [("yes", True), ("no", False)])
def test_job_template(tmp_path: Path, prime: str, primed: bool) -> None:
    lines, command = job_script(tmp_path, "cobalt", singularity_prime_cache=prime)
    assert lines[0] == "#!/bin/bash" and lines[-1] == command
    assert "export PMI_NO_FORK=1" in lines
    aprun = [i for i, line in enumerate(lines) if line.startswith('aprun -n "$COBALT_JOBSIZE" -N 1 ')]
    assert bool(aprun) == primed


# --- outputs as other projects recorded them (tests/schedulers/recorded/cobalt/real/README.md) ---


@pytest.mark.parametrize(
    ("scenario", "job_id"),
    [("theta-knl-lifecycle", "106040"), ("thetagpu-single-gpu", "10076391"), ("theta-filter-notes", "603441")],
)
def test_qsub_as_theta_answers_gives_the_job_id(
    sched: CobaltScheduler, fakes: Fakes, req: SubmitRequest, scenario: str, job_id: str
) -> None:
    """Theta's qsub prints the id alone on stdout; its site filters' notes (queue routing, memory mode, filesystems)
    go to stderr and are no refusal."""
    fakes.scenario(f"real/{scenario}")
    assert sched.submit(req) == job_id


def test_a_project_line_before_the_id_is_not_the_id(sched: CobaltScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    fakes.scenario("real/qsub-project-line")  # "Project: JCESR2015" on the line before
    assert sched.submit(req) == "12345"


@pytest.mark.parametrize(
    ("scenario", "words"),
    [
        ("theta-walltime-refused", "Walltime less than the 'default' queue min walltime of 00:30:00"),
        ("theta-filter-refused", "Jobs smaller than 256 nodes are limited to 3 hours."),
    ],
)
def test_a_refusal_on_theta_carries_its_reason(
    sched: CobaltScheduler, fakes: Fakes, req: SubmitRequest, scenario: str, words: str
) -> None:
    """After the filter's routing note, the reason the job was refused is in the error the user sees."""
    fakes.scenario(f"real/{scenario}")
    with pytest.raises(SchedulerError) as caught:
        sched.submit(req)
    assert caught.value.returncode == 1
    assert words in str(caught.value)


def test_a_theta_job_from_submission_to_running(sched: CobaltScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    """Theta's site header (no StartTime nor Location, an ``attrs`` column whose values hold spaces): the job is read
    by its columns' titles through queued, starting (prologue: running for the allocation) and running."""
    fakes.scenario("real/theta-knl-lifecycle")
    job_id = sched.submit(req)
    seen = [sched.status([job_id])[job_id] for _ in range(3)]
    assert [(s.raw_state, s.state) for s in seen] == [
        ("queued", "queued"),
        ("starting", "running"),
        ("running", "running"),
    ]
    assert all(s.nodes == () and s.start_time is None for s in seen)
    assert sched.find_by_name(NAME) is None  # a JobName column, and only the unnamed job (N/A) in it


def test_a_thetagpu_job_runs_on_a_gpu_of_a_node(sched: CobaltScheduler, fakes: Fakes, req: SubmitRequest) -> None:
    fakes.scenario("real/thetagpu-single-gpu")
    job_id = sched.submit(req)
    queued, starting = (sched.status([job_id])[job_id] for _ in range(2))
    assert (queued.state, queued.nodes) == ("queued", ())
    assert (starting.state, starting.nodes) == ("running", ("thetagpu16-gpu1",))


def test_a_table_without_job_names_never_says_no_allocation_has_the_name(sched: CobaltScheduler, fakes: Fakes) -> None:
    """qstat's default header (JobID User WallTime Nodes State Location, as ThetaGPU printed it) names no job: a
    restarted controller must not take that for "no allocation called so" and submit it again."""
    fakes.scenario("real/thetagpu-single-gpu")
    with pytest.raises(SchedulerError, match=f"cannot tell whether an allocation is called {NAME}: .*no JobName"):
        sched.find_by_name(NAME)
    fakes.scenario("empty")  # no job at all: nothing can have the name
    assert sched.find_by_name(NAME) is None


def test_a_table_whose_values_are_not_under_their_titles_is_read_by_its_gaps(
    sched: CobaltScheduler, fakes: Fakes
) -> None:
    """fireworks recorded Mira's qstat with the values shifted off their titles (and ``wsculline prod-short`` one
    space apart): every row is still read, by the runs of spaces between its values."""
    fakes.scenario("real/mira-hand-aligned")
    statuses = sched.status(["966975", "977799", "978183", "978144", "977859"])
    assert {sid: s.state for sid, s in statuses.items()} == {
        "966975": "running",
        "977799": "running",
        "978183": "queued",
        "978144": "queued",
        "977859": "queued",
    }
    assert statuses["966975"].nodes == ("OBL-40000-73FF1-8192",)  # a Blue Gene block, as Cobalt names it
    assert (sched.find_by_name("R4Ndom"), sched.find_by_name("LOG-.n512.c.577183")) == ("978144", "978183")
    # a row that gives one value too many either way is said, never dropped
    statuses, unread = parse_status(table([("7", "x", "running", START, "10-11")]) + "8  two  words  x  queued  N/A\n")
    assert (list(statuses), [record.text for record in unread]) == (["7"], ["8  two  words  x  queued  N/A"])


def test_cluster_locations_name_every_node(sched: CobaltScheduler, fakes: Fakes) -> None:
    """Cobalt compacts a cluster's (Cooley's, ThetaGPU's) locations as ``cc[42-44]`` and ``cc01-gpu[0-3]``, a Cray's
    as ``5-7``: each stands for every location in it, numbers as wide as written."""
    fakes.scenario("real/cluster-locations")
    nodes = {sid: s.nodes for sid, s in sched.status([str(n) for n in range(194001, 194007)]).items()}
    gpus = tuple(f"cc01-gpu{n}" for n in range(4))
    assert nodes == {
        "194001": ("cc01", "cc42", "cc43", "cc44"),
        "194002": ("bombadil", "cc01", "cc42", "cc43", "cc44", "frodo"),
        "194003": gpus,
        "194004": ("cc01-gpu2", "cc01-gpu3", "cc02-gpu0", "cc02-gpu1"),
        "194005": ("1", "3", "5", "6", "7", "112"),
        "194006": (),
    }


def test_qdel_of_a_job_cobalt_no_longer_knows_is_done(sched: CobaltScheduler, fakes: Fakes) -> None:
    """Cobalt's qdel lists the jobs it deleted; for one it no longer knows it prints nothing and exits 0."""
    fakes.scenario("real/qdel-then-unknown")
    sched.cancel("1")
    sched.cancel("1")
    assert [[call["prog"], *call["argv"]] for call in fakes.calls] == [["qdel", "1"], ["qdel", "1"]]


# --- the parser, on recorded and generated output ---


def test_parser_reads_columns_by_position() -> None:
    text = "\nsome banner\n" + table(
        [("7", "two  spaces", "running", START, "10-11,12"), ("8", "x", "queued", "N/A", "None")]
    )
    statuses, unparsed = parse_status(text)
    assert statuses["7"].start_time == datetime(2026, 11, 24, 16, 5, 11, tzinfo=UTC)
    assert statuses["7"].nodes == ("10", "11", "12") and statuses["8"].nodes == ()
    assert unparsed == []  # the banner is not the table's


ROWS = st.dictionaries(
    st.integers(1, 10**7).map(str),
    st.tuples(
        st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True),  # name
        st.sampled_from(sorted(STATES)) | st.from_regex(r"[a-z_]{1,12}", fullmatch=True),  # state
        st.booleans(),  # started
    ),
    max_size=8,
)


def rows_of(jobs: dict[str, tuple[str, str, bool]]) -> list[tuple[str, ...]]:
    return [
        (sid, name, state, START if started else "N/A", "100-103" if started else "None")
        for sid, (name, state, started) in jobs.items()
    ]


@given(ROWS)
def test_parser_maps_every_row_per_the_table(jobs: dict[str, tuple[str, str, bool]]) -> None:
    statuses, unparsed = parse_status(table(rows_of(jobs)))
    assert unparsed == []
    assert {sid: s.state for sid, s in statuses.items()} == {
        sid: expected_state(STATES, state, started) for sid, (_, state, started) in jobs.items()
    }
    for sid, (_, state, started) in jobs.items():
        assert statuses[sid].raw_state == state
        assert ("unknown Cobalt state" in statuses[sid].message) == (state not in STATES)
        assert len(statuses[sid].nodes) == (4 if started else 0)


@given(ROWS, st.data())
def test_parser_reads_output_cut_short_up_to_the_cut(
    jobs: dict[str, tuple[str, str, bool]], data: st.DataObject
) -> None:
    text = table(rows_of(jobs))
    cut = data.draw(st.integers(0, len(text)))
    statuses, _ = parse_status(text[:cut])
    complete = text[:cut].split("\n")[2:-1]  # the rows that have their newline
    assert {line.split()[0] for line in complete} <= set(statuses) <= set(jobs)
    assert all(status.state == expected_state(STATES, *jobs[sid][1:]) for sid, status in statuses.items())


@given(
    st.text() | st.lists(st.sampled_from(["JobID  State", "=====", "12  running", "x  y  z", "  ", "1"])).map("\n".join)
)
def test_parser_never_raises_on_garbage(text: str) -> None:
    statuses, unread = parse_status(text)
    assert all(status.state in ("queued", "running", "finished") for status in statuses.values())
    assert all(isinstance(record, Unread) for record in unread)


@given(ROWS, st.data())
def test_parser_reads_rows_off_their_titles_or_says_it_cannot(
    jobs: dict[str, tuple[str, str, bool]], data: st.DataObject
) -> None:
    """Rows re-spaced by hand (values moved off their titles, two or more spaces apart): each row is read as its
    values say, or said unread; never read as another job's, nor dropped."""
    rows = [(sid, name, state, "N/A", "None") for sid, (name, state, _) in jobs.items()]
    header, rule = table([]).splitlines()
    lines = ["  ".join(value + " " * data.draw(st.integers(0, 4)) for value in row) for row in rows]
    statuses, unread = parse_status("\n".join([header, rule, *lines]) + "\n")
    assert {sid: s.raw_state for sid, s in statuses.items()} == {sid: jobs[sid][1] for sid in statuses}
    assert set(jobs) - set(statuses) <= {record.text.split()[0] for record in unread}


@given(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.integers(0, 999), st.integers(0, 20), st.integers(1, 3))
def test_a_bracketed_range_stands_for_each_of_its_locations(prefix: str, low: int, count: int, width: int) -> None:
    """As Cobalt's merge_nodelist compacts a cluster's locations: ``cc[042-044]``, ``cc01-gpu[0-3]``."""
    first, last = str(low).zfill(width), str(low + count).zfill(width)
    row = {"jobid": "1", "state": "running", "location": f"{prefix}[{first}-{last}]-gpu[0-1],x9"}
    statuses, _ = parse_status(table([("1", "n", "running", START, row["location"])]))
    expected = [f"{prefix}{str(n).zfill(width)}-gpu{g}" for n in range(low, low + count + 1) for g in (0, 1)]
    assert statuses["1"].nodes == (*expected, "x9")


# --- the allocation's nodes, from the job's environment ---


def test_hosts_from_the_cobalt_partition() -> None:
    hosts = CobaltScheduler.hosts_from_environment({"COBALT_PARTNAME": "1-3,0007"}, LocalNodes())
    assert hosts == [Host("1"), Host("2"), Host("3"), Host("7")]
    assert CobaltScheduler.hosts_from_environment({}, LocalNodes()) == [], "not inside an allocation"
    for bad in ("3-1", "1-3,x", "", "1,,2"):
        with pytest.raises(ValueError, match="malformed COBALT_PARTNAME"):
            CobaltScheduler.hosts_from_environment({"COBALT_PARTNAME": bad}, LocalNodes())
