"""The Job and BatchJob state machines: the tables, the checks built on them, and graph properties."""

from __future__ import annotations

import ast
import inspect
from collections import deque
from collections.abc import Hashable, Mapping
from enum import StrEnum
from itertools import pairwise, product
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from balsamctl.schemas.states import (
    ACTIVE_BATCHJOB_STATES,
    BATCHJOB_TRANSITIONS,
    FINAL_JOB_STATES,
    JOB_TRANSITIONS,
    RUN_OUTCOMES,
    RUNNABLE_STATES,
    BatchJobState,
    InvalidTransition,
    JobState,
    check_batchjob_transition,
    check_job_transition,
    check_run_outcome,
)

S = TypeVar("S", bound=Hashable)

J = JobState
B = BatchJobState

HAPPY_PATH = [
    J.CREATED,
    J.AWAITING_PARENTS,
    J.READY,
    J.STAGED_IN,
    J.PREPROCESSED,
    J.RUNNING,
    J.RUN_DONE,
    J.POSTPROCESSED,
    J.STAGED_OUT,
    J.JOB_FINISHED,
]


def reachable(table: Mapping[S, frozenset[S]], start: S) -> set[S]:
    """Every state reachable from ``start`` in zero or more steps."""
    seen = {start}
    todo = deque([start])
    while todo:
        for nxt in table[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# ---------------------------------------------------------------- the tables


def test_every_job_state_has_an_entry_and_targets_are_states() -> None:
    assert set(JOB_TRANSITIONS) == set(JobState)
    for src, dsts in JOB_TRANSITIONS.items():
        assert dsts <= set(JobState), src
        assert src not in dsts, f"{src} -> {src} is a self loop"


def test_every_batchjob_state_has_an_entry_and_targets_are_states() -> None:
    assert set(BATCHJOB_TRANSITIONS) == set(BatchJobState)
    for src, dsts in BATCHJOB_TRANSITIONS.items():
        assert dsts <= set(BatchJobState), src
        assert src not in dsts


def test_final_job_states_only_allow_an_explicit_rerun() -> None:
    assert {J.JOB_FINISHED, J.FAILED} == FINAL_JOB_STATES
    for state in FINAL_JOB_STATES:
        assert JOB_TRANSITIONS[state] == {J.READY}


def test_happy_path_is_allowed_step_by_step() -> None:
    for src, dst in pairwise(HAPPY_PATH):
        check_job_transition("hello-1", src, dst)
    # a Job without parents skips AWAITING_PARENTS
    check_job_transition("hello-1", J.CREATED, J.READY)


def test_runnable_states_lead_to_running() -> None:
    """A launcher moves an acquired Job to RUNNING; that must be allowed from every runnable state."""
    for state in RUNNABLE_STATES:
        check_job_transition("j", state, J.RUNNING)


def test_run_outcomes_and_restart() -> None:
    for outcome in (J.RUN_DONE, J.RUN_ERROR, J.RUN_TIMEOUT):
        check_job_transition("j", J.RUNNING, outcome)
    for src in (J.RUN_ERROR, J.RUN_TIMEOUT):
        check_job_transition("j", src, J.RESTART_READY)
    check_job_transition("j", J.RESTART_READY, J.RUNNING)


def test_only_a_launchers_record_takes_a_running_job_straight_back() -> None:
    """A run that never started (an infrastructure failure) goes RUNNING -> RESTART_READY in its launcher's record;
    nobody else may take a RUNNING Job back (its process would run on while the Job runs again elsewhere)."""
    check_run_outcome("j", J.RESTART_READY)
    for outcome in (J.RUN_DONE, J.RUN_ERROR, J.RUN_TIMEOUT):
        check_run_outcome("j", outcome)
    with pytest.raises(InvalidTransition):
        check_job_transition("j", J.RUNNING, J.RESTART_READY)
    for other in set(J) - RUN_OUTCOMES:
        with pytest.raises(InvalidTransition):
            check_run_outcome("j", other)


def test_check_accepts_plain_strings_like_the_store_holds() -> None:
    check_job_transition("j", "READY", "STAGED_IN")
    check_batchjob_transition("bj", "queued", "running")
    with pytest.raises(InvalidTransition):
        check_job_transition("j", "READY", "RUNNING")


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (J.CREATED, J.RUNNING),
        (J.RUNNING, J.JOB_FINISHED),
        (J.JOB_FINISHED, J.RUNNING),
        (J.FAILED, J.RUNNING),
        (J.RUNNING, J.FAILED),
        (J.READY, J.CREATED),
    ],
)
def test_forbidden_job_transitions_raise_naming_both_states(src: JobState, dst: JobState) -> None:
    with pytest.raises(InvalidTransition) as info:
        check_job_transition("hello-1", src, dst)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.kind, err.name, err.src, err.dst) == ("job", "hello-1", src.value, dst.value)
    message = str(err)
    assert src.value in message
    assert dst.value in message
    assert "hello-1" in message


def test_check_job_transition_agrees_with_the_table_on_every_pair() -> None:
    for src, dst in product(JobState, JobState):
        allowed = dst in JOB_TRANSITIONS[src]
        try:
            check_job_transition("j", src, dst)
        except InvalidTransition as exc:
            assert not allowed, f"{src} -> {dst} is in the table but refused"
            assert src.value in str(exc)
            assert dst.value in str(exc)
        else:
            assert allowed, f"{src} -> {dst} is accepted but not in the table"


def test_check_batchjob_transition_agrees_with_the_table_on_every_pair() -> None:
    for src, dst in product(BatchJobState, BatchJobState):
        allowed = dst in BATCHJOB_TRANSITIONS[src]
        try:
            check_batchjob_transition("bj", src, dst)
        except InvalidTransition as exc:
            assert not allowed, f"{src} -> {dst} is in the table but refused"
            assert exc.kind == "batchjob"
            assert src.value in str(exc)
            assert dst.value in str(exc)
        else:
            assert allowed, f"{src} -> {dst} is accepted but not in the table"


def test_unknown_state_names_are_refused() -> None:
    with pytest.raises(ValueError):
        check_job_transition("j", "READY", "DONE")
    with pytest.raises(ValueError):
        check_batchjob_transition("bj", "bogus", "finished")


# ---------------------------------------------------------------- graph properties


def test_every_job_state_is_reachable_from_created() -> None:
    assert reachable(JOB_TRANSITIONS, J.CREATED) == set(JobState)


@pytest.mark.parametrize("state", sorted(set(JobState) - FINAL_JOB_STATES))
def test_every_non_final_job_state_can_finish_and_can_fail(state: JobState) -> None:
    after = reachable(JOB_TRANSITIONS, state)
    assert J.JOB_FINISHED in after
    assert J.FAILED in after


def test_finished_is_terminal_for_batchjobs() -> None:
    assert BATCHJOB_TRANSITIONS[B.finished] == frozenset()
    for dst in BatchJobState:
        with pytest.raises(InvalidTransition):
            check_batchjob_transition("bj", B.finished, dst)


@pytest.mark.parametrize("state", sorted(BatchJobState))
def test_every_batchjob_state_can_reach_finished(state: BatchJobState) -> None:
    assert B.finished in reachable(BATCHJOB_TRANSITIONS, state)


def test_active_batchjob_states_reach_finished_and_are_known() -> None:
    assert set(BatchJobState) >= ACTIVE_BATCHJOB_STATES
    assert B.finished not in ACTIVE_BATCHJOB_STATES
    for state in ACTIVE_BATCHJOB_STATES:
        assert B.finished in reachable(BATCHJOB_TRANSITIONS, state)


def test_a_live_batchjob_can_always_be_deleted_in_one_step() -> None:
    """``delete`` moves a BatchJob that is not over straight to pending_deletion."""
    for state in set(BatchJobState) - {B.finished, B.pending_deletion}:
        check_batchjob_transition("bj", state, B.pending_deletion)


# ---------------------------------------------------------------- random walks


class JobLifecycle(RuleBasedStateMachine):
    """A Job driven by arbitrary requested transitions: only table edges are ever taken."""

    def __init__(self) -> None:
        super().__init__()
        self.state = J.CREATED
        self.path = [J.CREATED]

    @rule(dst=st.sampled_from(JobState))
    def request(self, dst: JobState) -> None:
        try:
            check_job_transition("walk", self.state, dst)
        except InvalidTransition:
            assert dst not in JOB_TRANSITIONS[self.state]
        else:
            assert dst in JOB_TRANSITIONS[self.state]
            self.state = dst
            self.path.append(dst)

    @rule(data=st.data())
    def follow_an_allowed_edge(self, data: st.DataObject) -> None:
        dst = data.draw(st.sampled_from(sorted(JOB_TRANSITIONS[self.state])))
        check_job_transition("walk", self.state, dst)
        self.state = dst
        self.path.append(dst)

    @invariant()
    def path_stays_inside_the_table(self) -> None:
        for src, dst in pairwise(self.path):
            assert dst in JOB_TRANSITIONS[src]
        assert J.JOB_FINISHED in reachable(JOB_TRANSITIONS, self.state)

    @invariant()
    def running_only_after_preprocessing_or_restart(self) -> None:
        for src, dst in pairwise(self.path):
            if dst == J.RUNNING:
                assert src in RUNNABLE_STATES


JobLifecycle.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestJobLifecycle = JobLifecycle.TestCase


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(BatchJobState), max_size=30))
def test_batchjob_walks_never_leave_finished(requests: list[BatchJobState]) -> None:
    state = B.pending_submission
    for dst in requests:
        try:
            check_batchjob_transition("bj", state, dst)
        except InvalidTransition:
            assert dst not in BATCHJOB_TRANSITIONS[state]
            continue
        assert state != B.finished
        assert dst in BATCHJOB_TRANSITIONS[state]
        state = dst
    assert B.finished in reachable(BATCHJOB_TRANSITIONS, state)


@pytest.mark.parametrize("enum", [JobState, BatchJobState])
def test_every_state_says_what_it_means_and_who_moves_it_on(enum: type[StrEnum]) -> None:
    """Each member of the state enums is followed by its docstring (the README and the architecture rely on them)."""
    source = Path(inspect.getfile(enum)).read_text()
    [cls] = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == enum.__name__]
    documented = {
        target.id
        for stmt, after in pairwise(cls.body)
        if isinstance(stmt, ast.Assign)
        for target in stmt.targets
        if isinstance(target, ast.Name)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
        and len(after.value.value.split()) >= 5
    }
    assert documented == {member.name for member in enum}
