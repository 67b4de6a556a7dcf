"""A shared PostgreSQL store and the roles that use it, for the access-control tests: a throwaway database on the
test server, prepared by its owner (the server's superuser) with ``store init``, and LOGIN roles of their own
(unique names, no password: the test server trusts 127.0.0.1), dropped after."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from balsamctl.store import Store
from balsamctl.store.access import init_store
from tests.support.databases import Databases, pg_server_url
from tests.support.store_ops import add, app_doc, job_doc


@dataclass(frozen=True)
class Shared:
    """A shared store: its owner's URL and the roles made for the test."""

    owner_url: str
    roles: list[str]

    def url(self, role: str) -> str:
        """The store's URL as ``role``."""
        return as_role(self.owner_url, role)

    def sql(self, role: str | None = None) -> psycopg.Connection[tuple[Any, ...]]:
        """A raw psycopg connection (autocommit) as ``role`` (default: the owner): any SQL client's view."""
        return psycopg.connect(conninfo(self.url(role) if role else self.owner_url), autocommit=True)


def as_role(url: str, role: str) -> str:
    """``url`` with ``role`` as its user."""
    return make_url(url).set(username=role).render_as_string(hide_password=False)


def conninfo(url: str) -> str:
    """A SQLAlchemy URL as libpq takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def login_roles(count: int) -> Iterator[list[str]]:
    """``count`` new LOGIN roles on the test server, dropped on exit."""
    admin = create_engine(pg_server_url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    tag = secrets.token_hex(4)
    names = [f"balsam_t_{tag}_{i}" for i in range(count)]
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
        yield names
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
        admin.dispose()


@contextmanager
def shared_store(tmp_path: Path, roles: int = 2, *, prepare: bool = True) -> Iterator[Shared]:
    """A fresh database with ``roles`` roles of its own; prepared by ``store init`` (every role may use it) unless
    ``prepare`` is false. The database goes before the roles (their privileges are on its objects)."""
    databases = Databases("postgresql", pg_server_url())
    try:
        with login_roles(roles) as names, databases.fresh(tmp_path) as owner_url:
            if prepare:
                init_store(owner_url, [])
            yield Shared(owner_url, names)
    finally:
        databases.close()


@dataclass(frozen=True)
class Owned:
    """A site of one role with an App, two Jobs (one the other's parent, with labels), their events and a
    launcher."""

    site_id: int
    object_ids: list[int]


def owned_site(url: str, name: str = "alpha") -> Owned:
    """Make :class:`Owned` as the role of ``url``."""
    store = Store(url)
    try:
        site_id = store.ensure_site(name, f"/sites/{name}")
        add(store, site_id, [app_doc(), job_doc("j0", labels={"k": "v"}), job_doc("j1", parents=["j0"])])
        store.register_launcher(site_id, "l0", batch_job="bj", partition=0, job_mode="mpi", host="h", pid=1, nodes=[])
        ids = [int(row["id"]) for row in _ids(store, site_id)]
    finally:
        store.close()
    return Owned(site_id, ids)


def _ids(store: Store, site_id: int) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT id FROM objects WHERE site_id = :s ORDER BY id"), {"s": site_id})
        return [dict(r._mapping) for r in rows]


TABLES = ("sites", "site_grants", "objects", "labels", "parents", "events", "launchers")
"""The store's tables, all under row-level security."""


def dump(shared: Shared) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, as the owner of the tables sees them (row-level security does not apply to it)."""
    with shared.sql() as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES}
