"""Job lifecycle in the store: bulk advances, single transitions, acquisition by launchers, results."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypedDict

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    String,
    and_,
    bindparam,
    cast,
    exists,
    literal_column,
    or_,
    select,
    update,
)

from balsamctl.schemas import JobState, check_job_transition
from balsamctl.schemas.objects import Condition, JobSpec
from balsamctl.schemas.retries import crashed
from balsamctl.schemas.states import FINAL_JOB_STATES, FINISHING_STEPS, RUNNABLE_STATES, check_run_outcome
from balsamctl.store.base import EventRow, StoreBase, add_events, chunks, executemany, job_event
from balsamctl.store.engine import is_postgres, read_tx, write_tx
from balsamctl.store.notify import notify_runnable
from balsamctl.store.rows import now
from balsamctl.store.tables import CLAIMABLE, labels, launchers, objects
from balsamctl.store.tables import parents as parent_links

_BY_ID = objects.c.id == bindparam("b_id")
# a launcher's writes, one row per Job (run with store.base.executemany)
_CLAIM = (
    update(objects)
    .where(_BY_ID, objects.c.owner.is_(None))
    .values(owner=bindparam("b_owner"), batch_job=bindparam("b_bj"))
)
_START = (
    update(objects)
    .where(_BY_ID)
    .values(
        state=JobState.RUNNING.value,
        start_time=bindparam("b_start"),
        end_time=None,
        return_code=None,
        attempts=objects.c.attempts + 1,
        updated_at=bindparam("b_t"),
        resource_version=objects.c.resource_version + 1,
    )
)
_END_VALUES: dict[str, Any] = {
    "state": bindparam("b_state"),
    "return_code": bindparam("b_rc"),
    "output_tail": bindparam("b_tail"),
    "message": bindparam("b_msg"),
    "end_time": bindparam("b_end"),
    "owner": None,
    "updated_at": bindparam("b_t"),
    "resource_version": objects.c.resource_version + 1,
}
_END = update(objects).where(_BY_ID).values(_END_VALUES)
_RAN = (  # a run whose start and end are written together
    update(objects)
    .where(_BY_ID)
    .values({**_END_VALUES, "start_time": bindparam("b_start"), "attempts": objects.c.attempts + 1})
)


@dataclass(frozen=True)
class JobRef:
    """The little a reconciler or launcher needs of a Job."""

    id: int
    name: str
    app: str
    state: str
    spec: JobSpec
    attempts: int
    deletion_requested: bool = False


# The records a launcher writes per Job (thousands a second): slotted, not frozen (a frozen dataclass's __init__ sets
# each field through object.__setattr__: six times the cost of building a RunResult).


@dataclass(slots=True)
class RunStart:
    """A claimed Job that a launcher started (:meth:`JobStore.record`)."""

    ref: JobRef
    time: float | None = None
    """When it started (epoch seconds); None: when written."""
    data: str | None = None
    """The JSON text of its ``Started`` event's data (the placement)."""
    where: str = ""
    """Where it runs, for people (the ``Started`` event's message)."""


@dataclass(slots=True)
class RunResult:
    """How one run ended, as a launcher records it (:meth:`JobStore.record`, :meth:`JobStore.record_results`)."""

    job_id: int
    name: str
    state: JobState
    """RUN_DONE, RUN_ERROR, RUN_TIMEOUT, or RESTART_READY for a start the node or site failed."""
    return_code: int | None = None
    output_tail: str | None = None
    message: str | None = None
    end_time: float | None = None
    """When it ended (epoch seconds); None: when written."""
    finish: bool = False
    """A RUN_DONE goes on to JOB_FINISHED through the FINISHING_STEPS in the same write (an App without a
    postprocess hook)."""
    crashed: bool = False
    """Lost with its worker: one more crash (``status.crashes``, against ``launcher.crash_limit``)."""
    reason: str = "Ran"
    """The reason of its event."""
    condition: Condition | None = None
    """A condition it sets on the Job (a start that failed, and why)."""


@dataclass(frozen=True)
class Transition:
    """One requested Job state change, applied only if the Job is still in ``src``."""

    job_id: int
    src: JobState
    dst: JobState
    reason: str
    message: str = ""
    data: Mapping[str, Any] | None = None
    columns: Mapping[str, Any] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    """Fields merged into the Job's stored status (e.g. ``failures``)."""


class JobStore(StoreBase):
    """Job state changes: every one checked against the state machine and recorded as an event."""

    def advance(
        self,
        site_id: int,
        src: JobState,
        dst: JobState,
        *,
        reason: str,
        apps_without_hook: Sequence[str] | None = None,
        parents: str | None = None,
        batch_job: str | None = None,
        ids: Sequence[int] | None = None,
        message: str = "",
        limit: int = 50_000,
        drop_condition: str | None = None,
    ) -> int:
        """Move up to ``limit`` Jobs from ``src`` to ``dst`` in one SQL statement; returns how many moved.

        ``apps_without_hook`` restricts to Jobs of those Apps; ``parents`` is ``"none"`` (no parents),
        ``"some"`` (has parents) or ``"all_finished"`` (every parent is JOB_FINISHED); ``batch_job`` restricts
        to Jobs run by that BatchJob; ``ids`` to those Jobs (at most a few thousand). ``drop_condition``: the
        condition of that type goes from the Jobs moved, in the same transaction (one that said why they could
        not move).
        """
        check_job_transition("*", src, dst)
        if ids is not None and not ids:
            return 0
        p = objects.alias("parent")
        conds = [objects.c.site_id == site_id, objects.c.kind == "Job", objects.c.state == src.value]
        if ids is not None:
            conds.append(objects.c.id.in_(list(ids)))
        if apps_without_hook is not None:
            conds.append(objects.c.app.in_(list(apps_without_hook)))
        if batch_job is not None:
            conds.append(objects.c.batch_job == batch_job)
        if parents == "none":
            conds.append(~exists().where(parent_links.c.child_id == objects.c.id))
        elif parents == "some":
            conds.append(exists().where(parent_links.c.child_id == objects.c.id))
        elif parents == "all_finished":
            conds.append(
                ~exists()
                .where(parent_links.c.child_id == objects.c.id, p.c.id == parent_links.c.parent_id)
                .where(p.c.state != JobState.JOB_FINISHED.value)
            )
        with write_tx(self.engine) as conn:
            q = select(objects.c.id).where(and_(*conds)).order_by(objects.c.id).limit(limit)
            found = list(conn.execute(q).scalars())
            t = now()
            values: dict[str, Any] = {"state": dst.value, "updated_at": t}
            if src == JobState.RUNNING:
                values.update(owner=None, end_time=t, message=message)
            moved = 0
            for part in chunks(found, 5000):
                rows = conn.execute(
                    update(objects)
                    .where(objects.c.id.in_(part), objects.c.state == src.value)
                    .values(resource_version=objects.c.resource_version + 1, **values)
                    .returning(objects.c.id, objects.c.name)
                ).all()
                moved += len(rows)
                add_events(
                    conn,
                    (job_event(site_id, r.id, r.name, src.value, dst.value, reason, message, time=t) for r in rows),
                )
                if drop_condition is not None:
                    _drop_conditions(conn, [r.id for r in rows], (drop_condition,))
            if moved and dst in RUNNABLE_STATES:
                notify_runnable(conn, site_id)
            return moved

    def jobs_in_state(
        self, site_id: int, state: JobState, *, apps: Sequence[str] | None = None, limit: int = 100, after: int = 0
    ) -> list[JobRef]:
        """Up to ``limit`` Jobs in ``state`` (optionally of some Apps) with ids above ``after``, oldest first."""
        q = select(*_REF_COLUMNS).where(
            objects.c.site_id == site_id,
            objects.c.kind == "Job",
            objects.c.state == state.value,
            objects.c.id > after,
        )
        if apps is not None:
            q = q.where(objects.c.app.in_(list(apps)))
        with read_tx(self.engine) as conn:
            return [_ref(r) for r in conn.execute(q.order_by(objects.c.id).limit(limit))]

    def failed_parent_children(self, site_id: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        """``(child id, child name, failed parent name)`` for waiting Jobs whose parent is FAILED."""
        p = objects.alias("parent")
        q = (
            select(objects.c.id, objects.c.name, p.c.name)
            .join(parent_links, parent_links.c.child_id == objects.c.id)
            .join(p, p.c.id == parent_links.c.parent_id)
            .where(
                objects.c.site_id == site_id,
                objects.c.kind == "Job",
                objects.c.state == JobState.AWAITING_PARENTS.value,
                p.c.state == JobState.FAILED.value,
            )
            .limit(limit)
        )
        with read_tx(self.engine) as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(q)]

    def transition(self, site_id: int, items: Sequence[Transition]) -> int:
        """Apply single-Job transitions in one transaction; each applies only if the Job is still in its ``src``."""
        done = 0
        runnable = False
        t = now()
        with write_tx(self.engine) as conn:
            statuses = self._statuses(conn, [tr.job_id for tr in items if tr.status])
            for tr in items:
                check_job_transition(str(tr.job_id), tr.src, tr.dst)
                values: dict[str, Any] = {
                    "state": tr.dst.value,
                    "updated_at": t,
                    "resource_version": objects.c.resource_version + 1,
                    **tr.columns,
                }
                if tr.message:
                    values.setdefault("message", _text(tr.message))
                if tr.status:
                    values["status"] = {**(statuses.get(tr.job_id) or {}), **tr.status}
                res = conn.execute(
                    update(objects)
                    .where(objects.c.id == tr.job_id, objects.c.site_id == site_id, objects.c.state == tr.src.value)
                    .values(**values)
                    .returning(objects.c.name)
                )
                name = res.scalar()
                if name is None:
                    continue
                done += 1
                runnable = runnable or tr.dst in RUNNABLE_STATES
                if tr.status:  # a later Transition of the same Job merges into this status
                    statuses[tr.job_id] = values["status"]
                data = dict(tr.data) if tr.data else None
                add_events(
                    conn,
                    [
                        job_event(
                            site_id,
                            tr.job_id,
                            name,
                            tr.src.value,
                            tr.dst.value,
                            tr.reason,
                            _text(tr.message),
                            data=data,
                        )
                    ],
                )
            if runnable:
                notify_runnable(conn, site_id)
        return done

    def _statuses(self, conn: Connection, job_ids: Sequence[int]) -> dict[int, Any]:
        """The stored status of each of ``job_ids`` (one query per chunk, not one per Job)."""
        found: dict[int, Any] = {}
        for part in chunks(list(job_ids)):
            rows = conn.execute(select(objects.c.id, objects.c.status).where(objects.c.id.in_(part)))
            found.update((row.id, row.status) for row in rows)  # not the Result itself: dict() takes it for a mapping
        return found

    # ------------------------------------------------------------------ launchers
    def claim(
        self,
        site_id: int,
        *,
        owner: str,
        batch_job: str,
        filter_tags: Mapping[str, str],
        limit: int,
        accept: Callable[[JobRef], bool] = lambda _ref: True,
        order: str = "small_first",
        max_num_nodes: int | None = None,
        max_wall_time_min: float | None = None,
        exclude: Collection[int] = (),
    ) -> list[JobRef]:
        """Claim up to ``limit`` runnable Jobs for a launcher, atomically: no two launchers get the same Job.

        Candidates match ``filter_tags`` and the limits and pass ``accept`` (placement, no I/O), which sees them one
        by one until ``limit`` are accepted: every Job it accepts is claimed. They come in the site's ``order``:
        ``small_first`` (fewest nodes, then highest node packing, then longest wall time) or ``long_large_first``
        (most nodes, then longest wall time). A claimed Job keeps its state until :meth:`record` starts it; a
        launcher hands back what it did not start with :meth:`unclaim`. ``exclude``: Jobs the launcher already knows
        it can never run.
        """
        conds = _claimable(site_id, filter_tags, exclude)
        if max_num_nodes is not None:
            conds.append(objects.c.num_nodes <= max_num_nodes)
        if max_wall_time_min is not None:
            conds.append(objects.c.wall_time_min <= max_wall_time_min)
        # a launcher declared lost claims nothing more (checked in the same statement: no extra round trip)
        conds.append(~exists().where(launchers.c.id == owner, launchers.c.ended_at.is_not(None)))
        q = select(*_REF_COLUMNS).where(and_(*conds)).order_by(*_ORDERS[order], objects.c.id).limit(2 * limit)
        with write_tx(self.engine) as conn:
            if is_postgres(self.engine):
                q = q.with_for_update(skip_locked=True, of=objects)
            with conn.execute(q) as rows:  # read (and validate) only as far as the first ``limit`` accepted
                chosen = list(islice(filter(accept, map(_ref, rows)), limit))
            if chosen:
                executemany(conn, _CLAIM, [{"b_id": ref.id, "b_owner": owner, "b_bj": batch_job} for ref in chosen])
        return chosen

    def claimable_wall_times(
        self,
        site_id: int,
        filter_tags: Mapping[str, str],
        *,
        longer_than: float,
        exclude: Collection[int] = (),
        limit: int = 1000,
    ) -> list[tuple[int, int]]:
        """``(id, wall_time_min)`` of the Jobs a launcher with these ``filter_tags`` could claim but for their wall
        time, longer than ``longer_than`` minutes (at most ``limit``, longest first)."""
        conds = [*_claimable(site_id, filter_tags, exclude), objects.c.wall_time_min > longer_than]
        q = select(objects.c.id, objects.c.wall_time_min).where(and_(*conds))
        with read_tx(self.engine) as conn:
            rows = conn.execute(q.order_by(objects.c.wall_time_min.desc(), objects.c.id).limit(limit)).all()
        return [(row.id, row.wall_time_min) for row in rows]

    def unclaim(self, site_id: int, owner: str, job_ids: Sequence[int] | None = None) -> int:
        """Hand back Jobs ``owner`` claimed but did not start (all of them, or ``job_ids``)."""
        with write_tx(self.engine) as conn:
            return hand_back(conn, site_id, [owner], job_ids)

    def record(
        self,
        site_id: int,
        *,
        owner: str,
        started: Sequence[RunStart] = (),
        results: Sequence[RunResult] = (),
    ) -> set[int]:
        """One launcher's transitions in one transaction, durable on return; the ids of the Jobs now started.

        ``started``: claimed Jobs that moved to RUNNING; a Job whose deletion was requested meanwhile is not
        recorded (the launcher stops it). ``results``: outcomes of RUNNING Jobs (see :meth:`record_results`),
        written after the starts. A Job that starts and ends in the same call (short Jobs, most of them) is written
        once, start and end in one row.
        """
        t = now()
        starting = {s.ref.id for s in started}
        with write_tx(self.engine) as conn:
            confirmed, again = self._write_started(
                conn, site_id, owner, started, t, [r for r in results if r.job_id in starting]
            )
            ends = [r for r in results if r.job_id not in starting or r.job_id in again]
            self._write_results(conn, site_id, ends, t, owner)
            _notify_restarts(conn, site_id, results)
        return confirmed

    def _write_started(
        self,
        conn: Connection,
        site_id: int,
        owner: str,
        started: Sequence[RunStart],
        t: float,
        ended: Sequence[RunResult] = (),
    ) -> tuple[set[int], set[int]]:
        """The starts; of those that also ended (``ended``: their results), the whole run in one row. Returns the
        Jobs started, and of those the ones whose start this launcher had recorded already (a write retried after
        its commit went through unacknowledged: not written again; their results are written as any others)."""
        for s in started:
            check_job_transition(s.ref.name, s.ref.state, JobState.RUNNING)
        for r in ended:
            check_run_outcome(r.name, r.state)
        ours = self._rows_where(conn, [s.ref.id for s in started], objects.c.owner == owner)
        live = {r.id for r in ours if r.state in _RUNNABLE and r.deletion_timestamp is None}
        again = {r.id for r in ours if r.state == JobState.RUNNING.value}
        go = [s for s in started if s.ref.id in live]
        outcome = {r.job_id: r for r in ended}
        if go:
            executemany(conn, _START, [_start_row(s, t) for s in go if s.ref.id not in outcome])
            executemany(
                conn, _RAN, [{**_start_row(s, t), **_end_row(outcome[s.ref.id], t)} for s in go if s.ref.id in outcome]
            )
            add_events(conn, (event for s in go for event in _start_events(site_id, owner, s, outcome, t)))
            # why it could not run, or did not start last time: it runs now
            _drop_conditions(conn, [s.ref.id for s in go], _UNTIL_STARTED)
            _result_status(conn, [outcome[s.ref.id] for s in go if s.ref.id in outcome])
        return {s.ref.id for s in go} | again, again

    def _ids_where(self, conn: Connection, ids: Sequence[int], *conds: Any) -> set[int]:
        return {row.id for row in self._rows_where(conn, ids, *conds)}

    def _rows_where(self, conn: Connection, ids: Sequence[int], *conds: Any) -> list[Row[Any, Any, Any]]:
        """``(id, state, deletion_timestamp)`` of the Jobs of ``ids`` that meet ``conds``, locked for the rest of the
        transaction on PostgreSQL (SQLite's write transaction holds the whole database)."""
        found: list[Row[Any, Any, Any]] = []
        for part in chunks(list(ids)):
            q = select(objects.c.id, objects.c.state, objects.c.deletion_timestamp).where(
                objects.c.id.in_(part), *conds
            )
            if is_postgres(self.engine):
                q = q.with_for_update()
            found.extend(conn.execute(q).all())
        return found

    def record_results(self, site_id: int, results: Sequence[RunResult]) -> int:
        """Write many run outcomes in one transaction, durable on return; returns how many applied (each applies
        only while its Job is still RUNNING)."""
        with write_tx(self.engine) as conn:
            written = self._write_results(conn, site_id, results, now())
            _notify_restarts(conn, site_id, results)
            return written

    def _write_results(
        self, conn: Connection, site_id: int, results: Sequence[RunResult], t: float, owner: str | None = None
    ) -> int:
        for r in results:
            check_run_outcome(r.name, r.state)
        if not results:
            return 0
        conds = [_of_site(site_id), objects.c.state == JobState.RUNNING.value]
        if owner is not None:  # only the run this launcher started: not a later run elsewhere
            conds.append(objects.c.owner == owner)
        live = self._ids_where(conn, [r.job_id for r in results], *conds)
        once = {r.job_id: r for r in results}  # one outcome per run
        kept = [r for job_id, r in once.items() if job_id in live]
        if not kept:
            return 0
        executemany(
            conn,
            _END,
            [{"b_id": r.job_id, **_end_row(r, t)} for r in kept],
        )
        add_events(conn, (event for r in kept for event in _result_events(site_id, r, t)))
        _result_status(conn, kept)
        return len(kept)

    def rerun(self, site_id: int, job_ids: Sequence[int]) -> int:
        """Reset finished or failed Jobs to READY for another go (their charged failures and crashes too); how many
        moved.

        Earlier attempts' output and events are kept; Jobs in other states are left alone.
        """
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(objects.c.id, objects.c.state).where(
                    objects.c.site_id == site_id,
                    objects.c.id.in_(list(job_ids)),
                    objects.c.state.in_([s.value for s in FINAL_JOB_STATES]),
                )
            ).all()
        moves = [
            Transition(
                r.id,
                JobState(r.state),
                JobState.READY,
                "Rerun",
                "rerun requested",
                status={"failures": 0, "crashes": 0},
            )
            for r in rows
        ]
        moved = self.transition(site_id, moves)
        if moves and not moved and is_postgres(self.engine):  # visible, yet none moved: a read grant only?
            from balsamctl.store.access import require_write

            with read_tx(self.engine) as conn:
                require_write(conn, site_id, "rerun Jobs")
        return moved

    def set_job_condition(self, site_id: int, job_ids: Sequence[int], condition: Mapping[str, Any]) -> int:
        """Set one condition (replacing the one of its type) on each of ``job_ids``; returns how many."""
        with write_tx(self.engine) as conn:
            rows = conn.execute(
                select(objects.c.id, objects.c.status).where(objects.c.site_id == site_id, objects.c.id.in_(job_ids))
            ).all()
            _write_conditions(conn, rows, condition["type"], condition)
            return len(rows)

    def deletion_requested(self, owner: str) -> list[int]:
        """Ids of Jobs run by ``owner`` that a user asked to delete."""
        with read_tx(self.engine) as conn:
            q = select(objects.c.id).where(objects.c.owner == owner, objects.c.deletion_timestamp.is_not(None))
            return list(conn.execute(q).scalars())


def _drop_conditions(conn: Connection, job_ids: Sequence[int], types: Sequence[str], *conds: Any) -> None:
    """Take the conditions of ``types`` off these Jobs (those that also meet ``conds``) where they have any (found
    by their status's text, in one query: most have none and are not read)."""
    text = cast(objects.c.status, String)
    marked = or_(*(text.contains(f'"{type_}"') for type_ in types))
    for part in chunks(list(job_ids)):
        q = select(objects.c.id, objects.c.status).where(objects.c.id.in_(part), marked, *conds)
        for row in conn.execute(q).all():
            status = dict(row.status or {})
            status["conditions"] = [c for c in status.get("conditions", []) if c.get("type") not in types]
            conn.execute(
                update(objects)
                .where(objects.c.id == row.id)
                .values(status=status, resource_version=objects.c.resource_version + 1)
            )


def _result_status(conn: Connection, results: Sequence[RunResult]) -> None:
    """Write what run outcomes add to their Jobs' status: a ``condition`` (a start that failed, and why) and, for a
    run lost with its worker (``crashed``), one more crash (``status.crashes``, against ``launcher.crash_limit``)."""
    marked = {r.job_id: r for r in results if r.condition is not None or r.crashed}
    for part in chunks(list(marked)):
        for row in conn.execute(select(objects.c.id, objects.c.status).where(objects.c.id.in_(part))).all():
            r = marked[row.id]
            status = crashed(row.status) if r.crashed else dict(row.status or {})
            if r.condition is not None:
                kept = [c for c in status.get("conditions", []) if c.get("type") != r.condition.type]
                status["conditions"] = [*kept, r.condition.model_dump(mode="json")]
            conn.execute(
                update(objects)
                .where(objects.c.id == row.id)
                .values(status=status, resource_version=objects.c.resource_version + 1)
            )


def _write_conditions(
    conn: Connection, rows: Sequence[Row[Any, Any]], type_: str, condition: Mapping[str, Any] | None = None
) -> None:
    """Replace the condition of ``type_`` in each row's status by ``condition`` (None: remove it)."""
    for row in rows:
        status = dict(row.status or {})
        kept = [c for c in status.get("conditions", []) if c.get("type") != type_]
        status["conditions"] = kept if condition is None else [*kept, dict(condition)]
        conn.execute(
            update(objects)
            .where(objects.c.id == row.id)
            .values(status=status, resource_version=objects.c.resource_version + 1)
        )


def _claimable(site_id: int, filter_tags: Mapping[str, str], exclude: Collection[int]) -> list[Any]:
    """The conditions a Job must meet for a launcher with ``filter_tags`` to claim it (``exclude``: Jobs it knows it
    can never run)."""
    conds = [
        objects.c.site_id == site_id,
        objects.c.kind == "Job",
        CLAIMABLE,
        objects.c.deletion_timestamp.is_(None),
    ]
    for key, value in filter_tags.items():
        conds.append(exists().where(labels.c.object_id == objects.c.id, labels.c.key == key, labels.c.value == value))
    if exclude:
        conds.append(objects.c.id.not_in(list(exclude)))
    return conds


def hand_back(conn: Connection, site_id: int, owners: Sequence[str], job_ids: Sequence[int] | None = None) -> int:
    """Release the claims ``owners`` hold on Jobs they did not start (all of them, or ``job_ids``); how many."""
    conds = [_of_site(site_id), objects.c.owner.in_(list(owners)), objects.c.state.in_(_RUNNABLE)]
    if job_ids is not None:
        conds.append(objects.c.id.in_(list(job_ids)))
    released = conn.execute(update(objects).where(*conds).values(owner=None)).rowcount
    if released:
        notify_runnable(conn, site_id)
    return released


def _notify_restarts(conn: Connection, site_id: int, results: Sequence[RunResult]) -> None:
    """Wake the site's launchers if some of these run outcomes put their Job back to RESTART_READY (a start the node
    or site failed): runnable again, and unclaimed."""
    if any(r.state == JobState.RESTART_READY for r in results):
        notify_runnable(conn, site_id)


_RUNNABLE = sorted(s.value for s in RUNNABLE_STATES)
_UNTIL_STARTED = ("Schedulable", "StartFailed")  # Job conditions that hold until its next run starts
_FINISHING = [(src.value, dst.value, why) for src, dst, why in FINISHING_STEPS]
_ORDERS = {
    "small_first": (objects.c.num_nodes, objects.c.node_packing_count.desc(), objects.c.wall_time_min.desc()),
    "long_large_first": (objects.c.num_nodes.desc(), objects.c.wall_time_min.desc()),
}
_REF_COLUMNS = (
    objects.c.id,
    objects.c.name,
    objects.c.app,
    objects.c.state,
    objects.c.spec,
    objects.c.attempts,
    objects.c.deletion_timestamp,
)


def _of_site(site_id: int) -> ColumnElement[bool]:
    """``site_id = ?`` written so that no index serves it (``site_id + 0``). A launcher's queries find their Jobs by
    id or owner; lacking statistics, SQLite would rather walk ix_objects_source for the site: all its objects."""
    return objects.c.site_id + literal_column("0") == site_id


def _text(value: str | None) -> str | None:
    """``value`` with NUL characters replaced: a program's output may hold them, PostgreSQL text cannot."""
    return None if value is None else value.replace("\x00", "\ufffd")


class _StartBinds(TypedDict):
    b_id: int
    b_start: float
    b_t: float


class _EndBinds(TypedDict):
    b_state: str
    b_rc: int | None
    b_tail: str | None
    b_msg: str | None
    b_end: float
    b_t: float


def _start_row(s: RunStart, t: float) -> _StartBinds:
    """The bind values of one start (``_START``, ``_RAN``)."""
    return {"b_id": s.ref.id, "b_start": t if s.time is None else s.time, "b_t": t}


def _end_row(r: RunResult, t: float) -> _EndBinds:
    """The bind values of one run outcome (``_END``, ``_RAN``)."""
    return {
        "b_state": _final_state(r),
        "b_rc": r.return_code,
        "b_tail": _text(r.output_tail),
        "b_msg": _text(r.message),
        "b_end": t if r.end_time is None else r.end_time,
        "b_t": t,
    }


def _final_state(result: RunResult) -> str:
    """Where a run outcome leaves its Job: its state, or JOB_FINISHED for a RUN_DONE marked ``finish``."""
    return JobState.JOB_FINISHED.value if _finishes(result) else result.state.value


def _finishes(result: RunResult) -> bool:
    return result.finish and result.state == JobState.RUN_DONE


def _start_events(
    site_id: int, owner: str, start: RunStart, outcome: Mapping[int, RunResult], t: float
) -> list[EventRow]:
    """The events of one start: ``Started`` (where, with the placement as data), then its outcome's when the run
    also ended (:func:`_result_events`)."""
    ref = start.ref
    started = job_event(
        site_id,
        ref.id,
        ref.name,
        ref.state,
        "RUNNING",
        "Started",
        f"launched by {owner}" + (f" on {start.where}" if start.where else ""),
        time=t if start.time is None else start.time,
        data=start.data,
    )
    ended = outcome.get(ref.id)
    return [started] if ended is None else [started, *_result_events(site_id, ended, t)]


def _result_events(site_id: int, r: RunResult, t: float) -> list[EventRow]:
    """The events of one run outcome: ``Ran``, then each finishing step when the launcher finishes the Job."""
    at = t if r.end_time is None else r.end_time
    ran = job_event(
        site_id,
        r.job_id,
        r.name,
        "RUNNING",
        r.state.value,
        r.reason,
        _text(r.message) or f"return code {r.return_code}",
        time=at,
    )
    if not _finishes(r):
        return [ran]
    steps = [job_event(site_id, r.job_id, r.name, src, dst, why, "", time=at) for src, dst, why in _FINISHING]
    return [ran, *steps]


def _ref(r: Any) -> JobRef:
    return JobRef(
        id=r.id,
        name=r.name,
        app=r.app,
        state=r.state,
        spec=JobSpec.model_construct(**r.spec),  # validated when applied: read back as stored
        attempts=r.attempts,
        deletion_requested=r.deletion_timestamp is not None,
    )
