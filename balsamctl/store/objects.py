"""Objects of every kind: apply (all or nothing), get/list/count with pagination, delete."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, and_, delete, func, insert, or_, select, update

from balsamctl.schemas import App, BatchJob, BatchJobState, Job, JobState
from balsamctl.schemas.manifest import Document, ManifestError, Problem
from balsamctl.schemas.objects import AppSpec
from balsamctl.schemas.states import RUNNABLE_STATES
from balsamctl.store.base import EventRow, add_events, chunks, job_event
from balsamctl.store.engine import is_postgres, read_tx, write_tx
from balsamctl.store.fastread import Selector
from balsamctl.store.rows import StoredObject, now, row_to_object
from balsamctl.store.sites import SiteStore
from balsamctl.store.tables import labels, objects, parents

CheckFn = Callable[[Mapping[str, AppSpec], Mapping[str, Sequence[str]]], list[Problem]]
#: Objects created by one apply from which PostgreSQL's planner statistics are refreshed at once (not by autovacuum).
ANALYZE_AFTER = 1000
#: The first key of the PostgreSQL advisory lock that serialises applies and deletes of one site (the second).
SITE_LOCK = 0x62616C73


class NotFound(LookupError):
    """No such object or site."""


class Conflict(ValueError):
    """The request contradicts what the store holds (e.g. deleting an App that Jobs still use)."""


@dataclass(frozen=True)
class ApplyResult:
    """What apply did to one object: ``created``, ``configured``, ``unchanged`` or ``deleted``."""

    ref: str
    action: str


def _job_columns(spec: Any) -> dict[str, Any]:
    return {
        "app": spec.app,
        "num_nodes": spec.num_nodes,
        "node_packing_count": spec.node_packing_count,
        "wall_time_min": spec.wall_time_min,
    }


def _initial_state(manifest: App | Job | BatchJob) -> str | None:
    if isinstance(manifest, Job):
        return JobState.CREATED.value
    if isinstance(manifest, BatchJob):
        return BatchJobState.pending_submission.value
    return None


class ObjectStore(SiteStore):
    """Sites (:class:`SiteStore`) and the generic object operations."""

    # ------------------------------------------------------------------ apply
    def apply(
        self,
        site_id: int,
        docs: Sequence[Document],
        *,
        check: CheckFn,
        source: str | None = None,
        prune: bool = False,
        dry_run: bool = False,
    ) -> list[ApplyResult]:
        """Create or update every document in one transaction, or nothing at all.

        ``check`` gets the stored Apps and parents the batch refers to and returns its problems; any problem
        raises :class:`ManifestError` and the store is untouched. With ``prune``, objects that came from
        ``source`` but are no longer in ``docs`` are deleted (GitOps). ``dry_run`` rolls everything back.
        """
        with write_tx(self.engine) as conn:
            self._lock_site(conn, site_id)
            problems = check(*self._references(conn, site_id, docs))
            if problems:
                raise ManifestError(problems)
            results = self._write(conn, site_id, docs, source)
            if prune and source is not None:
                keep = {d.key for d in docs}
                gone = conn.execute(
                    select(objects.c.kind, objects.c.name).where(
                        objects.c.site_id == site_id, objects.c.source == source
                    )
                ).all()
                doomed = [(k, n) for k, n in gone if (k, n) not in keep]
                results += self._delete(conn, site_id, doomed)
            if dry_run:
                conn.rollback()
        return results

    def _references(
        self, conn: Connection, site_id: int, docs: Sequence[Document]
    ) -> tuple[dict[str, AppSpec], dict[str, list[str]]]:
        in_batch_apps = {d.manifest.metadata.name for d in docs if isinstance(d.manifest, App)}
        in_batch_jobs = {d.manifest.metadata.name for d in docs if isinstance(d.manifest, Job)}
        app_names = sorted({d.manifest.spec.app for d in docs if isinstance(d.manifest, Job)} - in_batch_apps)
        parent_names = sorted(
            {p for d in docs if isinstance(d.manifest, Job) for p in d.manifest.spec.parents} - in_batch_jobs
        )
        apps: dict[str, AppSpec] = {}
        for part in chunks(app_names):
            q = select(objects.c.name, objects.c.spec).where(
                objects.c.site_id == site_id, objects.c.kind == "App", objects.c.name.in_(part)
            )
            apps.update({r.name: AppSpec.model_validate(r.spec) for r in conn.execute(q)})
        stored_parents: dict[str, list[str]] = {}
        for part in chunks(parent_names):
            stored_parents.update(self._ancestry(conn, site_id, part))
        return apps, stored_parents

    def _ancestry(self, conn: Connection, site_id: int, names: Sequence[str]) -> dict[str, list[str]]:
        """``{job: its parents}`` for the named stored Jobs and all their ancestors (a recursive query)."""
        start = select(objects.c.id).where(
            objects.c.site_id == site_id, objects.c.kind == "Job", objects.c.name.in_(names)
        )
        edges = select(parents.c.child_id, parents.c.parent_id).where(parents.c.child_id.in_(start))
        anc = edges.cte("ancestry", recursive=True)
        anc = anc.union(
            select(parents.c.child_id, parents.c.parent_id).join(anc, parents.c.child_id == anc.c.parent_id)
        )
        child, parent = objects.alias("child"), objects.alias("parent")
        rows = conn.execute(
            select(child.c.name, parent.c.name)
            .select_from(anc)
            .join(child, child.c.id == anc.c.child_id)
            .join(parent, parent.c.id == anc.c.parent_id)
        )
        found: dict[str, list[str]] = {
            name: [] for name in conn.execute(start.with_only_columns(objects.c.name)).scalars()
        }
        for child_name, parent_name in rows:
            found.setdefault(child_name, []).append(parent_name)
        return found

    def _write(self, conn: Connection, site_id: int, docs: Sequence[Document], source: str | None) -> list[ApplyResult]:
        existing: dict[tuple[str, str], Any] = {}
        by_kind: dict[str, list[str]] = {}
        for d in docs:
            by_kind.setdefault(d.manifest.kind, []).append(d.manifest.metadata.name)
        for kind, names in by_kind.items():
            for part in chunks(names):
                q = select(
                    objects.c.id,
                    objects.c.kind,
                    objects.c.name,
                    objects.c.spec,
                    objects.c.labels,
                    objects.c.annotations,
                    objects.c.source,
                    objects.c.state,
                ).where(objects.c.site_id == site_id, objects.c.kind == kind, objects.c.name.in_(part))
                existing.update({(r.kind, r.name): r for r in conn.execute(q)})
        t = now()
        results: list[ApplyResult] = []
        new_rows: list[dict[str, Any]] = []
        new_docs: list[Document] = []
        changed: list[tuple[Document, Any, bool]] = []
        for d in docs:
            m = d.manifest
            spec = m.spec.model_dump(mode="json")
            row = existing.get(d.key)
            if row is None:
                values: dict[str, Any] = {
                    "site_id": site_id,
                    "kind": m.kind,
                    "name": m.metadata.name,
                    "uid": str(uuid.uuid4()),
                    "state": _initial_state(m),
                    "generation": 1,
                    "resource_version": 1,
                    "spec": spec,
                    "labels": dict(m.metadata.labels),
                    "annotations": dict(m.metadata.annotations),
                    "status": {},
                    "source": source,
                    "created_at": t,
                    "updated_at": t,
                    "attempts": 0,
                    "app": None,
                    "num_nodes": None,
                    "node_packing_count": None,
                    "wall_time_min": None,
                }
                if isinstance(m, Job):
                    values.update(_job_columns(m.spec))
                new_rows.append(values)
                new_docs.append(d)
                results.append(ApplyResult(d.ref, "created"))
                continue
            spec_changed = row.spec != spec
            meta_changed = row.labels != m.metadata.labels or row.annotations != m.metadata.annotations
            if spec_changed or meta_changed:
                changed.append((d, row, spec_changed))
                results.append(ApplyResult(d.ref, "configured"))
            else:
                results.append(ApplyResult(d.ref, "unchanged"))
            if source is not None and row.source != source:
                conn.execute(update(objects).where(objects.c.id == row.id).values(source=source))
        ids: dict[tuple[str, str], int] = {k: r.id for k, r in existing.items()}
        if new_rows:
            # a plain executemany, then the ids by name: on PostgreSQL an INSERT .. RETURNING of many rows is ~5x slower
            conn.execute(insert(objects), new_rows)
            self._analyze(conn, len(new_rows), "objects")
            for kind, names in by_kind.items():
                ids.update({(kind, n): i for n, i in self.ids_of(conn, site_id, kind, names).items()})
        for d, row, spec_changed in changed:
            m = d.manifest
            values = {
                "spec": m.spec.model_dump(mode="json"),
                "labels": dict(m.metadata.labels),
                "annotations": dict(m.metadata.annotations),
                "updated_at": t,
                "resource_version": objects.c.resource_version + 1,
            }
            if spec_changed:
                values["generation"] = objects.c.generation + 1
            if isinstance(m, Job):
                values.update(_job_columns(m.spec))
            conn.execute(update(objects).where(objects.c.id == row.id).values(**values))
        relabel = new_docs + [d for d, _, _ in changed]
        self._write_labels(conn, [(ids[d.key], d) for d in relabel], replace=bool(changed))
        self._write_parents(
            conn, site_id, [(ids[d.key], d.manifest) for d in relabel if isinstance(d.manifest, Job)], ids
        )
        self._analyze(conn, len(new_rows), "labels", "parents")
        add_events(
            conn,
            (
                {
                    "site_id": site_id,
                    "object_id": ids[d.key],
                    "kind": d.manifest.kind,
                    "name": d.manifest.metadata.name,
                    "to_state": _initial_state(d.manifest),
                    "reason": "Created",
                    "message": f"applied from {d.source}",
                }
                for d in new_docs
            ),
        )
        add_events(
            conn,
            (
                {
                    "site_id": site_id,
                    "object_id": row.id,
                    "kind": d.manifest.kind,
                    "name": d.manifest.metadata.name,
                    "reason": "Configured",
                    "message": f"spec changed, applied from {d.source}" if sc else "metadata changed",
                }
                for d, row, sc in changed
            ),
        )
        return results

    def _lock_site(self, conn: Connection, site_id: int) -> None:
        """On PostgreSQL, one apply or delete per site at a time (they read, check, then write), as on SQLite."""
        if is_postgres(self.engine):
            conn.execute(select(func.pg_advisory_xact_lock(SITE_LOCK, site_id)))

    def _analyze(self, conn: Connection, inserted: int, *tables: str) -> None:
        """After a bulk insert on PostgreSQL, refresh the planner's statistics: stale ones pick nested loops."""
        if inserted >= ANALYZE_AFTER and is_postgres(self.engine):
            conn.exec_driver_sql(f"ANALYZE {', '.join(tables)}")

    def _write_labels(self, conn: Connection, items: Sequence[tuple[int, Document]], replace: bool) -> None:
        if replace:
            for part in chunks([oid for oid, _ in items]):
                conn.execute(delete(labels).where(labels.c.object_id.in_(part)))
        rows = [
            {"object_id": oid, "key": k, "value": v} for oid, d in items for k, v in d.manifest.metadata.labels.items()
        ]
        if rows:
            conn.execute(insert(labels), rows)

    def _write_parents(
        self, conn: Connection, site_id: int, jobs: Sequence[tuple[int, Job]], ids: dict[tuple[str, str], int]
    ) -> None:
        if not jobs:
            return
        for id_part in chunks([oid for oid, _ in jobs]):
            conn.execute(delete(parents).where(parents.c.child_id.in_(id_part)))
        missing = sorted({p for _, job in jobs for p in job.spec.parents if ("Job", p) not in ids})
        for name_part in chunks(missing):
            q = select(objects.c.id, objects.c.name).where(
                objects.c.site_id == site_id, objects.c.kind == "Job", objects.c.name.in_(name_part)
            )
            ids.update({("Job", r.name): r.id for r in conn.execute(q)})
        rows = [{"child_id": oid, "parent_id": ids[("Job", p)]} for oid, job in jobs for p in job.spec.parents]
        if rows:
            conn.execute(insert(parents), rows)

    # ------------------------------------------------------------------ read
    def _select(self, sel: Selector) -> Select[Any]:
        q = select(objects).where(objects.c.kind == sel.kind, objects.c.site_id.in_(sel.site_ids))
        if sel.names:
            q = q.where(objects.c.name.in_(sel.names))
        if sel.states:
            q = q.where(objects.c.state.in_(sel.states))
        if sel.scheduler_ids:
            q = q.where(objects.c.scheduler_id.in_(sel.scheduler_ids))
        if sel.apps:
            q = q.where(objects.c.app.in_(sel.apps))
        for key, value in sel.labels:
            q = q.where(
                objects.c.id.in_(select(labels.c.object_id).where(labels.c.key == key, labels.c.value == value))
            )
        return q

    def list_objects(
        self, sel: Selector, *, limit: int | None = None, after_id: int = 0, offset: int = 0
    ) -> list[StoredObject]:
        """Objects matching ``sel`` in id order, from ``after_id`` on (keyset pagination; ``offset`` for slices)."""
        q = self._select(sel).where(objects.c.id > after_id).order_by(objects.c.id)
        if limit is not None:
            q = q.limit(limit)
        if offset:
            q = q.offset(offset)
        with read_tx(self.engine) as conn:
            names = self._site_names(conn)
            return [row_to_object(r, names[r.site_id]) for r in conn.execute(q)]

    def count_objects(self, sel: Selector) -> int:
        """How many objects match ``sel``, counted in SQL."""
        q = select(func.count()).select_from(self._select(sel).with_only_columns(objects.c.id).subquery())
        with read_tx(self.engine) as conn:
            return int(conn.execute(q).scalar_one())

    def count_by_state(self, sel: Selector) -> dict[str, int]:
        """``{state: count}`` of the objects matching ``sel``."""
        sub = self._select(sel).with_only_columns(objects.c.state).subquery()
        q = select(sub.c.state, func.count()).group_by(sub.c.state)
        with read_tx(self.engine) as conn:
            return {str(s): int(n) for s, n in conn.execute(q)}

    def get_object(self, site_id: int, kind: str, name: str) -> StoredObject:
        """One object; :class:`NotFound` if it does not exist."""
        found = self.list_objects(Selector(kind, (site_id,), names=(name,)), limit=1)
        if not found:
            raise NotFound(f"{kind.lower()}/{name} not found")
        return found[0]

    # ------------------------------------------------------------------ delete
    def delete(self, site_id: int, keys: Iterable[tuple[str, str]]) -> list[ApplyResult]:
        """Delete objects by ``(kind, name)``: Jobs and Apps at once, BatchJobs by a deletion request."""
        with write_tx(self.engine) as conn:
            self._lock_site(conn, site_id)
            return self._delete(conn, site_id, list(keys))

    def _delete(self, conn: Connection, site_id: int, keys: Sequence[tuple[str, str]]) -> list[ApplyResult]:
        results: list[ApplyResult] = []
        order = {"Job": 0, "BatchJob": 1, "App": 2}
        by_kind: dict[str, list[str]] = {}
        for kind, name in keys:
            by_kind.setdefault(kind, []).append(name)
        for kind in sorted(by_kind, key=order.__getitem__):
            for part in chunks(by_kind[kind]):
                rows = conn.execute(
                    select(
                        objects.c.id, objects.c.name, objects.c.state, objects.c.owner, objects.c.deletion_timestamp
                    ).where(objects.c.site_id == site_id, objects.c.kind == kind, objects.c.name.in_(part))
                ).all()
                found = {r.name for r in rows}
                results += [ApplyResult(f"{kind.lower()}/{n}", "not found") for n in part if n not in found]
                if kind == "Job":
                    results += self._delete_jobs(conn, site_id, rows)
                elif kind == "App":
                    results += self._delete_apps(conn, site_id, rows)
                else:
                    results += self._delete_batchjobs(conn, site_id, rows)
        return results

    def _delete_jobs(self, conn: Connection, site_id: int, rows: Sequence[Any]) -> list[ApplyResult]:
        t = now()
        running = [r for r in rows if r.state == JobState.RUNNING or r.owner is not None]
        gone = [r for r in rows if r.state != JobState.RUNNING and r.owner is None]
        if running:
            conn.execute(update(objects).where(objects.c.id.in_([r.id for r in running])).values(deletion_timestamp=t))
            add_events(conn, (_event(site_id, r, "DeletionRequested", "stopping the running Job") for r in running))
        self._remove_jobs(conn, site_id, gone)
        return [ApplyResult(f"job/{r.name}", "deleted") for r in gone] + [
            ApplyResult(f"job/{r.name}", "deletion requested") for r in running
        ]

    def _remove_jobs(self, conn: Connection, site_id: int, rows: Sequence[Any]) -> None:
        """Delete Job rows; Jobs still waiting on one of them fail, naming the parent."""
        names = {r.id: r.name for r in rows}
        t = now()
        for part in chunks(list(names)):
            waiting = conn.execute(
                select(objects.c.id, objects.c.name, objects.c.state, func.min(parents.c.parent_id).label("parent"))
                .join(parents, parents.c.child_id == objects.c.id)
                .where(parents.c.parent_id.in_(part), objects.c.state.in_(["CREATED", "AWAITING_PARENTS"]))
                .group_by(objects.c.id, objects.c.name, objects.c.state)
            ).all()
            for w in waiting:
                msg = f"parent job/{names[w.parent]} was deleted"
                conn.execute(
                    update(objects)
                    .where(objects.c.id == w.id, objects.c.state == w.state)
                    .values(state="FAILED", message=msg, updated_at=t, resource_version=objects.c.resource_version + 1)
                )
                add_events(conn, [_event(site_id, w, "ParentDeleted", msg, to_state="FAILED")])
            conn.execute(delete(objects).where(objects.c.id.in_(part)))
        add_events(conn, (_event(site_id, r, "Deleted", "deleted") for r in rows))

    def purge_deleted_jobs(self, site_id: int) -> int:
        """Remove Jobs whose deletion was requested while they ran, once they stopped."""
        with write_tx(self.engine) as conn:
            self._lock_site(conn, site_id)
            rows = conn.execute(
                select(objects.c.id, objects.c.name, objects.c.state).where(
                    objects.c.site_id == site_id,
                    objects.c.kind == "Job",
                    objects.c.deletion_timestamp.is_not(None),
                    objects.c.state != JobState.RUNNING.value,
                    or_(objects.c.owner.is_(None), objects.c.state.not_in([s.value for s in RUNNABLE_STATES])),
                )
            ).all()
            self._remove_jobs(conn, site_id, rows)
            return len(rows)

    def _delete_apps(self, conn: Connection, site_id: int, rows: Sequence[Any]) -> list[ApplyResult]:
        for r in rows:
            users = conn.execute(
                select(func.count()).where(
                    objects.c.site_id == site_id, objects.c.kind == "Job", objects.c.app == r.name
                )
            ).scalar_one()
            if users:
                raise Conflict(f"app/{r.name} is used by {users} Job(s); delete them first")
        conn.execute(delete(objects).where(objects.c.id.in_([r.id for r in rows])))
        add_events(
            conn,
            (
                {
                    "site_id": site_id,
                    "object_id": r.id,
                    "kind": "App",
                    "name": r.name,
                    "reason": "Deleted",
                    "message": "deleted",
                }
                for r in rows
            ),
        )
        return [ApplyResult(f"app/{r.name}", "deleted") for r in rows]

    def _delete_batchjobs(self, conn: Connection, site_id: int, rows: Sequence[Any]) -> list[ApplyResult]:
        results: list[ApplyResult] = []
        t = now()
        for r in rows:
            state = BatchJobState(r.state)
            if state in (BatchJobState.finished, BatchJobState.submit_failed):
                conn.execute(delete(objects).where(objects.c.id == r.id))
                reason, action = "Deleted", "deleted"
            elif r.deletion_timestamp is not None:
                results.append(ApplyResult(f"batchjob/{r.name}", "deletion already requested"))
                continue
            else:
                conn.execute(
                    update(objects)
                    .where(objects.c.id == r.id)
                    .values(
                        state=BatchJobState.pending_deletion.value,
                        deletion_timestamp=t,
                        updated_at=t,
                        resource_version=objects.c.resource_version + 1,
                    )
                )
                reason, action = "DeletionRequested", "deletion requested"
            add_events(
                conn,
                [
                    {
                        "site_id": site_id,
                        "object_id": r.id,
                        "kind": "BatchJob",
                        "name": r.name,
                        "from_state": r.state,
                        "to_state": None if action == "deleted" else "pending_deletion",
                        "reason": reason,
                        "message": action,
                    }
                ],
            )
            results.append(ApplyResult(f"batchjob/{r.name}", action))
        return results

    def sources(self, site_id: int) -> set[str]:
        """The manifest files that objects of this site came from."""
        with read_tx(self.engine) as conn:
            q = select(objects.c.source).where(objects.c.site_id == site_id, objects.c.source.is_not(None)).distinct()
            return {r[0] for r in conn.execute(q)}

    def ids_of(self, conn: Connection, site_id: int, kind: str, names: Sequence[str]) -> dict[str, int]:
        """``{name: id}`` for objects of one kind."""
        out: dict[str, int] = {}
        for part in chunks(list(names)):
            q = select(objects.c.id, objects.c.name).where(
                and_(objects.c.site_id == site_id, objects.c.kind == kind, objects.c.name.in_(part))
            )
            out.update({r.name: r.id for r in conn.execute(q)})
        return out


def _event(site_id: int, row: Any, reason: str, message: str, to_state: str | None = None) -> EventRow:
    """An event row about a Job row (``id``, ``name``, ``state``)."""
    return job_event(site_id, row.id, row.name, row.state if to_state else None, to_state, reason, message)
