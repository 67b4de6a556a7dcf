"""The retry rule (schemas/retries.py): errors are charged, walltime kills are not, runs lost with their launcher count
against the crash limit alone, nothing retries past a limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from balsamctl.schemas import JobState as S
from balsamctl.schemas.retries import after_failure
from balsamctl.schemas.states import JOB_TRANSITIONS

FAILED_RUNS = st.sampled_from([S.RUN_ERROR, S.RUN_TIMEOUT])


@given(
    src=FAILED_RUNS,
    failures=st.integers(0, 50),
    limit=st.none() | st.integers(0, 50),
    proposed=st.sampled_from(list(S)),
)
def test_never_retried_past_the_limit_and_always_a_legal_move(
    src: S, failures: int, limit: int | None, proposed: S
) -> None:
    if proposed not in JOB_TRANSITIONS[src]:
        return
    verdict = after_failure(src, failures, limit, proposed)
    assert verdict.state in JOB_TRANSITIONS[src]
    assert verdict.failures == failures + (1 if src == S.RUN_ERROR else 0), "only errors are charged here"
    if limit is None:
        assert verdict.state == proposed
        return
    if verdict.state == S.RESTART_READY:
        assert verdict.failures <= limit
    if proposed == S.RESTART_READY and verdict.failures > limit:
        assert verdict.state == S.FAILED and "max_retries" in verdict.message


def test_limits_none_and_zero() -> None:
    assert after_failure(S.RUN_ERROR, 0, 0, S.RESTART_READY).state == S.FAILED, "no retries left"
    assert after_failure(S.RUN_TIMEOUT, 0, 0, S.RESTART_READY).state == S.RESTART_READY, "a walltime kill is free"
    assert after_failure(S.RUN_ERROR, 7, None, S.RESTART_READY).state == S.RESTART_READY, "no limit: a hook decides"


def test_a_job_with_two_retries_fails_on_its_third_error() -> None:
    failures, states = 0, []
    for _ in range(3):
        verdict = after_failure(S.RUN_ERROR, failures, 2, S.RESTART_READY)
        failures = verdict.failures
        states.append(verdict.state)
    assert states == [S.RESTART_READY, S.RESTART_READY, S.FAILED]


@given(
    src=FAILED_RUNS,
    failures=st.integers(0, 50),
    limit=st.none() | st.integers(0, 50),
    crashes=st.integers(0, 50),
    crash_limit=st.none() | st.integers(0, 50),
    proposed=st.sampled_from(list(S)),
)
def test_crashes_have_their_own_limit_and_are_never_charged_as_failures(
    src: S, failures: int, limit: int | None, crashes: int, crash_limit: int | None, proposed: S
) -> None:
    if proposed not in JOB_TRANSITIONS[src]:
        return
    verdict = after_failure(src, failures, limit, proposed, crashes=crashes, crash_limit=crash_limit)
    assert verdict.state in JOB_TRANSITIONS[src]
    assert verdict.failures == failures + (1 if src == S.RUN_ERROR else 0), "crashes never count as failures"
    if verdict.state == S.RESTART_READY:
        assert crash_limit is None or crashes <= crash_limit
    past = crash_limit is not None and crashes > crash_limit
    if proposed == S.RESTART_READY and past:
        assert (verdict.state, verdict.reason) == (S.FAILED, "CrashLimitExceeded")
        assert f"exceed launcher.crash_limit {crash_limit}" in verdict.message
    if not past:  # within the crash limit, crashes change nothing
        within = after_failure(src, failures, limit, proposed)
        assert (verdict.state, verdict.failures, verdict.reason) == (within.state, within.failures, within.reason)


def test_a_job_lost_with_its_launcher_is_retried_up_to_the_crash_limit_even_without_retries() -> None:
    states = [after_failure(S.RUN_TIMEOUT, 0, 0, S.RESTART_READY, crashes=n, crash_limit=5).state for n in range(1, 7)]
    assert states == [S.RESTART_READY] * 5 + [S.FAILED]
    assert after_failure(S.RUN_TIMEOUT, 0, 0, S.RESTART_READY, crashes=1, crash_limit=0).state == S.FAILED
    assert after_failure(S.RUN_TIMEOUT, 0, 0, S.RESTART_READY, crashes=99).state == S.RESTART_READY, "no limit"
