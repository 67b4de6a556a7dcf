"""Apply on one host -> RUNNING on an idle launcher of a site on another host, with push wake-ups and without.

    python bench/push_latency.py [--samples 30] [--pg-url postgresql+psycopg://...] [--seed 1]

Target (issue 13): median <= 0.2 s with push. A site on a fresh PostgreSQL database runs its controller and an idle
launcher (local scheduler, one BatchJob running) in this process's tree and directory. Another process, in a
process tree, session, home and working directory of its own (it knows only the store's URL and the site's name:
what a host elsewhere has), applies Jobs one at a time through the store API and, as the CLI does after a write,
calls ``notify_site``; it never touches the site's wake-up file. Latency is each Job's ``status.start_time`` minus
its ``metadata.creation_timestamp``, both recorded by the store; its events split it in three: until the
controller's pass begins (``Ready``: woken), the pass (until ``Preprocessed``), and the launcher (until ``Started``,
the same time as start_time). The same run is then made with push disabled
(``BALSAMCTL_NO_PUSH`` set for the controller and launcher: what reaches a site on another host today), where the
controller's timers (its Job reconciler runs every 5 s) move the Jobs. Applies are spaced by a seeded random pause
of 0.2-5.2 s so that they fall anywhere in the timers' period. The PostgreSQL server defaults to
``BALSAMCTL_TEST_PG_URL`` (``scripts/pg-up.sh`` prints it); each run's database is dropped at its end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from balsamctl.schemas import Job
from balsamctl.schemas.manifest import parse_documents
from balsamctl.store import Store
from balsamctl.store.notify import NO_PUSH_VAR
from bench.common import APP_DOC, ROOT, cli, median, pg_database, wait_for

SITE = "push-bench"
BATCHJOB = """---
apiVersion: balsam/v1
kind: BatchJob
metadata: {name: idle-launcher}
spec: {num_nodes: 1, wall_time_min: 60, queue: local, project: local}
"""
PAUSE_SEC = (0.2, 5.2)
RUNNING_TIMEOUT_SEC = 60.0
STEPS = ("Ready", "Preprocessed", "Started")  # the events that split a latency: woken, the pass, the launcher


# ---------------------------------------------------------------------------------------------- the other host
def apply_remotely(url: str, samples: int, seed: int, push: bool) -> list[list[float]]:
    """The other host: apply Jobs one at a time to the site through the store, notify it (``push``), wait for each to
    start; of each, seconds from its apply to its start and to its ``Ready``, ``Preprocessed`` and ``Started`` events
    (the store's times)."""
    store = Store(url)
    site_id = store.site_id(SITE)
    pauses = random.Random(seed)
    latencies: list[list[float]] = []
    for i in range(samples):
        time.sleep(pauses.uniform(*PAUSE_SEC))
        name = f"probe-{i}"
        doc = f"apiVersion: balsam/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec: {{app: hello, workdir: p/{i}}}\n"
        store.apply(site_id, parse_documents(doc, "remote.yaml"), check=lambda _apps, _parents: [])
        if push:
            store.notify_site(site_id)  # what SiteDirectory.poke does after a write, on PostgreSQL
        deadline = time.monotonic() + RUNNING_TIMEOUT_SEC
        while (job := _job(store, site_id, name)).status.start_time is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not start within {RUNNING_TIMEOUT_SEC:.0f} s")
            time.sleep(0.02)
        created, started = job.metadata.creation_timestamp, job.status.start_time
        assert created is not None and started is not None
        at = {e["reason"]: e["time"] for e in store.events((site_id,), kind="Job", name=name)}
        steps = [at[reason] - created.timestamp() for reason in STEPS]  # events: epoch seconds
        latencies.append([(started - created).total_seconds(), *steps])
    store.close()
    return latencies


def _job(store: Store, site_id: int, name: str) -> Job:
    manifest = store.get_object(site_id, "Job", name).manifest
    assert isinstance(manifest, Job)
    return manifest


def elsewhere(url: str, samples: int, seed: int, push: bool, home: Path) -> list[list[float]]:
    """Run :func:`apply_remotely` as a process of another tree (started here, it forks and leaves its parent: init
    adopts it), with its own home and working directory and no site registry; its latencies."""
    home.mkdir()
    out = home / "latencies.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM")}
    env.update(HOME=str(home), BALSAMCTL_CONFIG=str(home / "sites.yaml"), PYTHONPATH=str(ROOT))
    argv = [sys.executable, str(Path(__file__).resolve()), "--remote", url, "--samples", str(samples)]
    argv += ["--seed", str(seed), "--out", str(out), *(["--push"] if push else [])]
    subprocess.run(argv, cwd=home, env=env, check=True)
    wait_for(out.exists, samples * (PAUSE_SEC[1] + RUNNING_TIMEOUT_SEC), "the other host's latencies")
    said = json.loads(out.read_text())
    if "error" in said:
        raise RuntimeError(f"the other host failed: {said['error']}")
    latencies: list[list[float]] = said["latencies"]
    return latencies


def detach() -> None:
    """Leave the parent's process tree and session: the parent returns at once, the child goes on, adopted by init."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)


# ---------------------------------------------------------------------------------------------- the site's host
def one_run(server_url: str, samples: int, seed: int, push: bool) -> list[list[float]]:
    """A site with its controller and an idle launcher here, Jobs applied from elsewhere; their latencies."""
    with tempfile.TemporaryDirectory() as tmp, pg_database(server_url) as url:
        base = Path(tmp)
        config, site = base / "sites.yaml", base / "site"
        cli(["site", "init", str(site), "--name", SITE], base, config)
        settings = yaml.safe_load((site / "settings.yml").read_text())
        settings["store_url"] = url
        settings["launcher"]["idle_ttl_sec"] = 3600
        (site / "settings.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
        (base / "start.yaml").write_text(APP_DOC + BATCHJOB)
        cli(["apply", "-f", str(base / "start.yaml")], site, config)
        env = {**os.environ, "BALSAMCTL_CONFIG": str(config)}
        if not push:
            env[NO_PUSH_VAR] = "1"
        with open(site / "log" / "controller.log", "ab") as log:
            controller = subprocess.Popen(
                [sys.executable, "-m", "balsamctl.controller", "run", "--site", str(site)],
                cwd=site,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        store = Store(url)
        try:
            site_id = store.site_id(SITE)
            wait_for(lambda: store.launchers_of(site_id, "idle-launcher"), 60, "the launcher")
            time.sleep(2)  # it found nothing to claim: idle
            return elsewhere(url, samples, seed, push, base / "elsewhere")
        finally:
            store.close()
            controller.send_signal(signal.SIGTERM)
            controller.wait(timeout=30)
            for record in (site / "qsubmit" / ".local").glob("*.json"):  # the allocation: its whole process group
                with contextlib.suppress(ProcessLookupError, psutil.Error):
                    os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)


def summary(latencies: Sequence[Sequence[float]]) -> str:
    """Median, p90 and max of the latencies; the median of each step."""
    total = [sample[0] for sample in latencies]
    p90 = statistics.quantiles(total, n=10, method="inclusive")[-1]
    steps = [(ready, preprocessed - ready, started - preprocessed) for _, ready, preprocessed, started in latencies]
    woken, passed, started = (median(step) for step in zip(*steps, strict=True))
    return (
        f"median {median(total):.3f} s, p90 {p90:.3f} s, max {max(total):.3f} s "
        f"(steps' medians: controller woken {woken:.3f} s, its pass {passed:.3f} s, launcher {started:.3f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg-url", default=os.environ.get("BALSAMCTL_TEST_PG_URL"))
    parser.add_argument("--remote", metavar="STORE_URL", help=argparse.SUPPRESS)  # the other host's part
    parser.add_argument("--push", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.remote:
        detach()
        said: dict[str, object]
        try:
            said = {"latencies": apply_remotely(args.remote, args.samples, args.seed, args.push)}
        except Exception as exc:  # told to the site's host, which waits for this file
            said = {"error": f"{type(exc).__name__}: {exc}"}
        partial = args.out.with_suffix(".tmp")
        partial.write_text(json.dumps(said))
        partial.rename(args.out)
        return
    if not args.pg_url:
        parser.error("no PostgreSQL server: --pg-url, or BALSAMCTL_TEST_PG_URL (bash scripts/pg-up.sh prints it)")
    print(f"apply on another host -> RUNNING on an idle launcher, PostgreSQL store, {args.samples} Jobs one at a time")
    print(f"  load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    pushed = one_run(args.pg_url, args.samples, args.seed, push=True)
    print(f"  push (LISTEN/NOTIFY): {summary(pushed)}; target: median <= 0.2 s", flush=True)
    timers = one_run(args.pg_url, args.samples, args.seed, push=False)
    print(f"  timers only (today):  {summary(timers)}")
    ratio = median([s[0] for s in timers]) / median([s[0] for s in pushed])
    print(f"  median ratio: {ratio:.0f}x faster with push")
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
