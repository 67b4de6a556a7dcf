"""Fresh store databases for tests: SQLite files, or throwaway PostgreSQL databases on the test server."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from balsamctl.store import sqlite_url

ROOT = Path(__file__).resolve().parents[2]
PG_URL_VAR = "BALSAMCTL_TEST_PG_URL"


class Databases:
    """Fresh, empty store databases of one back end."""

    def __init__(self, backend: str, server_url: str | None = None) -> None:
        self.backend = backend
        self.server_url = server_url
        self._admin: Engine | None = None

    @contextmanager
    def fresh(self, directory: Path) -> Iterator[str]:
        """The URL of a new database: a SQLite file in ``directory``, or a PostgreSQL database dropped on exit."""
        if self.server_url is None:
            yield sqlite_url(directory / "store.db")
            return
        if self._admin is None:
            self._admin = create_engine(self.server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        name = f"balsam_test_{secrets.token_hex(6)}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(self.server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))

    def close(self) -> None:
        """Release the administrative connection."""
        if self._admin is not None:
            self._admin.dispose()


def pg_server_url() -> str:
    """The test server's URL: ``BALSAMCTL_TEST_PG_URL``, or ``scripts/pg-up.sh`` started (never in CI)."""
    url = os.environ.get(PG_URL_VAR)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"{PG_URL_VAR} is not set: in CI the PostgreSQL tests must run (scripts/test.sh sets it)")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "pg-up.sh")], capture_output=True, text=True, check=False)
    last = proc.stdout.strip().splitlines()[-1:] or [""]
    if proc.returncode != 0 or not last[0].startswith(f"{PG_URL_VAR}="):
        pytest.fail(f"scripts/pg-up.sh failed (exit {proc.returncode}):\n{proc.stderr}")
    return last[0].removeprefix(f"{PG_URL_VAR}=")
