"""Schema migrations (Alembic), run by :func:`balsamctl.store.engine.make_engine` on every store it opens.

A new database is created at the newest revision; a store made before migrations existed (our tables, no
``alembic_version``) is stamped as the baseline ``0001`` and upgraded in place; a database whose revision this
code does not know (a newer balsamctl upgraded it) is a :class:`SchemaError`. Revision files are named
``NNNN_slug.py`` with revision id ``NNNN`` and a linear history, so the head is known from file names alone:
an up-to-date store costs one ``SELECT`` and Alembic is not even imported.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

SCRIPTS = Path(__file__).resolve().parent
#: The schema of stores made before migrations existed.
BASELINE = "0001"
#: Serialises migrations on a PostgreSQL server (``pg_advisory_xact_lock``); SQLite's write lock does it there.
_LOCK_KEY = 0x62616C73  # "bals"
_IN_PROCESS = threading.Lock()
"""Serialises migrations in this process: Alembic's ``context`` and ``op`` are process-wide, and stores opened side
by side (``get --site=all``) would otherwise migrate on each other's connections."""


class SchemaError(RuntimeError):
    """The store's schema is newer than (or unknown to) this balsamctl."""


def head_revision(scripts: Path = SCRIPTS) -> str:
    """The newest revision id, from the names of the revision files (their scripts are not loaded)."""
    return max(p.name.split("_", 1)[0] for p in (scripts / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def upgrade(conn: Connection, scripts: Path = SCRIPTS) -> None:
    """Bring the database of ``conn`` (in a write transaction) to the head revision of ``scripts``."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect, text

    with _IN_PROCESS:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        config = Config()
        config.set_main_option("script_location", str(scripts))
        config.attributes["connection"] = conn
        current = MigrationContext.configure(conn).get_current_revision()
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        if current is not None and current not in known:
            url = conn.engine.url.render_as_string(hide_password=True)
            raise SchemaError(
                f"the store {url} has schema revision {current}, which this balsamctl does not know (its newest is "
                f"{head_revision(scripts)}): a newer balsamctl upgraded it; upgrade balsamctl to use this store"
            )
        if current is None and inspect(conn).has_table("objects"):
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
