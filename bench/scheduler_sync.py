"""Scheduler status sync of the BatchJob reconciler: scheduler calls per pass and time per sync cycle.

    python bench/scheduler_sync.py [--allocations 1000] [--passes 20] [--real 20]

1. Scale: one site's store holds ``--allocations`` BatchJobs in state ``queued`` with Slurm ids; a fake ``squeue``
   first on PATH logs every invocation and prints one line per allocation in the Slurm adapter's format (recorded
   from the real cluster's ``squeue -O``, or a built-in recording when no cluster answers). Prints the scheduler
   calls per pass (target: exactly one) and, over ``--passes`` passes of the real ``BatchJobReconciler``, the
   median time per sync cycle, split into the scheduler command (the squeue process), parsing its output, the
   store and the rest. Then one pass in which every allocation has started (all ``queued -> running``).
2. Realism: ``--real`` held jobs (``sbatch --hold``) on the real cluster of ``scripts/slurm-up.sh``, the same
   measurement against the real ``squeue``; the jobs are cancelled at the end. Skipped (said so) without Slurm.

Self-contained: temporary sites, registry (``BALSAMCTL_CONFIG``) and fake programs, all removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from balsamctl.controller.batchjobs import BatchJobReconciler
from balsamctl.schedulers import AllocationStatus, SlurmScheduler
from balsamctl.schedulers.slurm import SQUEUE_FORMAT
from balsamctl.schemas import BatchJobState
from balsamctl.site.apply import apply_documents, read_documents
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Selector, Store
from bench.common import median

# Recorded on this project's test cluster (Slurm 22.05.8) with `squeue -h -t all -j ID -O SQUEUE_FORMAT`;
# used only when no cluster answers. {id} and {name} are filled in per allocation.
RECORDED = {
    "PENDING": "{id}|PENDING|N/A|N/A||0|JobHeldUser|{name}",
    "RUNNING": "{id}|RUNNING|2026-11-24T19:30:02|2026-11-24T19:35:02|n1|0|None|{name}",
}


# ---------------------------------------------------------------- instrumentation


@dataclass
class Clock:
    """Seconds spent in each part of one pass."""

    parts: dict[str, float] = field(default_factory=dict)

    def add(self, part: str, seconds: float) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + seconds

    @contextmanager
    def timing(self, part: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - t0)


class TimedStore:
    """The site's store, every method call timed into ``clock`` under "store"."""

    def __init__(self, store: Any, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._clock.timing("store"):
                return attr(*args, **kwargs)

        return timed


def instrument(site: SiteDirectory, scheduler: SlurmScheduler, clock: Clock) -> None:
    """Time the scheduler's commands ("command"), its status call as a whole ("status") and the store."""
    run, status = scheduler._run, scheduler.status

    def timed_run(argv: list[str], input: str | None = None) -> str:
        with clock.timing("command"):
            return run(argv, input)

    def timed_status(scheduler_ids: Sequence[str]) -> dict[str, AllocationStatus]:
        with clock.timing("status"):
            return status(scheduler_ids)

    # instrumented in place: each wrapper has its method's signature
    scheduler._run = timed_run  # type: ignore[method-assign]
    scheduler.status = timed_status  # type: ignore[method-assign]
    site._store = cast(Store, TimedStore(site.store, clock))  # a proxy with every method of the Store


# ---------------------------------------------------------------- sites, fakes, Slurm


def make_site(root: Path, name: str, count: int) -> SiteDirectory:
    """A Slurm site whose queue ``debug`` admits ``count`` BatchJobs, holding ``count`` of them (pending)."""
    site = init_site(root / name, name, "slurm")
    settings = yaml.safe_load((site.path / "settings.yml").read_text())
    settings["allowed_queues"] = {"debug": {"max_nodes": 4, "max_walltime": 60, "max_queued_jobs": count}}
    settings["allowed_projects"] = ["none"]
    (site.path / "settings.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
    site.close()
    site = SiteDirectory.load(site.path)
    docs = "".join(
        f"---\napiVersion: balsam/v1\nkind: BatchJob\nmetadata: {{name: bj-{i:05d}}}\n"
        "spec: {num_nodes: 1, wall_time_min: 5, queue: debug, project: none}\n"
        for i in range(count)
    )
    apply_documents(site, read_documents([("bench", docs)]))
    return site


def mark_queued(site: SiteDirectory, ids: list[str]) -> None:
    """Put BatchJob ``bj-i`` in state ``queued`` with scheduler id ``ids[i]`` (as the submit pass would)."""
    for i, sid in enumerate(ids):
        name = f"bj-{i:05d}"
        site.store.set_batchjob_status(
            site.site_id,
            name,
            src=BatchJobState.pending_submission,
            dst=BatchJobState.queued,
            scheduler_id=sid,
            status={"job_name": job_name(site, i)},
            reason="Submitted",
            message=f"submitted as {sid}",
        )


def job_name(site: SiteDirectory, i: int) -> str:
    return f"balsam-{site.name}-bj-{i:05d}"


def write_program(bindir: Path, name: str, body: str) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def slurm_up() -> bool:
    if not (shutil.which("sinfo") and shutil.which("sbatch") and shutil.which("squeue")):
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and "debug" in proc.stdout


def run(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=True).stdout


def squeue_line(sid: str) -> str:
    return run("squeue", "-h", "-t", "all", "-j", sid, "-O", SQUEUE_FORMAT).strip()


def record_format(out_dir: Path) -> tuple[dict[str, str], str]:
    """Lines of the real ``squeue -O SQUEUE_FORMAT`` for a held (PENDING) and a RUNNING job, as templates."""
    if not slurm_up():
        return RECORDED, "built-in recording (no Slurm cluster answers)"
    tag = f"bench-sync-probe-{uuid.uuid4().hex[:6]}"
    ids = []
    try:
        held = run("sbatch", "--parsable", "--hold", "-J", tag, "-o", "/dev/null", "--wrap", "true").strip()
        ids.append(held)
        running = run("sbatch", "--parsable", "-J", tag, "-o", "/dev/null", "--wrap", "sleep 60").strip()
        ids.append(running)
        deadline = time.monotonic() + 30
        while "|RUNNING|" not in squeue_line(running):
            if time.monotonic() > deadline:
                return RECORDED, "built-in recording (the probe job did not start within 30 s)"
            time.sleep(0.1)
        lines = {"PENDING": squeue_line(held), "RUNNING": squeue_line(running)}
    finally:
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)
    templates = {}
    for state, line in lines.items():
        _, _, rest = line.partition("|")
        templates[state] = "{id}|" + rest.rsplit("|", 1)[0] + "|{name}"
    (out_dir / "recorded.txt").write_text("\n".join(lines.values()) + "\n")
    return templates, f"recorded from the real cluster: {lines['PENDING']!r}, {lines['RUNNING']!r}"


@contextmanager
def logged_squeue(
    site: SiteDirectory, bindir: Path, log: Path, command: str
) -> Iterator[tuple[BatchJobReconciler, Clock]]:
    """A ``squeue`` first on PATH that logs its arguments to ``log`` and execs ``command``; meanwhile, the site's
    instrumented reconciler and its clock."""
    write_program(bindir, "squeue", f'echo "$*" >> {shlex.quote(str(log))}\nexec {command}')
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    try:
        clock = Clock()
        scheduler = SlurmScheduler(site.path)
        instrument(site, scheduler, clock)
        yield BatchJobReconciler(site, scheduler), clock
    finally:
        os.environ["PATH"] = os.environ["PATH"].split(os.pathsep, 1)[1]


# ---------------------------------------------------------------- measuring


@dataclass
class Passes:
    """Per-pass figures."""

    total: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)
    calls: list[int] = field(default_factory=list)


def measure(rec: BatchJobReconciler, clock: Clock, calls: Callable[[], int], passes: int) -> Passes:
    out = Passes()
    for _ in range(passes):
        clock.parts.clear()
        before = calls()
        t0 = time.perf_counter()
        rec()
        out.total.append(time.perf_counter() - t0)
        out.calls.append(calls() - before)
        for part in ("command", "status", "store"):
            out.parts.setdefault(part, []).append(clock.parts.get(part, 0.0))
    return out


def report(label: str, p: Passes) -> None:
    med = {part: median(values) for part, values in p.parts.items()}
    parse = median([s - c for s, c in zip(p.parts["status"], p.parts["command"], strict=True)])
    other = median([t - s - st for t, s, st in zip(p.total, p.parts["status"], p.parts["store"], strict=True)])
    print(f"  {label}: scheduler calls per pass: {sorted(set(p.calls))} over {len(p.calls)} passes")
    print(
        f"  {label}: time per sync cycle, median of {len(p.total)}: {median(p.total) * 1e3:.1f} ms "
        f"(min {min(p.total) * 1e3:.1f}, max {max(p.total) * 1e3:.1f})"
    )
    print(
        f"    scheduler command (squeue process) {med['command'] * 1e3:.1f} ms | parsing its output "
        f"{parse * 1e3:.1f} ms | store {med['store'] * 1e3:.1f} ms | reconciler rest {other * 1e3:.1f} ms"
    )


def log_lines(path: Path) -> Callable[[], int]:
    return lambda: len(path.read_text().splitlines()) if path.exists() else 0


def scale(root: Path, count: int, passes: int, templates: dict[str, str]) -> None:
    print(f"\n== {count} allocations, fake squeue printing {count} lines in the adapter's format")
    t0 = time.perf_counter()
    site = make_site(root, "sync-scale", count)
    ids = [str(100_000 + i) for i in range(count)]
    mark_queued(site, ids)
    print(f"  setup: {count} BatchJobs applied and marked queued in {time.perf_counter() - t0:.1f} s")

    bindir, log = root / "fake-bin", root / "squeue.log"
    outputs = {}
    for state, template in templates.items():
        outputs[state] = root / f"squeue-{state}.txt"
        outputs[state].write_text(
            "".join(template.format(id=sid, name=job_name(site, i)) + "\n" for i, sid in enumerate(ids))
        )
    current = root / "squeue-current.txt"
    shutil.copy(outputs["PENDING"], current)
    try:
        with logged_squeue(site, bindir, log, f"cat {shlex.quote(str(current))}") as (rec, clock):
            p = measure(rec, clock, log_lines(log), passes)
            report("steady state (all PENDING)", p)
            argv = log.read_text().splitlines()[-1].split()
            asked = argv[argv.index("-j") + 1].split(",")
            print(f"  the one call asks for {len(asked)} ids in one `squeue -j` ({len(' '.join(argv))} bytes of argv)")

            shutil.copy(outputs["RUNNING"], current)
            started = measure(rec, clock, log_lines(log), 1)
            running = site.store.count_by_state(Selector("BatchJob", (site.site_id,)))
            print(
                f"  one pass in which all {count} allocations started: {started.total[0]:.2f} s, "
                f"{started.calls[0]} squeue call(s), store {started.parts['store'][0]:.2f} s; states now {running}"
            )
            after = measure(rec, clock, log_lines(log), passes)
            report("steady state (all RUNNING)", after)
    finally:
        site.close()


def realism(root: Path, count: int, passes: int) -> None:
    print(f"\n== {count} real held Slurm jobs (sbatch --hold), the real squeue")
    if not slurm_up():
        print("  skipped: no Slurm cluster answers (start it with `bash scripts/slurm-up.sh`)")
        return
    site = make_site(root, "sync-real", count)
    ids: list[str] = []
    try:
        t0 = time.perf_counter()
        for i in range(count):
            ids.append(
                run(
                    "sbatch", "--parsable", "--hold", "-J", job_name(site, i), "-o", "/dev/null", "--wrap", "true"
                ).strip()
            )
        print(f"  {count} sbatch --hold in {time.perf_counter() - t0:.2f} s")
        mark_queued(site, ids)
        bindir, log = root / "real-bin", root / "real-squeue.log"
        real = shutil.which("squeue")
        assert real is not None
        with logged_squeue(site, bindir, log, f'{shlex.quote(real)} "$@"') as (rec, clock):
            p = measure(rec, clock, log_lines(log), passes)
            report("real cluster", p)
            states = site.store.count_by_state(Selector("BatchJob", (site.site_id,)))
            print(f"  BatchJob states after the passes: {states}")
    finally:
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60, check=False)
            print(f"  cancelled the {len(ids)} held jobs")
        site.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allocations", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--real", type=int, default=20, help="real held jobs for the realism check (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        root = Path(tmp)
        os.environ["BALSAMCTL_CONFIG"] = str(root / "sites.yaml")  # never the user's registry
        templates, origin = record_format(root)
        print(f"squeue format: {SQUEUE_FORMAT}\n  line templates {origin}")
        scale(root, args.allocations, args.passes, templates)
        if args.real:
            realism(root, args.real, args.passes)


if __name__ == "__main__":
    main()
