"""Where a Job's output goes: ``job.out`` in its workdir for the latest attempt, ``job.out.N`` for attempt N."""

from __future__ import annotations

import os
from pathlib import Path

LATEST = "job.out"


def prepare_workdir(workdir: Path) -> None:
    """Make a Job's workdir and its (empty) output file, so that the launcher only opens it: done at stage-in,
    while the Job waits for an allocation, not on the allocation's time."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.close(os.open(workdir / LATEST, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666))


def output_path(workdir: str, attempt: int) -> str:
    """The file attempt ``attempt`` writes, after moving the previous attempt's output aside (plain strings: a
    launcher asks this for every Job it starts)."""
    latest = os.path.join(workdir, LATEST)
    if attempt > 1 and os.path.exists(latest):
        os.rename(latest, f"{latest}.{attempt - 1}")
    return latest


def attempt_files(workdir: Path) -> dict[int, Path]:
    """``{attempt: file}`` in attempt order: earlier attempts are ``job.out.N``, the latest is ``job.out``."""
    prefix = len(LATEST) + 1
    files = {int(p.name[prefix:]): p for p in workdir.glob(f"{LATEST}.*") if p.name[prefix:].isdigit()}
    if (workdir / LATEST).is_file():
        files[max(files, default=0) + 1] = workdir / LATEST
    return dict(sorted(files.items()))


def read_tail(path: str | Path, max_bytes: int) -> str:
    """The last ``max_bytes`` of a file, decoded (bytes that are not UTF-8 replaced); OSError if it cannot be read."""
    with open(path, "rb") as stream:
        stream.seek(max(0, stream.seek(0, os.SEEK_END) - max_bytes))
        return stream.read().decode(errors="replace")
