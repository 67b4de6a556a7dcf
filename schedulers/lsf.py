"""IBM Spectrum LSF with whole-node allocations (``-nnodes``, as on Summit): ``bsub`` submits, one ``bjobs -json``
reports, ``bkill`` cancels.

The job script goes to bsub on stdin (``bsub OPTIONS < script``), so ``#BSUB`` lines in the site's template apply;
the options on the command line take precedence over them.

Every job state of bjobs(1) and what it means for the allocation:

=====  ==============================================================  ==========
state  LSF                                                             allocation
=====  ==============================================================  ==========
PEND   pending                                                         queued
PROV   dispatched to a host that is still being provisioned            queued
PSUSP  suspended by its owner or an administrator while pending        queued
WAIT   chunk job member waiting to run                                 queued
RUN    running                                                         running
USUSP  suspended by its owner or an administrator while running        running
SSUSP  suspended by LSF (load, run window) while running               running
UNKWN  mbatchd lost contact with the execution host; the job may run   running
ZOMBI  killed while its host was unreachable; the kill is unconfirmed  running
DONE   exited with 0                                                   finished
EXIT   exited non-zero, killed, or out of run time (TERM_RUNLIMIT)     finished
=====  ==============================================================  ==========

A DONE job's exit code is 0, an EXIT job's the one bjobs gives (140 for TERM_RUNLIMIT: the walltime ran out, a
normal end of a pilot); LSF's exit reason becomes the message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from balsamctl.schedulers.base import (
    AllocationState,
    AllocationStatus,
    Host,
    SubmitRequest,
    UnsupportedScheduler,
    program_says,
)
from balsamctl.schedulers.common import (
    Answer,
    CommandScheduler,
    allocation,
    local_time,
    newest_called,
    said,
    text_field,
)
from balsamctl.schedulers.jsonish import Unread, members

if TYPE_CHECKING:
    from balsamctl.schemas.settings import LocalNodes

STATES: dict[str, AllocationState] = {
    "PEND": "queued",
    "PROV": "queued",
    "PSUSP": "queued",
    "WAIT": "queued",
    "RUN": "running",
    "USUSP": "running",
    "SSUSP": "running",
    "UNKWN": "running",
    "ZOMBI": "running",
    "DONE": "finished",
    "EXIT": "finished",
}
FIELDS = "jobid job_name stat exit_code exit_reason start_time finish_time exec_host"  # bjobs -o
# bjobs times: "Dec 28 19:56", with seconds or a year if so configured, and a trailing E, L or X flag at times.
_TIME = re.compile(
    r"(?P<day>[A-Z][a-z]{2} \d{1,2}) (?P<clock>\d{1,2}:\d{2}(?::\d{2})?)(?: (?P<year>\d{4}))?(?: [ELX])?"
)
JSON_SINCE = (10, 1, 0, 2)  # bjobs -json came with LSF 10.1 Fix Pack 2
_LSF_VERSION = re.compile(r"\bLSF\b[^\d\n]*(\d+(?:\.\d+)+)")  # "IBM Spectrum LSF Standard 10.1.0.9, May 21 2019"
_UNKNOWN = re.compile(r"Job <(?P<id>[^>]+)> is not found")
_NONE_LIVE = re.compile(r"is not found|No unfinished job found")


class LsfScheduler(CommandScheduler):
    """Submits with bsub, follows with bjobs -a (finished jobs stay visible for CLEAN_PERIOD), cancels with bkill."""

    kind: ClassVar[str] = "lsf"
    submitted = re.compile(r"Job <(?P<id>\d+)> is submitted")
    cancel_program = "bkill"
    gone = re.compile(r"already finished|No matching job")
    program = "bjobs"

    @classmethod
    def hosts_from_environment(cls, env: Mapping[str, str], local: LocalNodes) -> list[Host]:
        """The hosts of ``LSB_MCPU_HOSTS`` (``"host1 n1 host2 n2"``), each with its slot count as CPUs.

        LSF lists the launch (batch) host first, which runs the job script but no Job: when ``LSB_HOSTS`` starts
        with that host and other hosts follow, it is dropped.
        """
        mcpu_hosts = env.get("LSB_MCPU_HOSTS")
        if mcpu_hosts is None:
            return []
        words = mcpu_hosts.split()
        if len(words) % 2 or not words:
            raise ValueError(f"malformed LSB_MCPU_HOSTS {mcpu_hosts!r}")
        hosts = [Host(words[i], int(words[i + 1])) for i in range(0, len(words), 2)]
        first = env.get("LSB_HOSTS", "").split()[:1]
        if len(hosts) > 1 and first == [hosts[0].name]:
            hosts = hosts[1:]
        return list({host.name: host for host in hosts}.values())

    def submit_command(self, req: SubmitRequest) -> list[str]:
        """``bsub -J NAME -nnodes N -W MINUTES -q QUEUE -P PROJECT -o OUT [extra]``; the script goes on stdin."""
        return [
            "bsub",
            *("-J", req.job_name, "-nnodes", str(req.num_nodes), "-W", str(req.wall_time_min)),
            *("-q", req.queue, "-P", req.project, "-o", str(req.output_dir / f"{req.job_name}.%J.out")),
            *req.extra_args,
        ]

    @classmethod
    def check_version(cls) -> str | None:
        """``lsid``: LSF from 10.1 Fix Pack 2 (10.1.0.2), whose bjobs has ``-json``, is read; an older one is
        refused."""
        found = _LSF_VERSION.search(program_says(["lsid"]) or "")
        if found is None:
            return None
        version = tuple(int(part) for part in found[1].split("."))
        if version < JSON_SINCE:
            raise UnsupportedScheduler(
                f"lsid says LSF {found[1]}: its bjobs has no -json (LSF 10.1.0.2 and later), which the lsf scheduler "
                "reads"
            )
        return f"LSF {found[1]}"

    def find_by_name(self, job_name: str) -> str | None:
        """The newest allocation called ``job_name``, from ``bjobs -a -J NAME`` (recently finished ones included);
        SchedulerError if none is found while a record that cannot be read may be one (it names ``job_name``, or
        the output is cut short)."""
        text = self._run_unless(["bjobs", "-json", "-a", "-o", FIELDS, "-J", job_name], _NONE_LIVE)
        if text is None:  # bjobs says it knows no such job
            return None
        records, unread = _records(text)
        said(Answer({}, unread), "bjobs")
        ids = [record["JOBID"] for record in records if record.get("JOB_NAME") == job_name]
        return newest_called(job_name, ids, [record for record in unread if record.may_hold(job_name)], "bjobs")

    def _ask(self, scheduler_ids: list[str]) -> Answer:
        """``bjobs -json -a -o FIELDS ID...``; if bjobs names ids it does not know, once more without them. An ERROR
        record that says an id is not found is bjobs saying it does not know it."""
        text, gone = self._query(lambda ids: ["bjobs", "-json", "-a", "-o", FIELDS, *ids], scheduler_ids, _UNKNOWN)
        if text is None:
            return Answer({}, gone=gone)
        return Answer(*parse_status(text), gone | {match["id"] for match in _UNKNOWN.finditer(text)})

    def _script_input(self, req: SubmitRequest) -> str:
        return req.script_path.read_text()


def parse_status(text: str, now: datetime | None = None) -> tuple[dict[str, AllocationStatus], list[Unread]]:
    """Statuses by job id from ``bjobs -json -o FIELDS`` output, and what could not be read; never raises.

    bjobs prints local times without a year: each is taken in the latest year that does not put it more than a day
    after ``now`` (default: the current time). A record bjobs marks with ERROR (an id it does not know) is left out.
    """
    now = now or datetime.now(UTC)
    records, unread = _records(text)
    return {record["JOBID"]: _status(record, now) for record in records}, unread


def _records(text: str) -> tuple[list[dict[str, Any]], list[Unread]]:
    """The job records (those with a JOBID and a STAT), and what could not be read."""
    items, unread = members(text, "RECORDS")
    records: list[dict[str, Any]] = []
    for _, record in items:
        if isinstance(record, dict) and isinstance(record.get("JOBID"), str) and isinstance(record.get("STAT"), str):
            records.append(record)
        elif not (isinstance(record, dict) and "ERROR" in record):
            name = record.get("JOBID") if isinstance(record, dict) else None
            unread.append(Unread(name if isinstance(name, str) else None, "no JOBID and STAT", repr(record)))
    return records, unread


def _status(record: dict[str, Any], now: datetime) -> AllocationStatus:
    raw_state = record["STAT"]
    exit_text = text_field(record, "EXIT_CODE")
    exit_code = int(exit_text) if exit_text.isdecimal() else (0 if raw_state == "DONE" else None)
    hosts = (host.rpartition("*")[2] for host in text_field(record, "EXEC_HOST").split(":"))  # 42*h36n01:42*h36n02
    return allocation(
        record["JOBID"],
        raw_state,
        STATES,
        "LSF",
        start=_time(text_field(record, "START_TIME"), now),
        end=_time(text_field(record, "FINISH_TIME"), now),
        exit_code=exit_code,
        nodes=hosts,
        notes=[text_field(record, "EXIT_REASON")],
    )


def _time(text: str, now: datetime) -> datetime | None:
    """A bjobs time as aware UTC; None for ``-``, blanks and anything else that is not one."""
    match = _TIME.fullmatch(" ".join(text.split()))
    if match is None:
        return None
    fmt = "%b %d %Y %H:%M" + (":%S" if match["clock"].count(":") == 2 else "")
    years = [int(match["year"])] if match["year"] else [now.year + 1, now.year, now.year - 1]
    for year in years:
        when = local_time(f"{match['day']} {year} {match['clock']}", fmt)
        if when is not None and (match["year"] or when <= now + timedelta(days=1)):
            return when
    return None
