"""Reading the event log: every transition of every object."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from balsamctl.store.base import StoreBase, add_events
from balsamctl.store.engine import read_tx, write_tx
from balsamctl.store.tables import events, objects


class EventStore(StoreBase):
    """Queries over ``events``."""

    def events(
        self,
        site_ids: tuple[int, ...],
        *,
        kind: str | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` events (oldest first), optionally of one object."""
        q = select(events).where(events.c.site_id.in_(site_ids))
        if kind is not None:
            q = q.where(events.c.kind == kind)
        if name is not None:
            q = q.where(events.c.name == name)
        with read_tx(self.engine) as conn:
            rows = conn.execute(q.order_by(events.c.id.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in reversed(rows)]

    def record_event(self, site_id: int, kind: str, name: str, reason: str, message: str) -> None:
        """Record an event that is not a state change (e.g. a manifest file that could not be applied)."""
        with write_tx(self.engine) as conn:
            add_events(conn, [{"site_id": site_id, "kind": kind, "name": name, "reason": reason, "message": message}])

    def entered_at(self, site_id: int, kind: str, name: str, state: str) -> float | None:
        """When the object ``kind``/``name`` last entered ``state`` (the time of its newest event moving there), if
        it ever did."""
        obj = (
            select(objects.c.id)
            .where(objects.c.site_id == site_id, objects.c.kind == kind, objects.c.name == name)
            .scalar_subquery()
        )
        q = (
            select(events.c.time)
            .where(events.c.object_id == obj, events.c.to_state == state)
            .order_by(events.c.id.desc())
            .limit(1)
        )
        with read_tx(self.engine) as conn:
            return conn.execute(q).scalar()

    def last_transition(self, site_id: int, object_id: int) -> int | None:
        """The id of the event that moved an object into its current state (None if it never moved)."""
        q = (
            select(events.c.id)
            .where(events.c.object_id == object_id, events.c.site_id == site_id, events.c.to_state.is_not(None))
            .order_by(events.c.id.desc())
            .limit(1)
        )
        with read_tx(self.engine) as conn:
            return conn.execute(q).scalar()
