"""Job lifecycle in the store: bulk advances, single transitions, acquisition by launchers, results."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, select, update

from schemas import JobState, check_job_transition
from schemas.objects import JobSpec
from schemas.states import RUNNABLE_STATES
from store.base import StoreBase, add_events, chunks
from store.engine import is_postgres, read_tx, write_tx
from store.rows import now
from store.tables import labels, objects
from store.tables import parents as parent_links

_BY_ID = objects.c.id == bindparam("b_id")


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
        message: str = "",
        limit: int = 50_000,
    ) -> int:
        """Move up to ``limit`` Jobs from ``src`` to ``dst`` in one SQL statement; returns how many moved.

        ``apps_without_hook`` restricts to Jobs of those Apps; ``parents`` is ``"none"`` (no parents),
        ``"some"`` (has parents) or ``"all_finished"`` (every parent is JOB_FINISHED); ``batch_job`` restricts
        to Jobs run by that BatchJob.
        """
        check_job_transition("*", src, dst)
        p = objects.alias("parent")
        conds = [objects.c.site_id == site_id, objects.c.kind == "Job", objects.c.state == src.value]
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
            ids = list(conn.execute(q).scalars())
            t = now()
            values: dict[str, Any] = {"state": dst.value, "updated_at": t}
            if src == JobState.RUNNING:
                values.update(owner=None, end_time=t, message=message)
            moved = 0
            for part in chunks(ids, 5000):
                rows = conn.execute(
                    update(objects)
                    .where(objects.c.id.in_(part), objects.c.state == src.value)
                    .values(resource_version=objects.c.resource_version + 1, **values)
                    .returning(objects.c.id, objects.c.name)
                ).all()
                moved += len(rows)
                add_events(
                    conn,
                    (
                        {
                            "site_id": site_id,
                            "object_id": r.id,
                            "kind": "Job",
                            "name": r.name,
                            "time": t,
                            "from_state": src.value,
                            "to_state": dst.value,
                            "reason": reason,
                            "message": message,
                        }
                        for r in rows
                    ),
                )
            return moved

    def jobs_in_state(
        self, site_id: int, state: JobState, *, apps: Sequence[str] | None = None, limit: int = 100
    ) -> list[JobRef]:
        """Up to ``limit`` Jobs in ``state`` (optionally of some Apps), oldest first."""
        q = select(
            objects.c.id,
            objects.c.name,
            objects.c.app,
            objects.c.state,
            objects.c.spec,
            objects.c.attempts,
            objects.c.deletion_timestamp,
        ).where(objects.c.site_id == site_id, objects.c.kind == "Job", objects.c.state == state.value)
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
        t = now()
        with write_tx(self.engine) as conn:
            for tr in items:
                check_job_transition(str(tr.job_id), tr.src, tr.dst)
                values: dict[str, Any] = {
                    "state": tr.dst.value,
                    "updated_at": t,
                    "resource_version": objects.c.resource_version + 1,
                    **tr.columns,
                }
                if tr.message:
                    values.setdefault("message", tr.message)
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
                add_events(
                    conn,
                    [
                        {
                            "site_id": site_id,
                            "object_id": tr.job_id,
                            "kind": "Job",
                            "name": name,
                            "from_state": tr.src.value,
                            "to_state": tr.dst.value,
                            "reason": tr.reason,
                            "message": tr.message,
                            "data": dict(tr.data) if tr.data else None,
                        }
                    ],
                )
        return done

    # ------------------------------------------------------------------ launchers
    def acquire(
        self,
        site_id: int,
        *,
        owner: str,
        batch_job: str,
        filter_tags: Mapping[str, str],
        choose: Callable[[list[JobRef]], list[tuple[JobRef, Mapping[str, Any]]]],
        candidates: int = 200,
        max_num_nodes: int | None = None,
        max_wall_time_min: float | None = None,
    ) -> list[tuple[JobRef, Mapping[str, Any]]]:
        """Claim runnable Jobs atomically: no two launchers ever get the same Job.

        Reads up to ``candidates`` runnable Jobs that match ``filter_tags``, lets ``choose`` (placement, no I/O)
        pick the ones that fit now with their resource data, and marks those RUNNING with one event each.
        """
        conds = [
            objects.c.site_id == site_id,
            objects.c.kind == "Job",
            objects.c.state.in_([s.value for s in RUNNABLE_STATES]),
            objects.c.deletion_timestamp.is_(None),
        ]
        for key, value in filter_tags.items():
            conds.append(
                exists().where(labels.c.object_id == objects.c.id, labels.c.key == key, labels.c.value == value)
            )
        if max_num_nodes is not None:
            conds.append(objects.c.num_nodes <= max_num_nodes)
        if max_wall_time_min is not None:
            conds.append(objects.c.wall_time_min <= max_wall_time_min)
        q = (
            select(
                objects.c.id,
                objects.c.name,
                objects.c.app,
                objects.c.state,
                objects.c.spec,
                objects.c.attempts,
                objects.c.deletion_timestamp,
            )
            .where(and_(*conds))
            .order_by(
                objects.c.num_nodes, objects.c.node_packing_count.desc(), objects.c.wall_time_min.desc(), objects.c.id
            )
            .limit(candidates)
        )
        with write_tx(self.engine) as conn:
            if is_postgres(self.engine):
                q = q.with_for_update(skip_locked=True, of=objects)
            rows = [_ref(r) for r in conn.execute(q)]
            chosen = choose(rows) if rows else []
            if not chosen:
                return []
            t = now()
            for ref, _ in chosen:
                check_job_transition(ref.name, ref.state, JobState.RUNNING)
            conn.execute(
                update(objects)
                .where(_BY_ID)
                .values(
                    state=JobState.RUNNING.value,
                    owner=owner,
                    batch_job=batch_job,
                    start_time=t,
                    end_time=None,
                    return_code=None,
                    attempts=objects.c.attempts + 1,
                    updated_at=t,
                    resource_version=objects.c.resource_version + 1,
                ),
                [{"b_id": ref.id} for ref, _ in chosen],
            )
            add_events(
                conn,
                (
                    {
                        "site_id": site_id,
                        "object_id": ref.id,
                        "kind": "Job",
                        "name": ref.name,
                        "from_state": ref.state,
                        "to_state": "RUNNING",
                        "reason": "Acquired",
                        "message": f"launched by {owner}",
                        "data": dict(data),
                    }
                    for ref, data in chosen
                ),
            )
        return chosen

    def record_results(self, site_id: int, results: Sequence[Mapping[str, Any]]) -> int:
        """Write many run outcomes in one transaction, durable on return.

        Each result has ``job_id``, ``name``, ``state`` (RUN_DONE, RUN_ERROR or RUN_TIMEOUT), ``return_code``,
        ``output_tail`` and ``message``; it applies only while the Job is still RUNNING.
        """
        for r in results:
            check_job_transition(r["name"], JobState.RUNNING, r["state"])
        t = now()
        with write_tx(self.engine) as conn:
            ids = [r["job_id"] for r in results]
            live: set[int] = set()
            for part in chunks(ids):
                q = select(objects.c.id).where(
                    objects.c.id.in_(part), objects.c.site_id == site_id, objects.c.state == JobState.RUNNING.value
                )
                if is_postgres(self.engine):
                    q = q.with_for_update()
                live.update(conn.execute(q).scalars())
            kept = [r for r in results if r["job_id"] in live]
            if not kept:
                return 0
            conn.execute(
                update(objects)
                .where(_BY_ID)
                .values(
                    state=bindparam("b_state"),
                    return_code=bindparam("b_rc"),
                    output_tail=bindparam("b_tail"),
                    message=bindparam("b_msg"),
                    end_time=t,
                    owner=None,
                    updated_at=t,
                    resource_version=objects.c.resource_version + 1,
                ),
                [
                    {
                        "b_id": r["job_id"],
                        "b_state": str(r["state"]),
                        "b_rc": r.get("return_code"),
                        "b_tail": r.get("output_tail"),
                        "b_msg": r.get("message"),
                    }
                    for r in kept
                ],
            )
            add_events(
                conn,
                (
                    {
                        "site_id": site_id,
                        "object_id": r["job_id"],
                        "kind": "Job",
                        "name": r["name"],
                        "from_state": "RUNNING",
                        "to_state": str(r["state"]),
                        "reason": "Ran",
                        "message": r.get("message") or f"return code {r.get('return_code')}",
                    }
                    for r in kept
                ),
            )
        return len(kept)

    def deletion_requested(self, owner: str) -> list[int]:
        """Ids of Jobs run by ``owner`` that a user asked to delete."""
        with read_tx(self.engine) as conn:
            q = select(objects.c.id).where(objects.c.owner == owner, objects.c.deletion_timestamp.is_not(None))
            return list(conn.execute(q).scalars())

    def count_runnable(self, site_id: int) -> int:
        """How many Jobs wait for a launcher."""
        with read_tx(self.engine) as conn:
            q = select(func.count()).where(
                objects.c.site_id == site_id,
                objects.c.kind == "Job",
                objects.c.state.in_([s.value for s in RUNNABLE_STATES]),
            )
            return int(conn.execute(q).scalar_one())


def _ref(r: Any) -> JobRef:
    return JobRef(
        id=r.id,
        name=r.name,
        app=r.app,
        state=r.state,
        spec=JobSpec.model_validate(r.spec),
        attempts=r.attempts,
        deletion_requested=r.deletion_timestamp is not None,
    )
