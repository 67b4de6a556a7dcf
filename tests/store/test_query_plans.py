"""The launcher's store calls and the controller's per-pass queries read what they need, not every Job of the site.

SQLite has no statistics (no ANALYZE): for ``site_id = ?`` it may prefer an index that walks every object of the
site over the primary key or a narrower index, and a launcher's or controller's pass then costs O(all Jobs).
Each statement these calls run is checked with ``EXPLAIN QUERY PLAN``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event

from balsamctl.schemas import App, Job, JobState, Manifest
from balsamctl.schemas.manifest import Document
from balsamctl.store import RunResult, RunStart, Selector, Store

S = JobState
#: Indexes whose use for these queries means reading every Job of the site (or of an App).
WALKS = ("ix_objects_source", "ix_objects_site_kind_id ", "ix_objects_site_kind_app ", "SCAN objects")


@contextmanager
def plans(store: Store) -> Iterator[list[tuple[str, str]]]:
    """``(statement, plan)`` of every SELECT/UPDATE on ``objects`` run inside the block."""
    seen: list[tuple[str, str]] = []

    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if "objects" not in statement or not statement.lstrip().startswith(("SELECT", "UPDATE")):
            return
        params = parameters[0] if many else parameters
        rows = cursor.connection.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
        seen.append((statement, "; ".join(str(r[-1]) for r in rows)))

    event.listen(store.engine, "before_cursor_execute", explain)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", explain)


def walks(seen: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(sql, plan) for sql, plan in seen if any(w in plan + " " for w in WALKS)]


def sqlite_store(tmp_path: Path, jobs: int = 50) -> tuple[Store, int]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    site_id = store.ensure_site("s", str(tmp_path))
    app = App.model_validate({"metadata": {"name": "noop"}, "spec": {"command": "true"}})
    docs = [
        Job.model_validate({"metadata": {"name": f"j{i}"}, "spec": {"app": "noop", "workdir": f"w{i}"}})
        for i in range(jobs)
    ]
    manifests: list[Manifest] = [app, *docs]
    store.apply(site_id, [Document(m, "f.yaml", 1) for m in manifests], check=lambda _a, _p: [])
    for src, dst in ((S.CREATED, S.READY), (S.READY, S.STAGED_IN), (S.STAGED_IN, S.PREPROCESSED)):
        store.advance(site_id, src, dst, reason="test")
    return store, site_id


def check(store: Store, calls: Callable[[], object]) -> None:
    with plans(store) as seen:
        calls()
    assert seen, "the calls ran statements"
    assert walks(seen) == []


def test_a_launchers_claim_record_and_unclaim_find_their_jobs_by_id_or_owner(tmp_path: Path) -> None:
    store, site_id = sqlite_store(tmp_path)
    store.register_launcher(site_id, "l", batch_job="bj", partition=0, job_mode="serial", host="h", pid=1, nodes=[])

    def launcher_calls() -> None:
        refs = store.claim(site_id, owner="l", batch_job="bj", filter_tags={}, limit=4)
        started = store.record(site_id, owner="l", started=[RunStart(r, 1.0) for r in refs[:2]])
        done = [RunResult(i, "j", S.RUN_DONE, return_code=0) for i in started]
        store.record(site_id, owner="l", results=done)
        store.record_results(site_id, done)
        store.unclaim(site_id, "l", [refs[2].id])
        store.unclaim(site_id, "l")

    check(store, launcher_calls)
    store.close()


def test_the_controllers_retry_listing_and_purge_read_only_their_jobs(tmp_path: Path) -> None:
    store, site_id = sqlite_store(tmp_path)

    def controller_calls() -> None:
        store.list_objects(Selector("Job", (site_id,), states=(S.RUN_ERROR.value,), apps=("noop",)), limit=1000)
        store.advance(site_id, S.RUN_DONE, S.POSTPROCESSED, reason="test", apps_without_hook=["noop"])
        store.purge_deleted_jobs(site_id)

    check(store, controller_calls)
    store.close()
