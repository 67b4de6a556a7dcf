"""Cobalt (ALCF Theta): ``qsub`` submits, one ``qstat`` reports, ``qdel`` cancels.

Cobalt forgets a job once it has ended: an id that two answers of qstat in a row no longer list is absent from
:meth:`status` (the controller takes that as the end of the allocation). Its exit code is only in
``<prefix>.cobaltlog``; none is reported.

Every job state Cobalt's queue manager reports and what it means for the allocation:

===========  ===========================================================  ==========
state        Cobalt                                                       allocation
===========  ===========================================================  ==========
queued       waiting for nodes                                            queued
user_hold    held by its owner                                            queued
admin_hold   held by an administrator                                     queued
dep_hold     waiting for the jobs it depends on                           queued
dep_fail     a job it depends on failed: held until deleted               queued
maxrun_hold  held by the queue's limit of running jobs                    queued
preempted    preempted, back in the queue                                 queued
starting     nodes assigned, prologue scripts running                     running
running      running                                                      running
preempting   being preempted                                              running
killing      being killed                                                 running
exiting      ended, epilogue scripts running                              running
done         ended (shown at most briefly)                                finished
===========  ===========================================================  ==========
"""

from __future__ import annotations

import getpass
import itertools
import math
import re
import stat
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from balsamctl.schedulers.base import AllocationState, AllocationStatus, Host, SchedulerError, SubmitRequest
from balsamctl.schedulers.common import (
    DEFAULT_TIMEOUT_S,
    Answer,
    CommandScheduler,
    allocation,
    local_time,
    newest_called,
    said,
    sequence,
)
from balsamctl.schedulers.jsonish import Unread

if TYPE_CHECKING:
    from balsamctl.schemas.settings import LocalNodes

STATES: dict[str, AllocationState] = {
    "queued": "queued",
    "user_hold": "queued",
    "admin_hold": "queued",
    "dep_hold": "queued",
    "dep_fail": "queued",
    "maxrun_hold": "queued",
    "preempted": "queued",
    "starting": "running",
    "running": "running",
    "preempting": "running",
    "killing": "running",
    "exiting": "running",
    "done": "finished",
}
HEADER = ("JobID", "JobName", "State", "StartTime", "Location")  # qstat --header, the columns of its table
_START = "%a %b %d %H:%M:%S %Y %z"  # "Thu Nov 05 17:29:30 2020 +0000", then " (UTC)"
_ZONE_NAME = re.compile(r"\s*\([^()]*\)$")
_ID = re.compile(r"\d+")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_BRACKETS = re.compile(r"\[(\d+)-(\d+)\]")  # cc[42-44], cc01-gpu[0-3]: a cluster's compacted locations
_MAX_RANGE = 100_000  # nodes in one range of a Location or partition; a longer one is not read
_GAPS = (re.compile(r"\s{2,}"), re.compile(r"\s+"))  # between a row's values: Cobalt's two spaces, else any


class CobaltScheduler(CommandScheduler):
    """Submits with qsub, follows with one ``qstat -u USER`` (the user's jobs), cancels with qdel."""

    kind: ClassVar[str] = "cobalt"
    submitted = re.compile(r"^\s*(?P<id>\d+)\s*$", re.MULTILINE)
    cancel_program = "qdel"
    gone = re.compile(r"not found|Failed to match any jobs")
    program = "qstat"

    def __init__(self, site_path: Path, timeout: float = DEFAULT_TIMEOUT_S, user: str | None = None) -> None:
        super().__init__(site_path, timeout)
        self.user = user or getpass.getuser()

    @classmethod
    def hosts_from_environment(cls, env: Mapping[str, str], local: LocalNodes) -> list[Host]:
        """The nodes of ``COBALT_PARTNAME`` (``1-3,7``: node numbers and ranges of them)."""
        partition = env.get("COBALT_PARTNAME")
        if partition is None:
            return []
        names: list[str] = []
        for item in partition.strip().split(","):
            nodes = _numbers(item)
            if nodes is None:
                raise ValueError(f"malformed COBALT_PARTNAME {partition!r}: {item!r} is not a node or a range")
            names += nodes
        return [Host(name) for name in names]

    def submit_command(self, req: SubmitRequest) -> list[str]:
        """``qsub -n N -t MINUTES -q QUEUE -A PROJECT --jobname NAME -O OUTPUT_PREFIX [extra] SCRIPT``."""
        return [
            "qsub",
            *("-n", str(req.num_nodes), "-t", str(req.wall_time_min), "-q", req.queue, "-A", req.project),
            *("--jobname", req.job_name, "-O", str(req.output_dir / req.job_name)),
            *req.extra_args,
            str(req.script_path),
        ]

    def find_by_name(self, job_name: str) -> str | None:
        """The newest allocation called ``job_name`` (Cobalt forgets finished jobs at once); SchedulerError if none is
        found while a line that cannot be read may be one (it names ``job_name``, or the output is cut short), and if
        qstat listed jobs without their names (no JobName column)."""
        rows, unread = _rows(self._qstat())
        said(Answer({}, unread), "qstat")
        if any("jobname" not in row for row in rows):
            raise SchedulerError(
                ["qstat"], 0, f"cannot tell whether an allocation is called {job_name}: qstat printed no JobName column"
            )
        ids = [row["jobid"] for row in rows if row["jobname"] == job_name]
        return newest_called(job_name, ids, [record for record in unread if record.may_hold(job_name)], "qstat")

    def _ask(self, scheduler_ids: list[str]) -> Answer:
        """One ``qstat -u USER``: the user's jobs (Cobalt cannot be asked about ended ones)."""
        return Answer(*parse_status(self._qstat()))

    def _ask_again(self, scheduler_ids: list[str]) -> Answer:
        """Cobalt keeps no history: an id missing from a second answer too has ended."""
        answer = self._ask(scheduler_ids)
        listed = {sequence(sid) for sid in answer.statuses}
        return replace(answer, gone=frozenset(sequence(sid) for sid in scheduler_ids) - listed)

    def _qstat(self) -> str:
        # Without job ids, so that qstat exits 0 even when it lists nothing (with ids it would exit 1).
        return self._run(["qstat", "--header", ":".join(HEADER), "-u", self.user])

    def _script_input(self, req: SubmitRequest) -> None:
        """Cobalt runs the job script itself: it must be executable."""
        req.script_path.chmod(req.script_path.stat().st_mode | stat.S_IXUSR)


def parse_status(text: str) -> tuple[dict[str, AllocationStatus], list[Unread]]:
    """Statuses by job id from qstat's table, and the lines that could not be read; never raises.

    The columns are found by their titles in the header line (fixed width, left-aligned, so values may contain
    spaces); lines before it are not the table's and are left out. A row whose values are not under their titles is
    read by the gaps between them (see :func:`_values`). A last line without its newline is taken as cut short and
    not read; output without the header line (which qstat prints even when it lists no job) is not read at all.
    """
    rows, unread = _rows(text)
    return {row["jobid"]: _status(row) for row in rows}, unread


def _rows(text: str) -> tuple[list[dict[str, str]], list[Unread]]:
    """The table's rows as {lower-case column title: value}, and the lines that are not such rows (``cut`` when
    rows may be lost in them: a last line without its newline, or the whole output when it has no header line)."""
    *lines, partial = text.split("\n")
    titles = next((i for i, line in enumerate(lines) if {"jobid", "state"} <= set(line.lower().split())), None)
    if titles is None:
        return [], [Unread(None, "no table header (JobID ... State) in the output", text, cut=True)]
    columns = [(match.start(), match[0].lower()) for match in re.finditer(r"\S+", lines[titles])]
    starts = [start for start, _ in columns]
    rows: list[dict[str, str]] = []
    unread = [Unread(None, "the output ends inside this line", partial, cut=True)] if partial.strip() else []
    for line in lines[titles + 1 :]:
        if not line.strip("= \t"):  # blank, or the ===== rule under the titles
            continue
        values = _values(line, starts)
        row = dict(zip((name for _, name in columns), values, strict=True)) if values else {}
        if row and _ID.fullmatch(row["jobid"]) and row["state"] and " " not in row["state"]:
            rows.append(row)
        else:
            unread.append(Unread(None, "not a row of the table", line))
    return rows, unread


def _values(line: str, starts: list[int]) -> list[str] | None:
    """A row's values, one per column (``starts``: where the titles begin). Cut at the titles when each column begins
    after a space and holds a value, as Cobalt pads its table (values may hold spaces; an empty one is printed as
    ``-``, ``N/A`` or ``None``); else (a table re-aligned by hand, or padded by bytes around a wider character) split
    at the runs of two or more spaces, then of any, when that gives one value per column; else None."""
    values = [line[start:end].strip() for start, end in itertools.pairwise([*starts, None])]
    if all(values) and all(not line[start - 1 : start].strip() for start in starts[1:]):
        return values
    for gap in _GAPS:
        values = gap.split(line.strip())
        if len(values) == len(starts):
            return values
    return None


def _status(row: dict[str, str]) -> AllocationStatus:
    start_text = _ZONE_NAME.sub("", row.get("starttime", ""))
    return allocation(
        row["jobid"], row["state"], STATES, "Cobalt", start=local_time(start_text, _START), nodes=_nodes(row)
    )


def _nodes(row: dict[str, str]) -> list[str]:
    """The nodes of a Location such as ``3824-3827,3830`` (a Cray's) or ``cc01,cc[42-44]`` (a cluster's), each
    location Cobalt compacted into it; an item that is not read is kept as written. None for ``None``, ``N/A`` or
    ``-``."""
    location = row.get("location", "")
    if location in ("", "None", "N/A", "-"):
        return []
    return [node for item in location.split(",") for node in _numbers(item) or _expanded(item) or [item]]


def _expanded(item: str) -> list[str] | None:
    """The locations a cluster's item stands for: each bracketed ascending range (``cc[42-44]``, ``cc01-gpu[0-3]``)
    replaced by each of its numbers, as wide as its first; None if it has no such range, or stands for
    ``_MAX_RANGE`` locations or more."""
    ranges = [(len(low), int(low), int(high)) for low, high in _BRACKETS.findall(item)]
    sizes = [high - low + 1 for _, low, high in ranges]
    if not ranges or min(sizes) < 1 or math.prod(sizes) >= _MAX_RANGE:
        return None
    texts = _BRACKETS.split(item)[::3]  # around the ranges
    numbers = [[str(n).zfill(width) for n in range(low, high + 1)] for width, low, high in ranges]
    return ["".join(itertools.chain(*zip(texts, [*picked, ""], strict=True))) for picked in itertools.product(*numbers)]


def _numbers(item: str) -> list[str] | None:
    """The nodes of one item of a Location or partition: a node number (``0007`` is node ``7``) or an ascending
    range of them (``3824-3827``); None if it is neither, or a range of ``_MAX_RANGE`` nodes or more."""
    match = _RANGE.fullmatch(item)
    if match is None:
        return None
    low, high = int(match[1]), int(match[2] or match[1])
    return [str(n) for n in range(low, high + 1)] if 0 <= high - low < _MAX_RANGE else None
