"""What becomes of a Job after a failed run: retried while its ``max_retries`` allow, else FAILED. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.states import JobState


@dataclass(frozen=True)
class Verdict:
    """The next state of a Job that left RUN_ERROR or RUN_TIMEOUT, its charged failures, and why."""

    state: JobState
    failures: int
    message: str


def after_failure(src: JobState, failures: int, max_retries: int | None, proposed: JobState) -> Verdict:
    """Apply the retry limit to the state a hook ``proposed`` (without a hook, propose RESTART_READY).

    A RUN_ERROR is the Job's own failure and is charged; a RUN_TIMEOUT was charged already when it was (a lost
    launcher), and a walltime or deletion kill never is. A retry past ``max_retries`` (None: no limit) becomes FAILED.
    """
    charged = failures + 1 if src == JobState.RUN_ERROR else failures
    if proposed == JobState.RESTART_READY and max_retries is not None and charged > max_retries:
        why = "error" if src == JobState.RUN_ERROR else "lost run"
        return Verdict(
            JobState.FAILED, charged, f"{why} {charged} exceeds max_retries {max_retries}: not retried again"
        )
    if proposed == JobState.RESTART_READY:
        limit = "no limit" if max_retries is None else f"{charged} of {max_retries} retries used"
        return Verdict(proposed, charged, f"retry after {src.value} ({limit})")
    return Verdict(proposed, charged, f"{src.value} -> {proposed.value}")
