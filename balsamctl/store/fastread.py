"""Reading objects fast: the store's read queries for the CLI's quick answers (``get``, shell completion), with
nothing heavy imported.

A SQLite store is read through the standard library's ``sqlite3`` on a read-only connection, with the queries of
:class:`balsamctl.store.objects.ObjectStore` (so the same indexes serve them); any other store (PostgreSQL) through
:class:`balsamctl.store.Store` itself. An object comes back in its JSON form, as a dict: ``full`` (the pydantic
model's dump, what ``get -o json`` prints) or raw (the row as the models would read it, before validation: the spec
as stored, the status without the fields the row lacks). SQLAlchemy and pydantic are imported only when needed.

A reader refuses (:class:`Unreadable`) a store it cannot vouch for: one not made yet, with a schema revision other
than this code's, or where a site is not registered at its directory. The full store opens, migrates or registers
those; the fast path then hands the call to it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from balsamctl.schemas import Manifest
    from balsamctl.store import Store

ObjectData = dict[str, Any]
"""An object in its JSON form: ``apiVersion``, ``kind``, ``metadata``, ``spec``, ``status``."""
_JSON_COLUMNS = ("spec", "labels", "annotations", "status")
_LAST_CHAR = "\U0010ffff"
"""Sorts after every character: ``prefix <= x < prefix + _LAST_CHAR`` is a prefix match an index serves."""


class Selector(NamedTuple):
    """Which objects a query means."""

    kind: str
    site_ids: tuple[int, ...]
    names: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    states: tuple[str, ...] = ()
    scheduler_ids: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()


class Unreadable(Exception):
    """A store this reader cannot vouch for: the full store must open it."""


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{path}"


def sqlite_file(url: str) -> str | None:
    """The file of a plain ``sqlite:///PATH`` URL (relative to the current directory unless absolute, as
    SQLAlchemy reads it); None for any other URL, or one with options, escapes or an in-memory database."""
    path = url.removeprefix("sqlite:///")
    if path == url or not path or path == ":memory:" or path.startswith("file:") or any(c in path for c in "?#%"):
        return None
    return path


def to_datetime(ts: float | None) -> datetime | None:
    """A UTC datetime from epoch seconds."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def json_time(ts: float | None) -> str | None:
    """Epoch seconds as the JSON form writes a time: ``2025-01-02T03:04:05.123456Z`` (as pydantic dumps it)."""
    when = to_datetime(ts)
    return None if when is None else when.isoformat().replace("+00:00", "Z")


class Columns(Protocol):
    """A row's columns by name: a ``RowMapping`` of SQLAlchemy, a dict of ``sqlite3``'s."""

    def __getitem__(self, key: str, /) -> Any: ...


def object_body(row: Columns, site_name: str, when: Callable[[float | None], Any]) -> ObjectData:
    """The manifest of one ``objects`` row (its columns by name, JSON ones decoded), before validation; ``when``
    turns its epoch timestamps into what the caller needs (datetimes for the models, strings for the JSON form)."""
    status: dict[str, Any] = dict(row["status"] or {})
    status["state"] = row["state"]
    status["observed_generation"] = row["observed_generation"]
    if row["kind"] == "Job":
        status.update(
            return_code=row["return_code"],
            batch_job=row["batch_job"],
            attempts=row["attempts"],
            start_time=when(row["start_time"]),
            end_time=when(row["end_time"]),
            output_tail=row["output_tail"],
            message=row["message"],
        )
    elif row["kind"] == "BatchJob":
        status["scheduler_id"] = row["scheduler_id"]
    return {
        "apiVersion": "balsam/v1",
        "kind": row["kind"],
        "metadata": {
            "name": row["name"],
            "site": site_name,
            "labels": row["labels"] or {},
            "annotations": row["annotations"] or {},
            "uid": row["uid"],
            "generation": row["generation"],
            "resource_version": row["resource_version"],
            "creation_timestamp": when(row["created_at"]),
            "deletion_timestamp": when(row["deletion_timestamp"]),
        },
        "spec": row["spec"],
        "status": status,
    }


def json_form(manifest: Manifest) -> ObjectData:
    """A model's full JSON form (metadata, spec, status): what ``get -o json`` prints and ``apply -f`` takes back."""
    return manifest.model_dump(mode="json", by_alias=True)


def _validated(body: ObjectData) -> ObjectData:
    """The full JSON form of a body of :func:`object_body` (made with :func:`to_datetime`)."""
    from balsamctl.schemas.objects import KINDS

    return json_form(KINDS[body["kind"]].model_validate(body))


class Reader(Protocol):
    """What the fast paths read of one store."""

    def site_ids(self, sites: Mapping[str, str]) -> dict[int, str]:
        """``{id: name}`` of the sites ``{name: directory}``; :class:`Unreadable` unless each is registered in this
        store at that directory (the full store registers it)."""

    def objects(self, sel: Selector, after_id: int, limit: int, *, full: bool) -> list[tuple[int, ObjectData]]:
        """Up to ``limit`` objects of ``sel`` after ``after_id`` in id order, as ``(id, JSON form)``; raw bodies
        unless ``full`` (a reader may always give full ones)."""

    def count(self, sel: Selector) -> int:
        """How many objects match ``sel``."""

    def names(self, kind: str, site_ids: Sequence[int], prefix: str, limit: int) -> list[str]:
        """The names of the sites' objects of ``kind`` that start with ``prefix``, sorted, at most ``limit``."""

    def label_keys(self, kind: str, site_ids: Sequence[int], prefix: str, limit: int) -> list[str]:
        """The label keys of the sites' objects of ``kind`` that start with ``prefix``, sorted, at most ``limit``."""

    def close(self) -> None:
        """Release the connection."""


def open_reader(url: str) -> Reader:
    """A reader of the store at ``url``: ``sqlite3`` for a SQLite file, the full store for any other."""
    path = sqlite_file(url)
    return StoreReader(url) if path is None else SqliteReader(path)


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


def _where(sel: Selector) -> tuple[str, list[Any]]:
    """The ``WHERE`` of ``ObjectStore._select`` in SQLite's SQL, and its parameters."""
    terms = ["objects.kind = ?", f"objects.site_id IN ({_marks(sel.site_ids)})"]
    params: list[Any] = [sel.kind, *sel.site_ids]
    for column, values in (("name", sel.names), ("state", sel.states), ("scheduler_id", sel.scheduler_ids)):
        if values:
            terms.append(f"objects.{column} IN ({_marks(values)})")
            params += values
    if sel.apps:
        terms.append(f"objects.app IN ({_marks(sel.apps)})")
        params += sel.apps
    for key, value in sel.labels:
        terms.append('objects.id IN (SELECT labels.object_id FROM labels WHERE labels."key" = ? AND labels.value = ?)')
        params += [key, value]
    return " AND ".join(terms), params


Query = tuple[str, list[Any]]
"""A query in SQLite's SQL and its parameters."""


def page_query(sel: Selector, after_id: int, limit: int) -> Query:
    """``ObjectStore.list_objects``: up to ``limit`` objects of ``sel`` after ``after_id``, in id order."""
    where, params = _where(sel)
    sql = f"SELECT * FROM objects WHERE {where} AND objects.id > ? ORDER BY objects.id LIMIT ?"
    return sql, [*params, after_id, limit]


def count_query(sel: Selector) -> Query:
    """``ObjectStore.count_objects``: how many objects match ``sel``."""
    where, params = _where(sel)
    return f"SELECT count(*) FROM (SELECT objects.id AS id FROM objects WHERE {where})", params


def names_query(kind: str, site_ids: Sequence[int], prefix: str, limit: int) -> Query:
    """The names of the sites' objects of ``kind`` starting with ``prefix`` (the unique index on site, kind, name)."""
    sql = (
        f"SELECT DISTINCT objects.name FROM objects WHERE objects.kind = ? AND objects.site_id IN "
        f"({_marks(site_ids)}) AND objects.name >= ? AND objects.name < ? ORDER BY objects.name LIMIT ?"
    )
    return sql, [kind, *site_ids, prefix, prefix + _LAST_CHAR, limit]


def label_keys_query(kind: str, site_ids: Sequence[int], prefix: str, limit: int) -> Query:
    """The label keys of the sites' objects of ``kind`` starting with ``prefix`` (the labels' key index)."""
    sql = (
        'SELECT DISTINCT labels."key" FROM labels JOIN objects ON objects.id = labels.object_id '
        f"WHERE objects.kind = ? AND objects.site_id IN ({_marks(site_ids)}) "
        'AND labels."key" >= ? AND labels."key" < ? ORDER BY labels."key" LIMIT ?'
    )
    return sql, [kind, *site_ids, prefix, prefix + _LAST_CHAR, limit]


class SqliteReader:
    """A SQLite store read with ``sqlite3`` on a read-only connection."""

    def __init__(self, path: str) -> None:
        from balsamctl.store.migrations import head_revision

        try:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            self.conn.row_factory = sqlite3.Row
            found = self.conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error as exc:
            raise Unreadable(f"{path}: {exc}") from None
        if found is None or found[0] != head_revision():
            self.conn.close()
            raise Unreadable(f"{path}: schema revision {found and found[0]}, not {head_revision()}")
        self._site_names: dict[int, str] | None = None

    def _sites(self) -> dict[int, str]:
        if self._site_names is None:
            self._site_names = {r["id"]: r["name"] for r in self.conn.execute("SELECT id, name FROM sites")}
        return self._site_names

    def site_ids(self, sites: Mapping[str, str]) -> dict[int, str]:
        """``{id: name}`` of the sites ``{name: directory}`` (see :class:`Reader`)."""
        names = list(sites)
        rows = self.conn.execute(f"SELECT id, name, path FROM sites WHERE name IN ({_marks(names)})", names)
        found = {r["name"]: (r["id"], r["path"]) for r in rows}
        if any(found.get(name, (0, None))[1] != path for name, path in sites.items()):
            raise Unreadable("a site is not registered in its store at its directory")
        return {found[name][0]: name for name in sites}

    def objects(self, sel: Selector, after_id: int, limit: int, *, full: bool) -> list[tuple[int, ObjectData]]:
        """Objects of ``sel`` (see :class:`Reader`)."""
        names = self._sites()
        out = []
        for row in self.conn.execute(*page_query(sel, after_id, limit)):
            columns = dict(zip(row.keys(), row, strict=True))
            for key in _JSON_COLUMNS:
                if columns[key] is not None:
                    columns[key] = json.loads(columns[key])
            body = object_body(columns, names[row["site_id"]], to_datetime if full else json_time)
            out.append((row["id"], _validated(body) if full else body))
        return out

    def count(self, sel: Selector) -> int:
        """How many objects match ``sel``."""
        return int(self.conn.execute(*count_query(sel)).fetchone()[0])

    def names(self, kind: str, site_ids: Sequence[int], prefix: str, limit: int) -> list[str]:
        """Names of ``kind`` starting with ``prefix`` (see :class:`Reader`)."""
        return [r[0] for r in self.conn.execute(*names_query(kind, site_ids, prefix, limit))]

    def label_keys(self, kind: str, site_ids: Sequence[int], prefix: str, limit: int) -> list[str]:
        """Label keys starting with ``prefix`` (see :class:`Reader`)."""
        return [r[0] for r in self.conn.execute(*label_keys_query(kind, site_ids, prefix, limit))]

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class StoreReader:
    """Any store read through the full :class:`balsamctl.store.Store` (SQLAlchemy; objects come back full)."""

    def __init__(self, url: str) -> None:
        from balsamctl.store import Store

        self.store: Store = Store(url)

    def site_ids(self, sites: Mapping[str, str]) -> dict[int, str]:
        """``{id: name}`` of the sites ``{name: directory}`` (see :class:`Reader`)."""
        found = {s["name"]: (s["id"], s["path"]) for s in self.store.sites()}
        if any(found.get(name, (0, None))[1] != path for name, path in sites.items()):
            raise Unreadable("a site is not registered in its store at its directory")
        return {found[name][0]: name for name in sites}

    def objects(self, sel: Selector, after_id: int, limit: int, *, full: bool) -> list[tuple[int, ObjectData]]:
        """Objects of ``sel``, always full (see :class:`Reader`)."""
        return [(o.id, json_form(o.manifest)) for o in self.store.list_objects(sel, limit=limit, after_id=after_id)]

    def count(self, sel: Selector) -> int:
        """How many objects match ``sel``."""
        return self.store.count_objects(sel)

    def names(self, kind: str, site_ids: Sequence[int], prefix: str, limit: int) -> list[str]:
        """Names of ``kind`` starting with ``prefix`` (see :class:`Reader`)."""
        from sqlalchemy import select

        from balsamctl.store.tables import objects

        name = objects.c.name
        q = (
            select(name)
            .distinct()
            .where(objects.c.kind == kind, objects.c.site_id.in_(site_ids), name.startswith(prefix, autoescape=True))
            .order_by(name)
            .limit(limit)
        )
        with self.store.engine.connect() as conn:
            return [r[0] for r in conn.execute(q)]

    def label_keys(self, kind: str, site_ids: Sequence[int], prefix: str, limit: int) -> list[str]:
        """Label keys starting with ``prefix`` (see :class:`Reader`)."""
        from sqlalchemy import select

        from balsamctl.store.tables import labels, objects

        key = labels.c.key
        q = (
            select(key)
            .distinct()
            .join(objects, objects.c.id == labels.c.object_id)
            .where(objects.c.kind == kind, objects.c.site_id.in_(site_ids), key.startswith(prefix, autoescape=True))
            .order_by(key)
            .limit(limit)
        )
        with self.store.engine.connect() as conn:
            return [r[0] for r in conn.execute(q)]

    def close(self) -> None:
        """Release the store."""
        self.store.close()
