"""Where a Job's output goes: ``job.out`` in its workdir for the latest attempt, ``job.out.N`` for attempt N."""

from __future__ import annotations

from pathlib import Path

LATEST = "job.out"


def output_path(workdir: Path, attempt: int) -> Path:
    """The file attempt ``attempt`` writes, after moving the previous attempt's output aside."""
    latest = workdir / LATEST
    if attempt > 1 and latest.exists():
        latest.rename(workdir / f"{LATEST}.{attempt - 1}")
    return latest


def attempt_files(workdir: Path) -> dict[int, Path]:
    """``{attempt: file}`` in attempt order: earlier attempts are ``job.out.N``, the latest is ``job.out``."""
    prefix = len(LATEST) + 1
    files = {int(p.name[prefix:]): p for p in workdir.glob(f"{LATEST}.*") if p.name[prefix:].isdigit()}
    if (workdir / LATEST).is_file():
        files[max(files, default=0) + 1] = workdir / LATEST
    return dict(sorted(files.items()))
