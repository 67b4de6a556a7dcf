"""Engines and transactions: SQLite (WAL, ``BEGIN IMMEDIATE`` for writes) or PostgreSQL, through SQLAlchemy."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError, ProgrammingError

from balsamctl.store import migrations

SQLITE_BUSY_SEC = 60.0  # how long a SQLite connection waits for another's lock
CONNECT_TIMEOUT_SEC = 10
"""How long connecting to a PostgreSQL store may take (``$BALSAMCTL_CONNECT_TIMEOUT`` seconds, else this; a URL's
own ``connect_timeout`` wins): a host that does not answer fails in seconds, not after TCP's minutes."""

StoreUnavailable = (OperationalError, InterfaceError, InternalError)
"""What a store call raises when the database cannot be reached or refuses the work for now (locked, connection
lost, read-only, out of space: the driver's error, wrapped), for ``except``: a caller that can wait and try again
catches these. An integrity or programming error is not among them: it fails the same way every time."""


class AccessDenied(PermissionError):
    """The database refused this role the work (PostgreSQL's insufficient privilege: a table it was not granted, a
    row-level security policy of a shared store, a schema it may not migrate): nothing was written."""


def denied(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a privilege (SQLSTATE 42501)."""
    orig = getattr(exc, "orig", None)
    return isinstance(exc, DBAPIError) and getattr(orig, "sqlstate", getattr(orig, "pgcode", None)) == "42501"


def said(exc: BaseException) -> str:
    """The first line of what the database driver said."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and ``describe``)."""
    url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; creates the schema if it is missing, migrates an older one
    (:mod:`balsamctl.store.migrations`)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, pool_size=2, max_overflow=8, connect_args={"timeout": SQLITE_BUSY_SEC, "check_same_thread": False}
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, connect_args=_connect_args(url))
    revision = _revision(engine)
    if revision != migrations.head_revision():
        try:
            with write_tx(engine) as conn:
                migrations.upgrade(conn)
        except AccessDenied as exc:  # a role of a shared store that is not its owner
            engine.dispose()
            raise AccessDenied(
                f"the store {redact(url)} is at schema revision {revision or 'none this role can read'} and this "
                f"balsamctl needs {migrations.head_revision()}: role {_role(engine)} may not migrate it "
                f"({said(exc.__cause__ or exc)}); ask its owner to run `balsamctl store init {_as_owner(engine)}`"
            ) from None
    return engine


def _connect_args(url: str) -> dict[str, Any]:
    """The driver's connect arguments for a server store: libpq's ``connect_timeout`` (psycopg's drivers)."""
    parsed = make_url(url)
    if parsed.get_driver_name() not in ("psycopg", "psycopg2") or "connect_timeout" in parsed.query:
        return {}
    value = os.environ.get("BALSAMCTL_CONNECT_TIMEOUT") or str(CONNECT_TIMEOUT_SEC)
    try:
        return {"connect_timeout": max(1, round(float(value)))}
    except ValueError:
        raise ValueError(f"BALSAMCTL_CONNECT_TIMEOUT={value!r}: expected a number of seconds") from None


def _revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database (one ``SELECT``); ``None`` if it records none."""
    with engine.connect() as conn:  # a store that cannot be reached fails here, once
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, ProgrammingError):  # no such table: a new store, or one made before migrations
            return None


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SEC * 1000)}")
    _wal(cursor)
    cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns (NORMAL: not after an OS crash)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _wal(cursor: Any) -> None:
    """Put the database in WAL mode. On a new file, while another connection switches it, SQLite refuses at once
    ("database is locked") without waiting on its busy handler: launchers that open a new store together would
    fail, so the switch is tried again until the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_SEC
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _sqlite_on_begin(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get("balsam_write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction: on SQLite it takes the write lock at once (no upgrade deadlocks)."""
    with engine.connect() as conn:
        conn = conn.execution_options(balsam_write=True)
        try:
            with conn.begin():
                yield conn
        except DBAPIError as exc:
            if not denied(exc):
                raise
            raise AccessDenied(f"role {_role(engine)} may not do that in this store: {said(exc)}") from exc


def _as_owner(engine: Engine) -> str:
    """The engine's URL as its owner would give it (``OWNER`` for the user, no password)."""
    return engine.url.set(username="OWNER", password=None).render_as_string(hide_password=True)


def _role(engine: Engine) -> str:
    """The role ``engine`` connects as, for messages."""
    return engine.url.username or "of this connection"


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction: a consistent snapshot."""
    with engine.connect() as conn, conn.begin():
        yield conn


def is_postgres(engine: Engine) -> bool:
    """Whether the engine speaks PostgreSQL (``FOR UPDATE SKIP LOCKED``)."""
    return engine.dialect.name == "postgresql"
