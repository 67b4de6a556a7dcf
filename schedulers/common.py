"""What the PBS, LSF and Cobalt adapters share: running their programs and reading what the programs print."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from schedulers.base import AllocationState, AllocationStatus, Scheduler, SchedulerError, SubmitRequest, run_command

DEFAULT_TIMEOUT_S = 30.0
_CLIP = 200  # characters of unreadable output kept in messages
_DECODER = json.JSONDecoder()
_SEQUENCE = re.compile(r"\d+")
_COLON = re.compile(r"\s*:\s*")


class CommandScheduler(Scheduler):
    """A batch scheduler driven through its programs, each call bounded by ``timeout`` seconds.

    A subclass names the submit program's words for the new id (``submitted``, group ``id``), the cancel program,
    and the cancel program's words for a job that has already gone (``gone``).
    """

    submitted: ClassVar[re.Pattern[str]]
    cancel_program: ClassVar[str]
    gone: ClassVar[re.Pattern[str]]

    def __init__(self, site_path: Path, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(site_path)
        self.timeout = timeout

    def submit(self, req: SubmitRequest) -> str:
        """Run :meth:`submit_command`; SchedulerError carries the scheduler's own words when it refuses."""
        argv = self.submit_command(req)
        if not req.script_path.is_file():
            raise SchedulerError(argv, 1, f"job script not found: {req.script_path}")
        req.output_dir.mkdir(parents=True, exist_ok=True)
        stdout = self._run(argv, self._script_input(req))
        match = self.submitted.search(stdout)
        if match is None:
            raise SchedulerError(argv, 0, f"no job id in the output: {clip(stdout.strip())!r}")
        return match["id"]

    def cancel(self, scheduler_id: str) -> None:
        """``<cancel program> ID``; a job the scheduler reports gone already is a no-op."""
        self._run_unless([self.cancel_program, scheduler_id], self.gone)

    def _script_input(self, req: SubmitRequest) -> str | None:
        """Make the job script ready for the submit program; what goes on the program's stdin (default: nothing)."""
        return None

    def _run(self, argv: list[str], input: str | None = None) -> str:
        return run_command(argv, timeout=self.timeout, input=input).stdout

    def _run_unless(self, argv: list[str], words: re.Pattern[str]) -> str | None:
        """The stdout of ``argv``, or None when the program fails saying ``words`` on stderr."""
        try:
            return self._run(argv)
        except SchedulerError as exc:
            if exc.returncode is None or not words.search(exc.stderr):
                raise
            return None

    def _query(self, argv_for: Callable[[list[str]], list[str]], ids: list[str], unknown: re.Pattern[str]) -> str:
        """The stdout of ``argv_for(ids)``; when the program fails only because it does not know some ids (every
        stderr line matches ``unknown``, whose group ``id`` names one), once more without those ids."""
        try:
            return self._run(argv_for(ids))
        except SchedulerError as exc:
            if exc.returncode is None:
                raise
            named: set[str] = set()
            for line in filter(str.strip, exc.stderr.splitlines()):
                match = unknown.search(line)
                if match is None:
                    raise
                named.add(sequence(match["id"]))
            rest = [sid for sid in ids if sequence(sid) not in named]
            if len(rest) == len(ids):
                raise
            return self._run(argv_for(rest)) if rest else ""


def allocation(
    scheduler_id: str,
    raw_state: str,
    states: Mapping[str, AllocationState],
    scheduler: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    exit_code: int | None = None,
    nodes: Iterable[str] = (),
    notes: Iterable[str] = (),
) -> AllocationStatus:
    """What ``states`` makes of ``raw_state``. An unknown state is kept: "running" once the allocation has a start
    time, else "queued", with a message naming it. End times and exit codes belong to finished allocations only."""
    state = states.get(raw_state)
    messages = [note for note in notes if note]
    if state is None:
        state = "running" if start is not None else "queued"
        messages.insert(0, f"unknown {scheduler} state {raw_state}")
    if state != "finished":
        end, exit_code = None, None
    return AllocationStatus(scheduler_id, state, raw_state, start, end, exit_code, unique(nodes), "; ".join(messages))


def pick(
    statuses: Mapping[str, AllocationStatus], unparsed: Sequence[str], wanted: Sequence[str], program: str
) -> dict[str, AllocationStatus]:
    """The statuses of the ``wanted`` ids, matched exactly or else by sequence number (``123`` of ``123.server``).

    SchedulerError if one is missing while some output could not be read: the unreadable part may be that one, and
    an allocation must not seem to have ended because its record was garbled.
    """
    by_sequence = {sequence(sid): status for sid, status in statuses.items()}
    found: dict[str, AllocationStatus] = {}
    for sid in wanted:
        status = statuses.get(sid) or by_sequence.get(sequence(sid))
        if status is not None:
            found[sid] = replace(status, scheduler_id=sid)
    if unparsed and len(found) < len(wanted):
        raise SchedulerError([program], 0, f"cannot read the output of {program}: {unparsed[0]}")
    return found


def json_members(text: str, key: str) -> tuple[list[tuple[str | None, Any]], list[str]]:
    """The members of the object or array under ``key`` in a JSON document: (name, value) pairs, the name None for
    array items; and what could not be read. A document cut short yields the members before the cut."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return _salvage(text, key)
    container = document.get(key) if isinstance(document, dict) else None
    if isinstance(container, dict):
        return list(container.items()), []
    if isinstance(container, list):
        return [(None, value) for value in container], []
    if container is None and isinstance(document, dict):  # no jobs: the key is left out
        return [], []
    return [], [clip(text)]


def _salvage(text: str, key: str) -> tuple[list[tuple[str | None, Any]], list[str]]:
    """The complete members of the ``key`` container of a broken JSON document, read one by one."""
    opening = re.search(rf'"{re.escape(key)}"\s*:\s*([{{\[])', text)
    if opening is None:
        return [], [clip(text)] if text.strip() else []
    named = opening[1] == "{"
    members: list[tuple[str | None, Any]] = []
    pos = opening.end()
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos == len(text):
            return members, [f"the output ends inside {key!r}"]
        if text[pos] in "]}":
            return members, []
        start = pos
        try:
            name = None
            if named:
                name, pos = _DECODER.raw_decode(text, pos)
                colon = _COLON.match(text, pos)
                if not isinstance(name, str) or colon is None:
                    raise ValueError("not a member name")
                pos = colon.end()
            value, pos = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return members, [clip(text[start:])]
        members.append((name, value))


def local_time(text: str, fmt: str) -> datetime | None:
    """A time a scheduler program printed (local time, unless ``fmt`` has ``%z``) as aware UTC; None if not one."""
    try:
        return datetime.strptime(text.strip(), fmt).astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None


def sequence(scheduler_id: str) -> str:
    """The part of an id before the server name: ``123`` of ``123.pbs01``."""
    return scheduler_id.split(".", 1)[0]


def newest(scheduler_ids: Iterable[str]) -> str | None:
    """The id with the highest sequence number, i.e. the latest submission; None if there is none."""

    def number(sid: str) -> int:
        match = _SEQUENCE.match(sid)
        return int(match[0]) if match else -1

    return max(scheduler_ids, key=number, default=None)


def unique(names: Iterable[str]) -> tuple[str, ...]:
    """The non-empty names in order, each once."""
    return tuple(dict.fromkeys(name for name in names if name))


def text_field(record: Mapping[str, Any], key: str) -> str:
    """A record's string field, stripped; "" if it is missing or not a string."""
    value = record.get(key)
    return value.strip() if isinstance(value, str) else ""


def clip(text: str) -> str:
    """``text``, shortened for a message."""
    return text if len(text) <= _CLIP else text[:_CLIP] + "..."
