"""BatchJob status and the launchers that run inside allocations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, insert, select, update

from balsamctl.schemas import BatchJobState, check_batchjob_transition
from balsamctl.schemas.conditions import Status, condition_status, set_condition
from balsamctl.store.base import StoreBase, add_events
from balsamctl.store.engine import is_postgres, read_tx, write_tx
from balsamctl.store.rows import now
from balsamctl.store.tables import launchers, objects

#: The BatchJob condition that says whether any launcher of its allocation started (registered with the store).
LAUNCHERS_STARTED = "LaunchersStarted"
_PAGE = 200


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a launcher reports with each heartbeat (its row's ``status``; the controller copies it into its
    BatchJob's ``status.partitions``)."""

    job_mode: str = ""
    nodes: tuple[str, ...] = ()
    """The nodes it still uses (not fenced off)."""
    running_jobs: int = 0
    claimed_jobs: int = 0
    """Claimed and not started yet: queued, or waiting in a lane."""
    occupancy: float = 0.0
    """The share of its nodes' CPUs its running Jobs hold."""


class BatchJobStore(StoreBase):
    """Observed BatchJob state, written by the controller; launcher heartbeats, written by launchers."""

    def set_batchjob_status(
        self,
        site_id: int,
        name: str,
        *,
        src: BatchJobState,
        dst: BatchJobState | None = None,
        scheduler_id: str | None = None,
        status: Mapping[str, Any] | None = None,
        observed_generation: int | None = None,
        reason: str = "",
        message: str = "",
    ) -> bool:
        """Update a BatchJob's status if it is still in ``src``; a state change is checked and recorded. ``status``
        is merged into the stored one, read and written in one transaction with the row locked (as
        :meth:`set_batchjob_condition`: neither overwrites what the other wrote)."""
        if dst is not None and dst != src:
            check_batchjob_transition(name, src, dst)
        t = now()
        with write_tx(self.engine) as conn:
            row = conn.execute(
                self._locked(
                    objects.c.site_id == site_id,
                    objects.c.kind == "BatchJob",
                    objects.c.name == name,
                    objects.c.state == src.value,
                )
            ).first()
            if row is None:
                return False
            values: dict[str, Any] = {"updated_at": t, "resource_version": objects.c.resource_version + 1}
            if status:
                values["status"] = {**(row.status or {}), **status}
            if dst is not None:
                values["state"] = dst.value
            if scheduler_id is not None:
                values["scheduler_id"] = scheduler_id
            if observed_generation is not None:
                values["observed_generation"] = observed_generation
            conn.execute(update(objects).where(objects.c.id == row.id).values(**values))
            if (dst is not None and dst != src) or reason:
                add_events(
                    conn,
                    [
                        {
                            "site_id": site_id,
                            "object_id": row.id,
                            "kind": "BatchJob",
                            "name": name,
                            "from_state": src.value,
                            "to_state": dst.value if dst else None,
                            "reason": reason or "StateChanged",
                            "message": message,
                        }
                    ],
                )
        return True

    def set_batchjob_condition(
        self,
        site_id: int,
        name: str,
        type_: str,
        status: Status,
        reason: str,
        message: str,
        unless: Status | None = None,
    ) -> bool:
        """Set one condition on a BatchJob, whatever its state, read and written in one transaction (the controller
        and the launchers of its allocation both write conditions: neither overwrites the other's); False if there
        is no such BatchJob, or its condition of ``type_`` has the status ``unless`` (a launcher that passed its
        preflight leaves a sibling's failure in place)."""
        with write_tx(self.engine) as conn:
            row = conn.execute(
                self._locked(objects.c.site_id == site_id, objects.c.kind == "BatchJob", objects.c.name == name)
            ).first()
            if row is None:
                return False
            old = dict(row.status or {})
            if unless is not None and condition_status(old.get("conditions", []), type_) == unless:
                return False
            old["conditions"] = set_condition(old.get("conditions", []), type_, status, reason, message)
            conn.execute(
                update(objects)
                .where(objects.c.id == row.id)
                .values(status=old, updated_at=now(), resource_version=objects.c.resource_version + 1)
            )
        return True

    def _locked(self, *where: ColumnElement[bool]) -> Select[tuple[int, Any]]:
        """A BatchJob's id and status, its row locked until the transaction ends (on PostgreSQL; SQLite's write
        transaction holds the whole database): the status is written back merged, so a writer in between (the
        controller's report, a launcher's condition) must wait rather than be overwritten."""
        q = select(objects.c.id, objects.c.status).where(*where)
        return q.with_for_update() if is_postgres(self.engine) else q

    def allocations_not_started(self, site_id: int) -> int:
        """How many of the site's newest allocations, in a row, never started a launcher.

        Read from the BatchJobs' ``LaunchersStarted`` conditions, newest BatchJob first: False counts, True ends the
        row, none is passed over (not decided yet, or never ran) but for a finished BatchJob, which predates the
        condition and ends the row too: a site older than the count is not read to its first BatchJob.
        """
        count, before = 0, None
        with read_tx(self.engine) as conn:
            while True:
                q = select(objects.c.id, objects.c.state, objects.c.status).where(
                    objects.c.site_id == site_id, objects.c.kind == "BatchJob"
                )
                if before is not None:
                    q = q.where(objects.c.id < before)
                rows = conn.execute(q.order_by(objects.c.id.desc()).limit(_PAGE)).all()
                for row in rows:
                    started = condition_status((row.status or {}).get("conditions", []), LAUNCHERS_STARTED)
                    if started == "True" or (started is None and row.state == BatchJobState.finished.value):
                        return count
                    if started == "False":
                        count += 1
                if len(rows) < _PAGE:
                    return count
                before = rows[-1].id

    def remove_batchjob(self, site_id: int, name: str) -> None:
        """Remove a deleted BatchJob once its allocation has ended."""
        with write_tx(self.engine) as conn:
            conn.execute(
                delete(objects).where(
                    objects.c.site_id == site_id,
                    objects.c.kind == "BatchJob",
                    objects.c.name == name,
                    objects.c.deletion_timestamp.is_not(None),
                )
            )

    # ------------------------------------------------------------------ launchers
    def register_launcher(self, site_id: int, launcher_id: str, **fields: Any) -> None:
        """Record a launcher that starts inside an allocation."""
        t = now()
        with write_tx(self.engine) as conn:
            conn.execute(
                insert(launchers).values(
                    id=launcher_id, site_id=site_id, started_at=t, heartbeat_at=t, status={}, **fields
                )
            )

    def heartbeat(self, launcher_id: str, status: Heartbeat, *, ended: bool = False) -> bool:
        """Refresh a launcher's heartbeat and status; False if it was declared lost (its lease expired): such a
        launcher must stop, it is never revived."""
        t = now()
        values: dict[str, Any] = {"heartbeat_at": t, "status": asdict(status)}
        if ended:
            values["ended_at"] = t
        with write_tx(self.engine) as conn:
            alive = conn.execute(
                update(launchers)
                .where(launchers.c.id == launcher_id, launchers.c.ended_at.is_(None))
                .values(**values)
                .returning(launchers.c.id)
            ).first()
        return alive is not None

    def launchers_of(self, site_id: int, batch_job: str) -> list[dict[str, Any]]:
        """The launchers of one BatchJob, oldest first."""
        with read_tx(self.engine) as conn:
            q = select(launchers).where(launchers.c.site_id == site_id, launchers.c.batch_job == batch_job)
            return [dict(r._mapping) for r in conn.execute(q.order_by(launchers.c.started_at))]
