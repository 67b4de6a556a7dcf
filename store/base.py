"""What every part of the store shares: the engine and a few query helpers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, insert

from store.engine import make_engine, redact
from store.rows import now
from store.tables import events

T = TypeVar("T")
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size`` (keeps ``IN (...)`` lists bounded)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StoreBase:
    """Holds the engine; the mixins of :class:`store.Store` build on it."""

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
    **extra: Any,
) -> dict[str, Any]:
    """An event row about a Job (for :func:`add_events`); ``extra``: ``time``, ``data``."""
    return {
        "site_id": site_id,
        "object_id": job_id,
        "kind": "Job",
        "name": name,
        "from_state": src,
        "to_state": dst,
        "reason": reason,
        "message": message,
        **extra,
    }


def add_events(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    """Insert event rows (site_id, object_id, kind, name, from_state, to_state, reason, message[, data, time])."""
    batch = []
    t = now()
    for row in rows:
        row.setdefault("time", t)
        row.setdefault("data", None)
        row.setdefault("from_state", None)
        row.setdefault("to_state", None)
        batch.append(row)
    if batch:
        conn.execute(insert(events), batch)
