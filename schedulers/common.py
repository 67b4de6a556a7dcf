"""What the adapters of batch schedulers driven through their programs share (Slurm, PBS, LSF, Cobalt): running
their programs and reading what the programs print."""

from __future__ import annotations

import logging
import re
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from balsamctl.schedulers.base import (
    AllocationState,
    AllocationStatus,
    Scheduler,
    SchedulerError,
    SubmitRequest,
    run_command,
)
from balsamctl.schedulers.jsonish import Unread, clip

DEFAULT_TIMEOUT_S = 30.0
_SEQUENCE = re.compile(r"\d+")
log = logging.getLogger("balsamctl.schedulers")


@dataclass(frozen=True)
class Answer:
    """What one status call said: the statuses by id, the records it could not read, and the ids (their sequence
    numbers) it said it does not know."""

    statuses: Mapping[str, AllocationStatus]
    unread: Sequence[Unread] = ()
    gone: frozenset[str] = frozenset()


class CommandScheduler(Scheduler):
    """A batch scheduler driven through its programs, each call bounded by ``timeout`` seconds.

    A subclass names the submit program's words for the new id (``submitted``, group ``id``; or reads it its own way,
    :meth:`_submitted_id`), the cancel program (or its whole command, :meth:`_cancel_command`), the cancel
    program's words for a job that has already gone (``gone``), the status program (``program``) and how one status
    call is made and read (:meth:`_ask`).
    """

    submitted: ClassVar[re.Pattern[str]]
    cancel_program: ClassVar[str]
    gone: ClassVar[re.Pattern[str]]
    program: ClassVar[str]

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
        scheduler_id = self._submitted_id(stdout)
        if scheduler_id is None:
            raise SchedulerError(argv, 0, f"unexpected {argv[0]} output, no job id in it: {clip(stdout.strip())!r}")
        return scheduler_id

    def status(self, scheduler_ids: Sequence[str]) -> dict[str, AllocationStatus]:
        """One status call for every id. An id missing from its answer is absent only once the scheduler confirms it
        (:meth:`_ask_again`); one it lists in neither answer without saying it does not know it is a SchedulerError,
        and so is one whose record could not be read: an allocation never seems to end because of what a program
        printed."""
        wanted = list(dict.fromkeys(scheduler_ids))
        if not wanted:
            return {}
        first = said(self._ask(wanted), self.program)
        found = pick(first, wanted, self.program)
        missing = [sid for sid in wanted if sid not in found and sequence(sid) not in first.gone]
        if not missing:
            return found
        again = said(self._ask_again(missing), self.program)
        found.update(pick(again, missing, self.program))
        unconfirmed = [sid for sid in missing if sid not in found and sequence(sid) not in again.gone]
        if unconfirmed:
            raise SchedulerError(
                [self.program],
                0,
                f"{self.program} did not list {', '.join(unconfirmed)} when asked twice, and did not say that it "
                "does not know it: not taken as ended",
            )
        return found

    def cancel(self, scheduler_id: str) -> None:
        """:meth:`_cancel_command`; a job the scheduler reports gone already is a no-op."""
        self._run_unless(self._cancel_command(scheduler_id), self.gone)

    @abstractmethod
    def _ask(self, scheduler_ids: list[str]) -> Answer:
        """One status call about these ids."""

    def _ask_again(self, scheduler_ids: list[str]) -> Answer:
        """Ask about each id missing from an answer alone: the scheduler lists it or says it does not know it (a
        multi-id query of OpenPBS may leave out jobs it knows)."""
        answers = [self._ask([sid]) for sid in scheduler_ids]
        return Answer(
            {sid: status for answer in answers for sid, status in answer.statuses.items()},
            [unread for answer in answers for unread in answer.unread],
            frozenset().union(*(answer.gone for answer in answers)),
        )

    def _submitted_id(self, stdout: str) -> str | None:
        """The new allocation's id in what the submit program printed (``submitted``'s group ``id``), None if none."""
        match = self.submitted.search(stdout)
        return match["id"] if match else None

    def _cancel_command(self, scheduler_id: str) -> list[str]:
        """``<cancel program> ID``."""
        return [self.cancel_program, scheduler_id]

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

    def _query(
        self, argv_for: Callable[[list[str]], list[str]], ids: list[str], unknown: re.Pattern[str]
    ) -> tuple[str | None, frozenset[str]]:
        """The stdout of ``argv_for(ids)``, and the sequence numbers of the ids the program said it does not know:
        when it fails only because of those (every stderr line matches ``unknown``, whose group ``id`` names one), it
        is run once more without them (no stdout, None, when none are left)."""
        try:
            return self._run(argv_for(ids)), frozenset()
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
            return (self._run(argv_for(rest)) if rest else None), frozenset(named)


def said(answer: Answer, program: str) -> Answer:
    """``answer``, its unreadable records logged."""
    if answer.unread:
        log.warning(
            "%s: %d record(s) could not be read: %s", program, len(answer.unread), "; ".join(map(str, answer.unread))
        )
    return answer


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


def pick(answer: Answer, wanted: Sequence[str], program: str) -> dict[str, AllocationStatus]:
    """The statuses of the ``wanted`` ids, matched exactly or else by sequence number (``123`` of ``123.server``).

    SchedulerError if one is missing while a record that could not be read may be its own (one without a name, or
    with its name): an allocation must not seem to have ended because its record was garbled.
    """
    by_sequence = {sequence(sid): status for sid, status in answer.statuses.items()}
    found: dict[str, AllocationStatus] = {}
    for sid in wanted:
        status = answer.statuses.get(sid) or by_sequence.get(sequence(sid))
        if status is not None:
            found[sid] = replace(status, scheduler_id=sid)
            continue
        hidden = [u for u in answer.unread if u.name is None or sequence(u.name) == sequence(sid)]
        if hidden:
            raise SchedulerError([program], 0, f"cannot read the output of {program} about {sid}: {hidden[0]}")
    return found


def newest_called(job_name: str, ids: Sequence[str], unknown: Sequence[Unread], program: str) -> str | None:
    """The newest of ``ids``, the allocations called ``job_name`` that ``program`` listed. SchedulerError if there is
    none while a record it printed that could not be read may be one (``unknown``): a restarted controller must not
    submit the allocation again."""
    if unknown and not ids:
        raise SchedulerError(
            [program], 0, f"cannot tell whether an allocation is called {job_name}: {'; '.join(map(str, unknown))}"
        )
    return newest(ids)


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
