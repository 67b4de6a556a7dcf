"""What a shared store's row-level security costs: the same work as the owner of the tables (whom it does not apply
to) and as the plain role that owns the site (whom it filters), on PostgreSQL, interleaved on one store so that the
machine's load weighs on both alike.

    python bench/store_access.py [--jobs 100000] [--batch 16]

A fresh database prepared with ``store init`` gets a site owned by a new plain role (``balsam_bench_<random>``,
LOGIN, no password: the test server trusts 127.0.0.1, dropped after). Then, turn by turn as the tables' owner and as
the site's role: applies of 10,000 Jobs (a tenth of ``--jobs`` if less; each with a label) until ``--jobs``; a
launcher's claims (``claim`` of ``--batch`` Jobs with a label filter, then ``record`` of their starts) until none is
left; its status writes (``record_results``, ``--batch`` at a time). Prints each role's Jobs/s and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from balsamctl.schemas import App, Job, JobState
from balsamctl.schemas.manifest import Document
from balsamctl.store import JobRef, RunResult, RunStart, Store
from balsamctl.store.access import init_store
from bench.store_backends import TO_RUNNABLE, fresh_database
from tests.support.shared_store import login_roles

APPLY = 10_000
ROLES = ("owner", "site role")


def jobs(start: int, n: int) -> list[Document]:
    """Jobs ``j<start>``.. of App noop, labelled for the launcher's filter."""
    raws = (
        {"metadata": {"name": f"j{i}", "labels": {"pool": "a"}}, "spec": {"app": "noop", "workdir": f"w{i}"}}
        for i in range(start, start + n)
    )
    return [Document(Job.model_validate(raw), "b.yaml", 1) for raw in raws]


def turns(stores: tuple[Store, Store], step: Callable[[Store], int], totals: dict[str, list[float]]) -> None:
    """``step`` (how many Jobs it handled; 0: done) as each store in turn until both are done; adds each role's
    seconds and Jobs to ``totals``."""
    live = [0, 1]
    while live:
        for i in list(live):
            t0 = time.perf_counter()
            n = step(stores[i])
            if n == 0:
                live.remove(i)
                continue
            totals[ROLES[i]][0] += time.perf_counter() - t0
            totals[ROLES[i]][1] += n


def main() -> None:
    """Run the three phases interleaved and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    total: int = args.jobs
    batch: int = args.batch
    chunk = max(1, min(APPLY, total // 10))
    with login_roles(1) as (role,), fresh_database("postgresql") as owner_url:
        init_store(owner_url, [])
        url = make_url(owner_url).set(username=role).render_as_string(hide_password=False)
        stores = (Store(owner_url), Store(url))
        site_id = stores[1].ensure_site("bench", "/bench")
        noop = App.model_validate({"metadata": {"name": "noop"}, "spec": {"command": "true"}})
        stores[1].apply(site_id, [Document(noop, "b.yaml", 1)], check=lambda _apps, _parents: [])
        figures: dict[str, dict[str, list[float]]] = {}
        applied = [0]

        def apply(store: Store) -> int:
            n = min(chunk, total - applied[0])
            if n > 0:
                store.apply(site_id, jobs(applied[0], n), check=lambda _apps, _parents: [])
                applied[0] += n
            return n

        figures["apply"] = {r: [0.0, 0.0] for r in ROLES}
        turns(stores, apply, figures["apply"])
        for src, dst in TO_RUNNABLE:
            while stores[0].advance(site_id, src, dst, reason="Bench"):
                pass
        with stores[0].engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        started: dict[int, list[JobRef]] = {id(s): [] for s in stores}

        def acquire(store: Store) -> int:
            refs = store.claim(
                site_id, owner=f"l{id(store)}", batch_job="bench", filter_tags={"pool": "a"}, limit=batch
            )
            ok = store.record(site_id, owner=f"l{id(store)}", started=[RunStart(ref) for ref in refs])
            started[id(store)] += [ref for ref in refs if ref.id in ok]
            return len(refs)

        figures["acquire"] = {r: [0.0, 0.0] for r in ROLES}
        turns(stores, acquire, figures["acquire"])

        def status(store: Store) -> int:
            done, started[id(store)] = started[id(store)][:batch], started[id(store)][batch:]
            results = [RunResult(r.id, r.name, JobState.RUN_DONE, return_code=0) for r in done]
            return store.record_results(site_id, results) if results else 0

        figures["status write"] = {r: [0.0, 0.0] for r in ROLES}
        turns(stores, status, figures["status write"])
        for store in stores:
            store.close()
    print(f"jobs: {total}, applied {chunk} at a time, batch {batch}; Jobs/s, the two roles taking turns on one store")
    print(f"{'phase':<13} {'owner':>9} {'site role':>10} {'ratio':>6}")
    for phase, by_role in figures.items():
        owner, plain = (by_role[r][1] / by_role[r][0] for r in ROLES)
        print(f"{phase:<13} {owner:>9.0f} {plain:>10.0f} {plain / owner:>6.2f}")


if __name__ == "__main__":
    main()
