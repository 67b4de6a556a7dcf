"""Shared helpers of the benchmarks: temporary sites, timers, peak memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def env_for(config: Path) -> dict[str, str]:
    """The environment of a CLI call against a private site registry."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return {**os.environ, "BALSAMCTL_CONFIG": str(config), "PATH": path}


@dataclass(frozen=True)
class Run:
    """One CLI call: wall seconds, peak RSS (MiB) and standard output."""

    seconds: float
    peak_mib: float
    stdout: str


def cli(args: Sequence[str], cwd: Path, config: Path) -> Run:
    """Run ``balsamctl ARGS`` and measure it; raises on failure."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(["balsamctl", *args], cwd=cwd, env=env_for(config), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"balsamctl {' '.join(args)} failed: {err.read().decode()}")
        return Run(elapsed, usage.ru_maxrss / 1024, out.read().decode())


@contextmanager
def timed(label: str) -> Iterator[None]:
    """Print how long the block took."""
    t0 = time.perf_counter()
    yield
    print(f"{label}: {time.perf_counter() - t0:.3f} s")


def median(values: Sequence[float]) -> float:
    """The median."""
    return statistics.median(values)


def job_docs(n: int, app: str = "hello", prefix: str = "job", start: int = 0) -> str:
    """A multi-document manifest of ``n`` Jobs."""
    return "".join(
        f"---\napiVersion: balsam/v1\nkind: Job\nmetadata:\n  name: {prefix}-{i}\n  labels: {{batch: b{i % 10}}}\n"
        f"spec:\n  app: {app}\n  workdir: {prefix}/{i}\n  parameters: {{name: n{i}}}\n"
        for i in range(start, start + n)
    )


APP_DOC = """---
apiVersion: balsam/v1
kind: App
metadata: {name: hello}
spec:
  command: echo {{ name }}
  parameters: {name: {default: world}}
"""
