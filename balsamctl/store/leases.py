"""Launcher leases: a launcher that stopped heartbeating is lost; what it held goes back once that is safe.

A lost launcher may only be frozen (SIGSTOP, a hung node) while its Jobs' processes run on, and a serial-mode
worker may still start the claimed Jobs queued on its lanes. So what it holds stays its own until its allocation is
confirmed ended: at once if its BatchJob has finished, failed to submit or is gone, else when the controller,
which cancels such an allocation, sees it end. Then its claims (Jobs it has not started) go back and its RUNNING
Jobs are handed on (RUN_TIMEOUT). A run ended that way was lost with its launcher: a crash, counted against the
site's ``launcher.crash_limit`` (schemas/retries.py), never against ``max_retries``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, bindparam, func, select, update

from balsamctl.schemas import JobState
from balsamctl.schemas.retries import crashed
from balsamctl.schemas.states import ACTIVE_BATCHJOB_STATES, RUNNABLE_STATES
from balsamctl.store.base import StoreBase, add_events, chunks, job_event
from balsamctl.store.engine import is_postgres, read_tx, write_tx
from balsamctl.store.jobs import hand_back
from balsamctl.store.rows import now
from balsamctl.store.tables import launchers, objects

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

_RUNNABLE = sorted(s.value for s in RUNNABLE_STATES)
_LIVE = sorted(s.value for s in ACTIVE_BATCHJOB_STATES)  # BatchJobs whose allocation may be alive
_Run = Row[Any, Any, Any, Any]  # a RUNNING Job: id, name, owner, status


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did: the launchers found lost, their RUNNING Jobs ended and their claims handed back (their
    allocation was over), and the Jobs they still hold (running or claimed: until it is)."""

    launchers: list[str]
    timed_out: int
    kept: int
    handed_back: int


class LeaseStore(StoreBase):
    """Finds launchers whose lease ran out and frees what they held."""

    def sweep_lost_launchers(self, site_id: int, lease_sec: float) -> SweepResult:
        """Launchers silent for ``lease_sec`` are lost: marked ended and, if their BatchJob has finished or is gone,
        their claims handed back and their RUNNING Jobs ended as crashes (RUN_TIMEOUT); else both stay theirs, to be
        handed on with the allocation's end (:meth:`end_runs_of_batchjob`): a frozen launcher's Jobs may run on, and
        so may the claimed ones its workers had queued behind them (serial mode's lanes).

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
                conn.execute(update(launchers).where(launchers.c.id.in_(part)).values(ended_at=t))
            for part in chunks(gone):
                handed_back += hand_back(conn, site_id, part)
                rows = self._running(conn, site_id, objects.c.owner.in_(part))
                timed_out += _end_lost_runs(
                    conn,
                    site_id,
                    rows,
                    t,
                    "LeaseExpired",
                    lambda r: f"launcher {r.owner} stopped heartbeating for {lease_sec:.0f} s; its allocation ended",
                )
            kept = _held(conn, site_id, [r.id for r in lost if r.batch_job in live])
        return SweepResult([r.id for r in lost], timed_out, sum(sum(n) for n in kept.values()), handed_back)

    def end_runs_of_batchjob(self, site_id: int, batch_job: str, message: str, *, crash: bool) -> int:
        """The allocation of ``batch_job`` has ended: its Jobs still RUNNING (their launcher never recorded their
        end) become RUN_TIMEOUT (``crash``: each counts as a run lost with its launcher), and what its launchers
        still had claimed goes back. How many runs were ended."""
        with write_tx(self.engine) as conn:
            rows = self._running(conn, site_id, objects.c.batch_job == batch_job)
            ended = _end_lost_runs(conn, site_id, rows, now(), "AllocationEnded", lambda _r: message, crash=crash)
            owners = select(launchers.c.id).where(launchers.c.site_id == site_id, launchers.c.batch_job == batch_job)
            hand_back(conn, site_id, list(conn.execute(owners).scalars()))
            return ended

    def jobs_held_by(self, site_id: int, owners: Collection[str]) -> dict[str, tuple[int, int]]:
        """The Jobs each of ``owners`` (launcher ids) holds: (RUNNING, claimed but not started); owners holding none
        are left out."""
        with read_tx(self.engine) as conn:
            return _held(conn, site_id, list(owners))

    def _running(self, conn: Connection, site_id: int, which: ColumnElement[bool]) -> Sequence[_Run]:
        """The RUNNING Jobs of the site that match ``which`` (locked until the transaction ends, so that a
        launcher's write cannot end one between this read and the write that follows)."""
        q = select(objects.c.id, objects.c.name, objects.c.owner, objects.c.status).where(
            objects.c.site_id == site_id, objects.c.kind == "Job", objects.c.state == JobState.RUNNING.value, which
        )
        if is_postgres(self.engine):
            q = q.with_for_update()
        return conn.execute(q).all()


def _held(conn: Connection, site_id: int, owners: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Per owner (launcher id) holding any: its RUNNING Jobs and its claimed ones not started."""
    held: dict[str, list[int]] = {}
    for part in chunks(list(owners)):
        q = (
            select(objects.c.owner, objects.c.state, func.count())
            .where(
                objects.c.site_id == site_id,
                objects.c.owner.in_(part),
                objects.c.state.in_([JobState.RUNNING.value, *_RUNNABLE]),
            )
            .group_by(objects.c.owner, objects.c.state)
        )
        for owner, state, count in conn.execute(q):
            held.setdefault(owner, [0, 0])[0 if state == JobState.RUNNING.value else 1] += count
    return {owner: (n[0], n[1]) for owner, n in held.items()}


def _live_batchjobs(conn: Connection, site_id: int, names: Collection[str]) -> set[str]:
    """Those of ``names`` whose BatchJob may still hold a live allocation: in any state but those where it cannot
    (``pending_submission`` may: a submit that timed out may have gone through and be running launchers)."""
    live: set[str] = set()
    for part in chunks(list(names)):
        q = select(objects.c.name).where(
            objects.c.site_id == site_id,
            objects.c.kind == "BatchJob",
            objects.c.name.in_(part),
            objects.c.state.in_(_LIVE),
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
