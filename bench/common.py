"""Shared helpers of the benchmarks: temporary sites, timers, peak memory."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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
    """Run ``balsamctl ARGS`` under ``/usr/bin/time`` (its own peak RSS, not its parent's) and measure it."""
    timer = ["/usr/bin/time", "-f", "%M"] if Path("/usr/bin/time").exists() else []  # Debian package "time"
    t0 = time.perf_counter()
    proc = subprocess.run([*timer, "balsamctl", *args], cwd=cwd, env=env_for(config), capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"balsamctl {' '.join(args)} failed: {proc.stderr}")
    peak_kib = int(proc.stderr.strip().splitlines()[-1]) if timer else 0
    return Run(elapsed, peak_kib / 1024, proc.stdout)


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


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms until it is true; :class:`TimeoutError` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


@contextlib.contextmanager
def pg_database(server_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the PostgreSQL server of ``server_url``, dropped on exit."""
    import secrets

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"balsam_bench_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
