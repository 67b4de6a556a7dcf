"""What every part of the store shares: the engine and a few query helpers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, NotRequired, TypedDict, TypeVar, cast

from sqlalchemy import Connection, Engine, bindparam, insert
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from balsamctl.store.engine import make_engine, redact
from balsamctl.store.rows import now
from balsamctl.store.tables import events

T = TypeVar("T")
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size`` (keeps ``IN (...)`` lists bounded)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


EventData = str | Mapping[str, Any] | None
"""An event's data: JSON text, or a JSON-ready mapping."""


class EventRow(TypedDict):
    """One event to insert (:func:`add_events`): a state change of an object, or something that happened to it."""

    site_id: int
    kind: str
    name: str
    reason: str
    message: str | None
    object_id: NotRequired[int | None]
    from_state: NotRequired[str | None]
    to_state: NotRequired[str | None]
    time: NotRequired[float]
    """Epoch seconds; the time of the write when absent."""
    data: NotRequired[EventData]


class StoreBase:
    """Holds the engine; the mixins of :class:`balsamctl.store.Store` build on it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)

    def __repr__(self) -> str:
        return f"Store({redact(self.url)!r})"

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()


def job_event(
    site_id: int,
    job_id: int,
    name: str,
    src: str | None,
    dst: str | None,
    reason: str,
    message: str | None,
    time: float | None = None,
    data: EventData = None,
) -> EventRow:
    """An event row about a Job (for :func:`add_events`); ``time``: None for the time of the write."""
    row: EventRow = {
        "site_id": site_id,
        "object_id": job_id,
        "kind": "Job",
        "name": name,
        "from_state": src,
        "to_state": dst,
        "reason": reason,
        "message": message,
    }
    if time is not None:
        row["time"] = time
    if data is not None:
        row["data"] = data
    return row


def executemany(conn: Connection, stmt: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run ``stmt`` (a module-level statement with bind parameters) once per row through the driver's own
    executemany: SQLAlchemy compiles it once per dialect and does no per-row work, so the values must be plain
    (the caller serializes JSON) and the rows of one call must have the same keys. A statement with values of its
    own (constants such as ``state='RUNNING'`` are bound too) has them merged into a copy of each row; one whose
    rows give every value (events) is passed as is. The store's hot paths (launchers' claims, starts, outcomes
    and their events) write thousands of rows a second this way."""
    if not rows:
        return
    key = (stmt, conn.dialect.name)  # the statement itself: it stays alive, so no other can take its place
    if key not in _COMPILED:
        compiled = cast(SQLCompiler, stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True}))
        order = compiled.positiontup if compiled.positional else None
        _COMPILED[key] = (str(compiled), compiled.params, None if order is None else _getter(order))
    sql, defaults, positions = _COMPILED[key]
    if not defaults.keys() <= rows[0].keys():  # the statement's own values (literals) go in each row
        rows = [{**defaults, **row} for row in rows]
    conn.exec_driver_sql(sql, rows if positions is None else [positions(row) for row in rows])


def _getter(keys: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A row's values in ``keys`` order, as a tuple (itemgetter returns a bare value for one key)."""
    if len(keys) == 1:
        return lambda row: (row[keys[0]],)
    return itemgetter(*keys)


_COMPILED: dict[
    tuple[ClauseElement, str], tuple[str, Mapping[str, Any], Callable[[Mapping[str, Any]], Any] | None]
] = {}
_EVENT_COLUMNS = ("site_id", "object_id", "kind", "name", "from_state", "to_state", "time", "reason", "message", "data")
_INSERT_EVENT = insert(events).values({c: bindparam(c) for c in _EVENT_COLUMNS})


def _json(data: EventData) -> str | None:
    """An event's data as JSON text (given as text: as is)."""
    return data if data is None or isinstance(data, str) else json.dumps(data)


def add_events(conn: Connection, rows: Iterable[EventRow]) -> None:
    """Insert event rows."""
    t = now()
    batch = [
        {
            "object_id": None,
            "from_state": None,
            "to_state": None,
            "time": t,
            **row,
            "data": _json(row.get("data")),
        }
        for row in rows
    ]
    executemany(conn, _INSERT_EVENT, batch)
