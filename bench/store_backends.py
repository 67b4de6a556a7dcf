"""The store's back ends side by side: SQLite and PostgreSQL, with 1 and 4 launcher processes.

    python bench/store_backends.py [--jobs 10000] [--runs 3] [--launchers 1 4]

For each back end and number of launchers, a fresh store gets ``--jobs`` runnable Jobs; then every launcher
process, with its own Store, (1) acquires: ``claim(limit=16)`` and ``record(started=...)`` until none are left,
then (2) writes statuses: ``record_results`` (RUN_DONE) of what it started, 16 at a time. Prints the Jobs/s of
each phase (median of ``--runs``) and the PostgreSQL/SQLite ratio. SQLite: a temporary file; PostgreSQL: a
temporary database on the server of ``BALSAMCTL_TEST_PG_URL`` (default: the one ``scripts/pg-up.sh`` starts),
dropped after.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from balsamctl.schemas import App, Job, JobState
from balsamctl.schemas.manifest import Document
from balsamctl.store import RunResult, RunStart, Store, sqlite_url
from bench.common import median, pg_database

PG_URL = os.environ.get("BALSAMCTL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:55432/postgres")
BATCH = 16
TO_RUNNABLE = [
    (JobState.CREATED, JobState.READY),
    (JobState.READY, JobState.STAGED_IN),
    (JobState.STAGED_IN, JobState.PREPROCESSED),
]


@contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """The URL of a new, empty database, removed on exit."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield sqlite_url(Path(tmp) / "store.db")
        return
    with pg_database(PG_URL) as url:
        yield url


def populate(url: str, n: int) -> int:
    """A site with ``n`` runnable Jobs (one apply, three bulk advances); its id."""
    store = Store(url)
    site_id = store.ensure_site("bench", "/bench")
    docs = [Document(App.model_validate({"metadata": {"name": "noop"}, "spec": {"command": "true"}}), "b.yaml", 1)]
    raws = ({"metadata": {"name": f"j{i}"}, "spec": {"app": "noop", "workdir": f"w{i}"}} for i in range(n))
    docs += [Document(Job.model_validate(raw), "b.yaml", 1) for raw in raws]
    store.apply(site_id, docs, check=lambda _apps, _parents: [])
    for src, dst in TO_RUNNABLE:
        store.advance(site_id, src, dst, reason="Bench")
    store.close()
    return site_id


def launcher(url: str, site_id: int, owner: str, barrier: Barrier, out: Queue[tuple[float, ...]]) -> None:
    """One launcher process: acquire until nothing is left, then write the outcomes; reports its phase times."""
    store = Store(url)
    barrier.wait()
    t0 = time.perf_counter()
    started = []
    while refs := store.claim(site_id, owner=owner, batch_job="bench", filter_tags={}, limit=BATCH):
        ok = store.record(site_id, owner=owner, started=[RunStart(ref) for ref in refs])
        started += [ref for ref in refs if ref.id in ok]
    t1 = time.perf_counter()
    barrier.wait()
    done = [RunResult(r.id, r.name, JobState.RUN_DONE, return_code=0) for r in started]
    t2 = time.perf_counter()
    for i in range(0, len(done), BATCH):
        store.record_results(site_id, done[i : i + BATCH])
    t3 = time.perf_counter()
    store.close()
    out.put((len(started), t0, t1, t2, t3))


def run(backend: str, n: int, launchers: int) -> tuple[float, float]:
    """Jobs/s of acquisition and of status writes, one run on a fresh store."""
    ctx = mp.get_context("spawn")
    with fresh_database(backend) as url:
        site_id = populate(url, n)
        barrier, out = ctx.Barrier(launchers), ctx.Queue()
        procs = [ctx.Process(target=launcher, args=(url, site_id, f"l{i}", barrier, out)) for i in range(launchers)]
        for p in procs:
            p.start()
        reports = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
    assert sum(r[0] for r in reports) == n, f"{backend}: {sum(r[0] for r in reports)} of {n} Jobs started"
    acquire = n / (max(r[2] for r in reports) - min(r[1] for r in reports))
    status = n / (max(r[4] for r in reports) - min(r[3] for r in reports))
    return acquire, status


def main() -> None:
    """Run every configuration ``--runs`` times and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--launchers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    print(f"jobs: {args.jobs}, claim/record batch: {BATCH}, median of {args.runs} runs, Jobs/s")
    print(f"{'launchers':>9}  {'phase':<12} {'sqlite':>9} {'postgresql':>11} {'pg/sqlite':>10}")
    for launchers in args.launchers:
        figures = {}
        for backend in ("sqlite", "postgresql"):
            runs = [run(backend, args.jobs, launchers) for _ in range(args.runs)]
            figures[backend] = (median([r[0] for r in runs]), median([r[1] for r in runs]))
        for i, phase in enumerate(("acquire", "status write")):
            lite, pg = figures["sqlite"][i], figures["postgresql"][i]
            print(f"{launchers:>9}  {phase:<12} {lite:>9.0f} {pg:>11.0f} {pg / lite:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
