"""FakeScheduler: a batch scheduler held in memory, programmed per allocation, that records every call.

It implements the whole :class:`~balsamctl.schedulers.Scheduler` interface, so the BatchJob reconciler runs against
it as against a real adapter, in milliseconds:

- scripted states: :meth:`FakeScheduler.plan` gives the next allocation submitted a sequence of states (made with
  :func:`queued`, :func:`running`, :func:`finished` and :data:`LOST`); each status call that asks about it reports
  the next one, and the last one stays. A test may also move an allocation by hand (:meth:`~FakeScheduler.run`,
  :meth:`~FakeScheduler.end`, :meth:`~FakeScheduler.forget`);
- refusals and hangs: :meth:`FakeScheduler.refuse` and :meth:`FakeScheduler.hang` make the next calls of a method
  raise the SchedulerError a real adapter raises (``returncode`` set: refused; None: timed out), a hung submit
  having gone through or not;
- lost jobs: an allocation forgotten (or scripted :data:`LOST`) is one the scheduler no longer knows: status leaves
  it out, find_by_name does not find it, cancel is a no-op;
- :attr:`FakeScheduler.calls` lists every call in order (``submits``, ``status_calls``, ``cancels`` and ``lookups``
  those of one method), so a test can assert "no double submit" or "one status call per pass".

A cancel ends a queued or running allocation as a real scheduler does: the next status reports it finished,
``CANCELLED``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, Final, Literal

from balsamctl.schedulers import AllocationStatus, Host, Scheduler, SchedulerError, SubmitRequest
from balsamctl.schemas.settings import LocalNodes

Method = Literal["submit", "status", "cancel", "find_by_name"]
NODES_VARIABLE = "FAKE_SCHEDULER_NODES"
"""The environment variable whose comma-separated host names are an allocation's nodes (hosts_from_environment)."""


class Lost:
    """The step of a script at which the scheduler forgets the allocation."""

    def __repr__(self) -> str:
        return "LOST"


LOST: Final = Lost()
Step = AllocationStatus | Lost


def queued(raw_state: str = "PENDING", message: str = "") -> AllocationStatus:
    """A step: waiting in the queue."""
    return AllocationStatus("", "queued", raw_state, message=message)


def running(
    nodes: Sequence[str] = ("n1",), started_ago: float | None = 0.0, raw_state: str = "RUNNING"
) -> AllocationStatus:
    """A step: running on ``nodes`` since ``started_ago`` seconds (None: the scheduler gives no start time)."""
    start = None if started_ago is None else datetime.now(UTC) - timedelta(seconds=started_ago)
    return AllocationStatus("", "running", raw_state, start_time=start, nodes=tuple(nodes))


def finished(exit_code: int | None = 0, raw_state: str = "", nodes: Sequence[str] = ("n1",)) -> AllocationStatus:
    """A step: ended with ``exit_code``; ``raw_state`` COMPLETED for 0, else FAILED, unless given."""
    now = datetime.now(UTC)
    raw_state = raw_state or ("COMPLETED" if exit_code == 0 else "FAILED")
    message = "" if exit_code is None else f"exit code {exit_code}"
    return AllocationStatus("", "finished", raw_state, now, now, exit_code, tuple(nodes), message)


@dataclass(frozen=True)
class Call:
    """One call of the scheduler interface: the method and its argument."""

    method: Method
    arg: SubmitRequest | tuple[str, ...] | str


@dataclass
class Allocation:
    """One allocation the fake scheduler was asked for: its script (the steps still to report) and what the last
    status call reported (the first step before any)."""

    scheduler_id: str
    job_name: str
    script: list[Step]
    lost: bool = False
    reported: Step = field(init=False)

    def __post_init__(self) -> None:
        self.reported = self.script[0]

    @property
    def live(self) -> bool:
        """Whether it is known and not finished."""
        return not self.lost and isinstance(self.reported, AllocationStatus) and self.reported.state != "finished"

    def advance(self) -> AllocationStatus | None:
        """What a status call reports now: the next step of the script (the last one stays); None once lost."""
        if not self.lost:
            self.reported = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            self.lost = isinstance(self.reported, Lost)
        if self.lost or not isinstance(self.reported, AllocationStatus):
            return None
        return replace(self.reported, scheduler_id=self.scheduler_id)


@dataclass(frozen=True)
class _Fault:
    """What the next call of a method does instead of answering: raise ``error``, after doing its work if
    ``went_through`` (a submit that went through, then hung)."""

    error: SchedulerError
    went_through: bool = False


class FakeScheduler(Scheduler):
    """A batch scheduler in memory (see the module's docstring); ids count up from ``first_id``."""

    kind: ClassVar[str] = "fake"

    def __init__(self, site_path: Path | None = None, first_id: int = 1000) -> None:
        super().__init__(site_path or Path("/nonexistent/fake-site"))
        self.allocations: dict[str, Allocation] = {}
        self.calls: list[Call] = []
        self._ids = itertools.count(first_id)
        self._plans: list[tuple[str | None, list[Step]]] = []
        self._faults: dict[Method, list[_Fault]] = {}

    # ------------------------------------------------------------ programming it

    def plan(self, *steps: Step, called: str | None = None) -> None:
        """The script of the next allocation submitted (whose job name contains ``called``, if given): the states
        status reports of it, one per call, the last one staying. Without a plan an allocation stays queued."""
        if not steps:
            raise ValueError("a script has at least one step")
        self._plans.append((called, list(steps)))

    def refuse(self, method: Method, message: str, returncode: int = 1, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` fail with ``returncode`` and ``message`` on stderr, as a real
        program refusing would."""
        self._fault(method, times, _Fault(SchedulerError(self._argv(method), returncode, message)))

    def hang(self, method: Method, went_through: bool = False, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` time out (the SchedulerError of a real adapter's timeout,
        ``returncode`` None), having done their work first if ``went_through`` (a submit that went through)."""
        self._fault(method, times, _Fault(SchedulerError(self._argv(method), None, ""), went_through))

    def run(self, scheduler_id: str, started_ago: float | None = 0.0, nodes: Sequence[str] = ("n0",)) -> None:
        """The allocation runs from now on (see :func:`running`)."""
        self._move(scheduler_id, running(nodes, started_ago))

    def end(self, scheduler_id: str, raw_state: str = "COMPLETED", exit_code: int | None = None) -> None:
        """The allocation has ended, in ``raw_state``, from now on."""
        status = self.now(scheduler_id)
        self._move(scheduler_id, replace(finished(exit_code, raw_state), nodes=status.nodes if status else ()))

    def forget(self, scheduler_id: str) -> None:
        """The scheduler no longer knows the allocation (as after Slurm's MinJobAge, or Cobalt's end of a job)."""
        self._move(scheduler_id, LOST)

    # ------------------------------------------------------------ what it was asked

    @property
    def submits(self) -> list[SubmitRequest]:
        """What each submit call asked for, in order (calls that failed too)."""
        return [call.arg for call in self.calls if isinstance(call.arg, SubmitRequest)]

    @property
    def status_calls(self) -> list[tuple[str, ...]]:
        """The ids each status call asked about, in order."""
        return [call.arg for call in self.calls if isinstance(call.arg, tuple)]

    @property
    def cancels(self) -> list[str]:
        """The id of each cancel call, in order."""
        return [call.arg for call in self.calls if call.method == "cancel" and isinstance(call.arg, str)]

    @property
    def lookups(self) -> list[str]:
        """The job name of each find_by_name call, in order."""
        return [call.arg for call in self.calls if call.method == "find_by_name" and isinstance(call.arg, str)]

    def named(self, job_name: str) -> list[Allocation]:
        """The allocations submitted under ``job_name`` (lost ones too), oldest first."""
        return [alloc for alloc in self.allocations.values() if alloc.job_name == job_name]

    def now(self, scheduler_id: str) -> AllocationStatus | None:
        """What the last status call reported of the allocation (its first step before any); None once lost."""
        reported = self.allocations[scheduler_id].reported
        return reported if isinstance(reported, AllocationStatus) else None

    # ------------------------------------------------------------ the Scheduler interface

    @classmethod
    def hosts_from_environment(cls, env: Mapping[str, str], local: LocalNodes) -> list[Host]:
        """The hosts named in ``FAKE_SCHEDULER_NODES`` (comma-separated); none without it."""
        return [Host(name) for name in env.get(NODES_VARIABLE, "").split(",") if name]

    def submit_command(self, req: SubmitRequest) -> list[str]:
        """``fake-submit --job-name NAME -N NODES SCRIPT``."""
        return ["fake-submit", "--job-name", req.job_name, "-N", str(req.num_nodes), str(req.script_path)]

    def submit(self, req: SubmitRequest) -> str:
        """A new allocation with the first plan that fits its job name (else queued for ever); its id."""
        fault = self._called("submit", req)
        if fault is not None and not fault.went_through:
            raise fault.error
        plan = next((p for p in self._plans if p[0] is None or p[0] in req.job_name), None)
        if plan is not None:
            self._plans.remove(plan)
        sid = str(next(self._ids))
        self.allocations[sid] = Allocation(sid, req.job_name, plan[1] if plan else [queued()])
        if fault is not None:
            raise fault.error
        return sid

    def status(self, scheduler_ids: Sequence[str]) -> dict[str, AllocationStatus]:
        """What each known allocation is now (the next step of its script); lost and unknown ids are left out."""
        fault = self._called("status", tuple(scheduler_ids))
        if fault is not None and not fault.went_through:
            raise fault.error
        found: dict[str, AllocationStatus] = {}
        for sid in dict.fromkeys(scheduler_ids):
            alloc = self.allocations.get(sid)
            status = alloc.advance() if alloc is not None else None
            if status is not None:
                found[sid] = status
        if fault is not None:
            raise fault.error
        return found

    def cancel(self, scheduler_id: str) -> None:
        """A queued or running allocation is finished, ``CANCELLED``, from the next status call on; anything else
        is a no-op."""
        fault = self._called("cancel", scheduler_id)
        if fault is not None and not fault.went_through:
            raise fault.error
        alloc = self.allocations.get(scheduler_id)
        if alloc is not None and alloc.live:
            self.end(scheduler_id, "CANCELLED", 143)
        if fault is not None:
            raise fault.error

    def find_by_name(self, job_name: str) -> str | None:
        """The newest allocation called ``job_name`` that the scheduler still knows."""
        fault = self._called("find_by_name", job_name)
        if fault is not None:
            raise fault.error
        known = [alloc.scheduler_id for alloc in self.named(job_name) if not alloc.lost]
        return known[-1] if known else None

    # ------------------------------------------------------------ inside

    def _called(self, method: Method, arg: SubmitRequest | tuple[str, ...] | str) -> _Fault | None:
        """Record the call; the fault it meets, if one is programmed."""
        self.calls.append(Call(method, arg))
        faults = self._faults.get(method)
        return faults.pop(0) if faults else None

    def _fault(self, method: Method, times: int, fault: _Fault) -> None:
        self._faults.setdefault(method, []).extend([fault] * times)

    def _argv(self, method: Method) -> list[str]:
        return [f"fake-{method.replace('_', '-')}"]

    def _move(self, scheduler_id: str, step: Step) -> None:
        """Report ``step`` of the allocation from the next status call on, for ever (forgotten at once: LOST)."""
        alloc = self.allocations[scheduler_id]
        alloc.script = [step]
        if isinstance(step, Lost):
            alloc.lost, alloc.reported = True, step
