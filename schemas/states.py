"""The Job and BatchJob state machines, written once, as data.

Every state change in balsamctl goes through :func:`check_job_transition` or
:func:`check_batchjob_transition`; a transition missing from the tables below is refused.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """The 14 Balsam Job states."""

    CREATED = "CREATED"
    AWAITING_PARENTS = "AWAITING_PARENTS"
    READY = "READY"
    STAGED_IN = "STAGED_IN"
    PREPROCESSED = "PREPROCESSED"
    RUNNING = "RUNNING"
    RUN_DONE = "RUN_DONE"
    POSTPROCESSED = "POSTPROCESSED"
    STAGED_OUT = "STAGED_OUT"
    JOB_FINISHED = "JOB_FINISHED"
    RUN_ERROR = "RUN_ERROR"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    RESTART_READY = "RESTART_READY"
    FAILED = "FAILED"


class BatchJobState(StrEnum):
    """The life of one allocation, as the controller observes it."""

    pending_submission = "pending_submission"
    queued = "queued"
    running = "running"
    finished = "finished"
    submit_failed = "submit_failed"
    pending_deletion = "pending_deletion"


J = JobState
JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    J.CREATED: frozenset({J.AWAITING_PARENTS, J.READY, J.FAILED}),
    J.AWAITING_PARENTS: frozenset({J.READY, J.FAILED}),
    J.READY: frozenset({J.STAGED_IN, J.FAILED}),
    J.STAGED_IN: frozenset({J.PREPROCESSED, J.FAILED}),
    J.PREPROCESSED: frozenset({J.RUNNING, J.FAILED}),
    J.RUNNING: frozenset({J.RUN_DONE, J.RUN_ERROR, J.RUN_TIMEOUT}),
    J.RUN_DONE: frozenset({J.POSTPROCESSED, J.RESTART_READY, J.FAILED}),
    J.POSTPROCESSED: frozenset({J.STAGED_OUT, J.FAILED}),
    J.STAGED_OUT: frozenset({J.JOB_FINISHED, J.FAILED}),
    J.JOB_FINISHED: frozenset({J.READY}),
    J.RUN_ERROR: frozenset({J.RESTART_READY, J.RUN_DONE, J.FAILED}),
    J.RUN_TIMEOUT: frozenset({J.RESTART_READY, J.RUN_DONE, J.FAILED}),
    J.RESTART_READY: frozenset({J.RUNNING, J.FAILED}),
    J.FAILED: frozenset({J.READY}),
}
"""Allowed Job transitions. ``JOB_FINISHED``/``FAILED`` -> ``READY`` is an explicit rerun."""

#: Where a launcher's record of one run may leave its Job: the table's moves out of RUNNING and, for a run that never
#: started because of its node or site (an infrastructure failure: never charged, no hook runs), straight back to
#: RESTART_READY. A launcher's write alone makes that last move: no one else can take a RUNNING Job back.
RUN_OUTCOMES: frozenset[JobState] = JOB_TRANSITIONS[J.RUNNING] | {J.RESTART_READY}

#: After RUN_DONE, on to JOB_FINISHED: (from, to, reason) of each step. The first is the default of an App without
#: a postprocess hook (with one, the hook decides); the others apply to every Job (nothing is staged out).
FINISHING_STEPS: tuple[tuple[JobState, JobState, str], ...] = (
    (J.RUN_DONE, J.POSTPROCESSED, "Postprocessed"),
    (J.POSTPROCESSED, J.STAGED_OUT, "StagedOut"),
    (J.STAGED_OUT, J.JOB_FINISHED, "Finished"),
)
#: States from which a launcher may acquire a Job.
RUNNABLE_STATES: frozenset[JobState] = frozenset({J.PREPROCESSED, J.RESTART_READY})
#: States in which a Job is over.
FINAL_JOB_STATES: frozenset[JobState] = frozenset({J.JOB_FINISHED, J.FAILED})

B = BatchJobState
BATCHJOB_TRANSITIONS: dict[BatchJobState, frozenset[BatchJobState]] = {
    B.pending_submission: frozenset({B.queued, B.running, B.submit_failed, B.pending_deletion}),
    B.queued: frozenset({B.running, B.finished, B.pending_deletion}),
    B.running: frozenset({B.finished, B.pending_deletion}),
    B.pending_deletion: frozenset({B.finished}),
    B.submit_failed: frozenset({B.pending_deletion}),
    B.finished: frozenset(),
}
"""Allowed BatchJob transitions; ``finished`` is terminal."""

#: BatchJob states that hold (or may hold) a live allocation.
ACTIVE_BATCHJOB_STATES: frozenset[BatchJobState] = frozenset({B.queued, B.running, B.pending_deletion})


class InvalidTransition(ValueError):
    """A state change that the state machine does not allow."""

    def __init__(self, kind: str, name: str, src: str, dst: str) -> None:
        self.kind, self.name, self.src, self.dst = kind, name, src, dst
        super().__init__(f"{kind}/{name}: transition {src} -> {dst} is not allowed")


def check_job_transition(name: str, src: JobState | str, dst: JobState | str) -> None:
    """Raise :class:`InvalidTransition` unless a Job may go from ``src`` to ``dst``."""
    if JobState(dst) not in JOB_TRANSITIONS[JobState(src)]:
        raise InvalidTransition("job", name, str(src), str(dst))


def check_run_outcome(name: str, dst: JobState | str) -> None:
    """Raise :class:`InvalidTransition` unless a launcher's record of a run may leave its Job in ``dst``."""
    if JobState(dst) not in RUN_OUTCOMES:
        raise InvalidTransition("job", name, J.RUNNING.value, str(dst))


def check_batchjob_transition(name: str, src: BatchJobState | str, dst: BatchJobState | str) -> None:
    """Raise :class:`InvalidTransition` unless a BatchJob may go from ``src`` to ``dst``."""
    if BatchJobState(dst) not in BATCHJOB_TRANSITIONS[BatchJobState(src)]:
        raise InvalidTransition("batchjob", name, str(src), str(dst))
