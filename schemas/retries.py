"""What becomes of a Job after a failed run: retried while its limits allow, else FAILED. Pure.

Two limits, two counts on the Job's status:

- ``failures``, against ``max_retries``: runs that ended in RUN_ERROR (the App's own command failed);
- ``crashes``, against the site's ``launcher.crash_limit``: runs lost with their launcher, ended as RUN_TIMEOUT by
  the controller, not by the launcher (its lease ran out, or its allocation ended before it recorded the run). A
  Job that kills its node still stops eventually; an innocent one is never charged a failure for it.

A walltime or deletion kill (RUN_TIMEOUT recorded by the launcher itself) counts against neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from balsamctl.schemas.states import JobState


@dataclass(frozen=True)
class Verdict:
    """The next state of a Job that left RUN_ERROR or RUN_TIMEOUT, its charged failures, and why."""

    state: JobState
    failures: int
    message: str
    reason: str = "RetriesExhausted"
    """``Retry``, ``CrashLimitExceeded`` or ``RetriesExhausted`` (for any other outcome)."""


def crashed(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A Job's status with one more run lost with its launcher: written with its RUNNING -> RUN_TIMEOUT."""
    return {**(status or {}), "crashes": (status or {}).get("crashes", 0) + 1}


def after_failure(
    src: JobState,
    failures: int,
    max_retries: int | None,
    proposed: JobState,
    crashes: int = 0,
    crash_limit: int | None = None,
) -> Verdict:
    """Apply the limits to the state a hook ``proposed`` (without a hook, propose RESTART_READY).

    A RUN_ERROR is the Job's own failure and is charged here; a RUN_TIMEOUT never is (a lost run was counted in
    ``crashes`` when it was ended, a walltime or deletion kill is free). A retry past ``max_retries`` or past
    ``crash_limit`` (None: no limit) becomes FAILED.
    """
    charged = failures + 1 if src == JobState.RUN_ERROR else failures
    if proposed != JobState.RESTART_READY:
        return Verdict(proposed, charged, f"{src.value} -> {proposed.value}")
    if crash_limit is not None and crashes > crash_limit:
        why = f"{crashes} runs lost with their launcher exceed launcher.crash_limit {crash_limit}: not retried again"
        return Verdict(JobState.FAILED, charged, why, "CrashLimitExceeded")
    if max_retries is not None and charged > max_retries:
        return Verdict(
            JobState.FAILED, charged, f"error {charged} exceeds max_retries {max_retries}: not retried again"
        )
    limit = "no limit" if max_retries is None else f"{charged} of {max_retries} retries used"
    lost = f", {crashes} of {crash_limit} lost runs forgiven" if crashes and crash_limit is not None else ""
    return Verdict(proposed, charged, f"retry after {src.value} ({limit}{lost})", "Retry")
