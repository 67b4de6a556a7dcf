"""The Job and BatchJob state machines, written once, as data.

Every state change in balsamctl goes through :func:`check_job_transition` or
:func:`check_batchjob_transition`; a transition missing from the tables below is refused.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """The 14 Balsam Job states. Each says what it means and who moves a Job out of it."""

    CREATED = "CREATED"
    """Applied. The controller moves it on: to READY (no parents), AWAITING_PARENTS, or FAILED (a parent failed)."""
    AWAITING_PARENTS = "AWAITING_PARENTS"
    """Waits for its parents. The controller moves it to READY once every parent is JOB_FINISHED, FAILED if one
    fails."""
    READY = "READY"
    """May run once staged. The controller's stage-in makes its workdir and output file: STAGED_IN (a workdir out of
    ``data/`` FAILS it; one the file system refuses keeps it here, with ``StagedIn=False``)."""
    STAGED_IN = "STAGED_IN"
    """Its workdir exists. The controller runs its App's ``preprocess`` hook (or none): PREPROCESSED, or FAILED."""
    PREPROCESSED = "PREPROCESSED"
    """Runnable: a launcher may claim it (its ``owner``) and start it: RUNNING."""
    RUNNING = "RUNNING"
    """Started by the launcher that owns it, which records how it ended: RUN_DONE, RUN_ERROR, RUN_TIMEOUT (it stopped
    it), or RESTART_READY (it never started, for an infrastructure reason). A lost launcher's Jobs are ended by the
    controller once its allocation has ended: RUN_TIMEOUT, a crash."""
    RUN_DONE = "RUN_DONE"
    """Exited 0. The controller runs the ``postprocess`` hook (it may choose RESTART_READY or FAILED); without one the
    launcher takes it on to JOB_FINISHED in the same write."""
    POSTPROCESSED = "POSTPROCESSED"
    """Postprocessed. The controller (or the launcher, without a hook) moves it to STAGED_OUT."""
    STAGED_OUT = "STAGED_OUT"
    """Staged out (nothing is copied). The controller (or the launcher) moves it to JOB_FINISHED."""
    JOB_FINISHED = "JOB_FINISHED"
    """Done. Only an explicit rerun (``balsamctl rerun``) takes it back to READY."""
    RUN_ERROR = "RUN_ERROR"
    """Its own command failed (charged to ``max_retries``). The controller runs ``handle_error`` (default: FAILED, or
    RESTART_READY within ``max_retries``)."""
    RUN_TIMEOUT = "RUN_TIMEOUT"
    """Stopped with its allocation (never charged; a run lost with its launcher counts as a crash). The controller
    runs ``handle_timeout`` (default: RESTART_READY, FAILED past ``launcher.crash_limit``)."""
    RESTART_READY = "RESTART_READY"
    """Runnable again: a launcher may claim and start it (RUNNING)."""
    FAILED = "FAILED"
    """Given up: past its limits, refused at stage-in, a hook's choice, or a parent failed. Only a rerun takes it back
    to READY."""


class BatchJobState(StrEnum):
    """The life of one allocation, as the controller observes it. The controller alone moves a BatchJob."""

    pending_submission = "pending_submission"
    """Applied, not submitted yet (or its submission's fate is unknown): the controller submits it (queued), or it is
    refused (submit_failed)."""
    queued = "queued"
    """Submitted, waiting in the scheduler's queue: running when the scheduler starts it, finished if it ends."""
    running = "running"
    """Its allocation runs its launchers: finished when the scheduler says it ended."""
    finished = "finished"
    """Its allocation ended (walltime, its launchers done, cancelled): final."""
    submit_failed = "submit_failed"
    """The scheduler refused the submission (or its job script could not be made): deleting it is all that is left."""
    pending_deletion = "pending_deletion"
    """Deleted by a user: the controller cancels the allocation and removes the BatchJob once the scheduler confirms
    the end (its running Jobs become RUN_TIMEOUT)."""


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

#: BatchJob states that hold (or may hold) a live allocation: every one but those that end without one
#: (``pending_submission`` too: after a submit that timed out, its allocation may run launchers already).
ACTIVE_BATCHJOB_STATES: frozenset[BatchJobState] = frozenset(BatchJobState) - {B.finished, B.submit_failed}


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
