"""Launcher leases: the Jobs of a launcher that stopped heartbeating go back to the pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update

from schemas import JobState
from store.base import StoreBase, add_events, chunks, job_event
from store.engine import write_tx
from store.jobs import hand_back
from store.rows import now
from store.tables import launchers, objects


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    launchers: list[str]
    timed_out: int
    handed_back: int


class LeaseStore(StoreBase):
    """Finds launchers whose lease ran out and frees what they held."""

    def sweep_lost_launchers(self, site_id: int, lease_sec: float) -> SweepResult:
        """Launchers silent for ``lease_sec``: their RUNNING Jobs become RUN_TIMEOUT, their claims are handed back.

        The lost launcher is marked ended, so a late write of its own can no longer start or finish a Job
        (those writes are conditional on the Job still being RUNNING or claimed by it).
        """
        t = now()
        with write_tx(self.engine) as conn:
            lost = list(
                conn.execute(
                    select(launchers.c.id).where(
                        launchers.c.site_id == site_id,
                        launchers.c.ended_at.is_(None),
                        launchers.c.heartbeat_at < t - lease_sec,
                    )
                ).scalars()
            )
            timed_out = handed_back = 0
            for part in chunks(lost):
                running = conn.execute(
                    select(objects.c.id, objects.c.name, objects.c.owner, objects.c.status).where(
                        objects.c.site_id == site_id,
                        objects.c.owner.in_(part),
                        objects.c.state == JobState.RUNNING.value,
                    )
                ).all()
                if running:  # a lost run is charged to the Job (max_retries), unlike a walltime kill
                    conn.execute(
                        update(objects)
                        .where(objects.c.id == bindparam("b_id"), objects.c.state == JobState.RUNNING.value)
                        .values(
                            state=JobState.RUN_TIMEOUT.value,
                            owner=None,
                            end_time=t,
                            status=bindparam("b_status", type_=objects.c.status.type),
                            message="its launcher stopped heartbeating (lease expired)",
                            updated_at=t,
                            resource_version=objects.c.resource_version + 1,
                        ),
                        [{"b_id": r.id, "b_status": _charged(r.status)} for r in running],
                    )
                add_events(
                    conn,
                    (
                        job_event(
                            site_id,
                            r.id,
                            r.name,
                            "RUNNING",
                            "RUN_TIMEOUT",
                            "LeaseExpired",
                            f"launcher {r.owner} stopped heartbeating for {lease_sec:.0f} s",
                        )
                        for r in running
                    ),
                )
                timed_out += len(running)
                handed_back += hand_back(conn, site_id, part)
                conn.execute(update(launchers).where(launchers.c.id.in_(part)).values(ended_at=t))
        return SweepResult(lost, timed_out, handed_back)


def _charged(status: dict[str, Any] | None) -> dict[str, Any]:
    """A Job's status with one more failure counted."""
    return {**(status or {}), "failures": (status or {}).get("failures", 0) + 1}
