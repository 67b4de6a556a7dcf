"""Store helpers: documents added to a bare store, Jobs made runnable and acquired, states and events read."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from balsamctl.schemas import App, Job
from balsamctl.schemas import JobState as S
from balsamctl.schemas.manifest import Document, Problem
from balsamctl.schemas.objects import AppSpec
from balsamctl.store import JobRef, RunStart, Store

PLACEMENT = json.dumps({"nodes": ["n0"]})  # the data of the Started events of acquire()
TO_RUNNABLE = [(S.CREATED, S.READY), (S.READY, S.STAGED_IN), (S.STAGED_IN, S.PREPROCESSED)]


T = TypeVar("T")


def app_doc(name: str = "sim") -> Document:
    return Document(App.model_validate({"metadata": {"name": name}, "spec": {"command": "true"}}), "gen.yaml", 1)


def job_doc(
    name: str,
    *,
    app: str = "sim",
    labels: dict[str, str] | None = None,
    parents: Sequence[str] = (),
    num_nodes: int = 1,
    wall_time_min: int = 0,
) -> Document:
    raw = {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "app": app,
            "workdir": f"w/{name}",
            "parents": list(parents),
            "num_nodes": num_nodes,
            "wall_time_min": wall_time_min,
        },
    }
    return Document(Job.model_validate(raw), "gen.yaml", 1)


def add(store: Store, site_id: int, docs: Sequence[Document]) -> None:
    store.apply(site_id, docs, check=no_problems)


def stored_job(store: Store, site_id: int, name: str) -> Job:
    manifest = store.get_object(site_id, "Job", name).manifest
    assert isinstance(manifest, Job)
    return manifest


def state_of(store: Store, site_id: int, name: str) -> str | None:
    return stored_job(store, site_id, name).status.state


def make_runnable(store: Store, site_id: int) -> None:
    for src, dst in TO_RUNNABLE:
        store.advance(site_id, src, dst, reason="test")


def acquire(s: Store, site_id: int, owner: str, *, limit: int = 1000, **claim: Any) -> list[JobRef]:
    """What a launcher does: claim Jobs, then record them started; the Jobs now RUNNING."""
    claim.setdefault("filter_tags", {})
    refs = s.claim(site_id, owner=owner, batch_job="bj", limit=limit, **claim)
    started = s.record(site_id, owner=owner, started=[RunStart(r, data=PLACEMENT) for r in refs])
    return [r for r in refs if r.id in started]


def at_once(url: str, n: int, work: Callable[[int, Store], T]) -> tuple[dict[int, T], list[BaseException]]:
    """``work(i, store)`` in ``n`` threads released together, each with its own Store on ``url``: what each
    returned (by ``i``) and the exceptions raised."""
    stores = [Store(url) for _ in range(n)]
    results: dict[int, T] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i, stores[i])
        except BaseException as exc:  # pragma: no cover - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in stores:
        s.close()
    return results, errors


def state_events(store: Store, site_id: int, name: str) -> list[tuple[str | None, str | None, str]]:
    return [(e["from_state"], e["to_state"], e["reason"]) for e in store.events((site_id,), kind="Job", name=name)]


def register(store: Store, site_id: int, launcher: str) -> None:
    store.register_launcher(
        site_id, launcher, batch_job="bj", partition=0, job_mode="mpi", host="h", pid=1, nodes=["n0"]
    )


def no_problems(_apps: Mapping[str, AppSpec], _parents: Mapping[str, Sequence[str]]) -> list[Problem]:
    return []
