"""Launcher leases: a launcher that stopped heartbeating is lost; what it held goes back once that is safe.

A lost launcher may only be frozen (SIGSTOP, a hung node) while its Jobs' processes run on. So its claims (Jobs it
has not started) go back at once, but its RUNNING Jobs are handed on (RUN_TIMEOUT) only once its allocation is
confirmed ended: at once if its BatchJob has finished (or is gone), else when the controller, which cancels such
an allocation, sees it end. A run ended that way was lost with its launcher: a crash, counted against the site's
``launcher.crash_limit`` (schemas/retries.py), never against ``max_retries``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, bindparam, func, select, update

from schemas import JobState
from schemas.retries import crashed
from schemas.states import ACTIVE_BATCHJOB_STATES
from store.base import StoreBase, add_events, chunks, job_event
from store.engine import is_postgres, read_tx, write_tx
from store.jobs import hand_back
from store.rows import now
from store.tables import launchers, objects

_TIME_OUT = (
    update(objects)
    .where(objects.c.id == bindparam("b_id"), objects.c.state == JobState.RUNNING.value)
    .values(
        state=JobState.RUN_TIMEOUT.value,
        owner=None,
        end_time=bindparam("b_t"),
        status=bindparam("b_status", type_=objects.c.status.type),
        message=bindparam("b_msg"),
        updated_at=bindparam("b_t"),
        resource_version=objects.c.resource_version + 1,
    )
)

_Run = Row[Any, Any, Any, Any]  # a RUNNING Job: id, name, owner, status


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did: the launchers found lost, their RUNNING Jobs ended (their allocation was over) and
    kept RUNNING (until it is), and their claims handed back."""

    launchers: list[str]
    timed_out: int
    kept_running: int
    handed_back: int


class LeaseStore(StoreBase):
    """Finds launchers whose lease ran out and frees what they held."""

    def sweep_lost_launchers(self, site_id: int, lease_sec: float) -> SweepResult:
        """Launchers silent for ``lease_sec`` are lost: marked ended, their claims handed back, and their RUNNING
        Jobs ended as crashes (RUN_TIMEOUT) if their BatchJob has finished or is gone; else those stay RUNNING, to
        be ended with the allocation (:meth:`end_runs_of_batchjob`).

        A lost launcher can no longer claim or start a Job; it may still record the outcome of a run it owns.
        """
        t = now()
        with write_tx(self.engine) as conn:
            lost = conn.execute(
                select(launchers.c.id, launchers.c.batch_job).where(
                    launchers.c.site_id == site_id,
                    launchers.c.ended_at.is_(None),
                    launchers.c.heartbeat_at < t - lease_sec,
                )
            ).all()
            live = _live_batchjobs(conn, site_id, {r.batch_job for r in lost})
            gone = [r.id for r in lost if r.batch_job not in live]
            timed_out = handed_back = 0
            for part in chunks([r.id for r in lost]):
                handed_back += hand_back(conn, site_id, part)
                conn.execute(update(launchers).where(launchers.c.id.in_(part)).values(ended_at=t))
            for part in chunks(gone):
                rows = self._running(conn, site_id, objects.c.owner.in_(part))
                timed_out += _end_lost_runs(
                    conn,
                    site_id,
                    rows,
                    t,
                    "LeaseExpired",
                    lambda r: f"launcher {r.owner} stopped heartbeating for {lease_sec:.0f} s; its allocation ended",
                )
            kept = self._count_running(conn, site_id, [r.id for r in lost if r.batch_job in live])
        return SweepResult([r.id for r in lost], timed_out, sum(kept.values()), handed_back)

    def end_runs_of_batchjob(self, site_id: int, batch_job: str, message: str, *, crash: bool) -> int:
        """The allocation of ``batch_job`` has ended: its Jobs still RUNNING (their launcher never recorded their
        end) become RUN_TIMEOUT; ``crash``: each counts as a run lost with its launcher. How many."""
        with write_tx(self.engine) as conn:
            rows = self._running(conn, site_id, objects.c.batch_job == batch_job)
            return _end_lost_runs(conn, site_id, rows, now(), "AllocationEnded", lambda _r: message, crash=crash)

    def running_jobs_of(self, site_id: int, owners: Collection[str]) -> dict[str, int]:
        """How many RUNNING Jobs each of ``owners`` (launcher ids) holds; owners holding none are left out."""
        with read_tx(self.engine) as conn:
            return self._count_running(conn, site_id, list(owners))

    def _running(self, conn: Connection, site_id: int, which: ColumnElement[bool]) -> Sequence[_Run]:
        """The RUNNING Jobs of the site that match ``which`` (locked until the transaction ends, so that a
        launcher's write cannot end one between this read and the write that follows)."""
        q = select(objects.c.id, objects.c.name, objects.c.owner, objects.c.status).where(
            objects.c.site_id == site_id, objects.c.kind == "Job", objects.c.state == JobState.RUNNING.value, which
        )
        if is_postgres(self.engine):
            q = q.with_for_update()
        return conn.execute(q).all()

    @staticmethod
    def _count_running(conn: Connection, site_id: int, owners: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for part in chunks(list(owners)):
            q = (
                select(objects.c.owner, func.count())
                .where(
                    objects.c.site_id == site_id,
                    objects.c.owner.in_(part),
                    objects.c.state == JobState.RUNNING.value,
                )
                .group_by(objects.c.owner)
            )
            counts.update((row[0], row[1]) for row in conn.execute(q))
        return counts


def _live_batchjobs(conn: Connection, site_id: int, names: Collection[str]) -> set[str]:
    """Those of ``names`` whose BatchJob may still hold a live allocation."""
    live: set[str] = set()
    for part in chunks(list(names)):
        q = select(objects.c.name).where(
            objects.c.site_id == site_id,
            objects.c.kind == "BatchJob",
            objects.c.name.in_(part),
            objects.c.state.in_([s.value for s in ACTIVE_BATCHJOB_STATES]),
        )
        live.update(conn.execute(q).scalars())
    return live


def _end_lost_runs(
    conn: Connection,
    site_id: int,
    rows: Sequence[_Run],
    t: float,
    reason: str,
    message: Callable[[_Run], str],
    *,
    crash: bool = True,
) -> int:
    """RUNNING -> RUN_TIMEOUT for ``rows`` (each counted as a crash with ``crash``), with their events; how many."""
    if not rows:
        return 0
    conn.execute(
        _TIME_OUT,
        [
            {"b_id": r.id, "b_t": t, "b_msg": message(r), "b_status": crashed(r.status) if crash else r.status}
            for r in rows
        ],
    )
    add_events(
        conn, (job_event(site_id, r.id, r.name, "RUNNING", "RUN_TIMEOUT", reason, message(r), time=t) for r in rows)
    )
    return len(rows)
