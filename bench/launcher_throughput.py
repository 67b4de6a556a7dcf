"""Launcher throughput: N ``/bin/true`` Jobs through a serial-mode launcher on a local site, against a bare
``subprocess.Popen`` loop with the same concurrency, in the same run.

    python bench/launcher_throughput.py [--jobs 2000 20000] [--slots 8]

Prints Jobs/s of each, their ratio (and, for scale, the bare loop that also makes each Job's workdir and output
file), the median apply-to-RUNNING latency, and the launcher's RSS at its start and its peak. Target (issue 4): at
least 0.8 of the bare loop; Jobs/s that do not fall as N grows; flat RSS.
The Jobs are applied and preprocessed by the controller first; the clock runs from the launcher's first start to
its last Job's end (status start_time/end_time, written by the store). Progress is polled with one indexed COUNT
in this process: listing N Jobs through the CLI every half second would take a core of its own, growing with N.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from balsamctl.site import Site
from bench.common import cli, median
from store import Selector

APP = """---
apiVersion: balsam/v1
kind: App
metadata: {name: noop}
spec: {command: /bin/true}
"""


def bare_loop(n: int, slots: int, workdirs: Path | None = None) -> float:
    """Jobs/s of a bare Popen loop keeping ``slots`` /bin/true processes in flight; with ``workdirs``, each one
    also gets its own directory there and its output file (what any launcher writes per Job, at the least)."""
    t0 = time.perf_counter()
    running: list[subprocess.Popen[bytes]] = []
    started = 0
    while started < n or running:
        while started < n and len(running) < slots:
            running.append(_spawn(started, workdirs))
            started += 1
        running[0].wait()
        running = [p for p in running if p.poll() is None]
    return n / (time.perf_counter() - t0)


def _spawn(i: int, workdirs: Path | None) -> subprocess.Popen[bytes]:
    if workdirs is None:
        return subprocess.Popen(["/bin/true"])
    workdir = workdirs / str(i)
    workdir.mkdir()
    with open(workdir / "job.out", "ab") as out:
        return subprocess.Popen(["/bin/true"], cwd=workdir, stdout=out, stderr=subprocess.STDOUT)


def launcher_rss(site: Path, stop: threading.Event, samples: list[float]) -> None:
    """Sample the RSS (MiB) of the launcher processes of ``site`` every second until ``stop``.

    A launcher's child caught between fork and exec still shows the launcher's command line (and shares its
    pages): it is not counted again."""
    while not stop.is_set():
        found = {
            proc.pid: proc
            for proc in psutil.process_iter(["cmdline", "ppid"])
            if "launcher" in (proc.info["cmdline"] or []) and str(site) in proc.info["cmdline"]
        }
        total = 0.0
        for proc in found.values():
            if proc.info["ppid"] not in found:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss / 2**20
        if total:
            samples.append(total)
        time.sleep(1.0)  # a scan of every process's command line costs ~10 ms: not to be taken from the launcher


def wait_for(site: Site, states: tuple[str, ...], n: int) -> None:
    """Until ``n`` Jobs of ``site`` are in ``states`` (one indexed COUNT every 0.2 s)."""
    sel = Selector("Job", (site.site_id,), states=states)
    while site.store.count_objects(sel) < n:
        time.sleep(0.2)


def run_launcher(base: Path, n: int, slots: int, nodes: int) -> tuple[float, float, list[float]]:
    """Jobs/s of the launcher, median apply->RUNNING latency, RSS samples."""
    config = base / f"sites-{n}.yaml"
    site = base / f"site-{n}"
    cli(["site", "init", str(site), "--name", f"tp{n}"], base, config)
    settings = yaml.safe_load((site / "settings.yml").read_text())
    settings["local_nodes"] = {"count": nodes, "cpus_per_node": slots // nodes, "gpus_per_node": 0}
    settings["launcher"]["idle_ttl_sec"] = 2
    settings["allowed_queues"]["local"]["max_nodes"] = nodes
    (site / "settings.yml").write_text(yaml.safe_dump(settings))
    jobs = "".join(
        f"---\napiVersion: balsam/v1\nkind: Job\nmetadata: {{name: t{i}}}\nspec: {{app: noop, workdir: t/{i}}}\n"
        for i in range(n)
    )
    (base / "jobs.yaml").write_text(APP + jobs)
    cli(["controller", "start"], site, config)
    store_site = Site.load(site)
    try:
        cli(["apply", "-f", str(base / "jobs.yaml")], site, config)
        wait_for(store_site, ("PREPROCESSED",), n)
        (base / "bj.yaml").write_text(
            "apiVersion: balsam/v1\nkind: BatchJob\nmetadata: {name: tp}\n"
            f"spec: {{num_nodes: {nodes}, wall_time_min: 30, queue: local, project: local, job_mode: serial}}\n"
        )
        stop, samples = threading.Event(), list[float]()
        sampler = threading.Thread(target=launcher_rss, args=(site, stop, samples), daemon=True)
        sampler.start()
        cli(["apply", "-f", str(base / "bj.yaml")], site, config)
        wait_for(store_site, ("RUN_DONE", "POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"), n)
        stop.set()
        items = json.loads(cli(["get", "jobs", "-o", "json", "--limit", "0"], site, config).stdout)["items"]
    finally:
        store_site.close()
        cli(["controller", "stop"], site, config)
    starts = [datetime.fromisoformat(j["status"]["start_time"]) for j in items]
    ends = [datetime.fromisoformat(j["status"]["end_time"]) for j in items]
    created = [datetime.fromisoformat(j["metadata"]["creation_timestamp"]) for j in items]
    span = (max(ends) - min(starts)).total_seconds()
    latency = median([(s - c).total_seconds() for s, c in zip(starts, created, strict=True)])
    return n / span, latency, samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--slots", type=int, default=8, help="concurrent Jobs (CPUs of all emulated nodes)")
    parser.add_argument("--nodes", type=int, default=1, help="emulated nodes: one serial-mode worker each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.jobs:
            bare = bare_loop(n, args.slots)
            (Path(tmp) / f"bare-{n}").mkdir()
            with_files = bare_loop(n, args.slots, Path(tmp) / f"bare-{n}")
            rate, latency, rss = run_launcher(Path(tmp), n, args.slots, args.nodes)
            rss_text = f"RSS start {rss[0]:.0f} MiB, peak {max(rss):.0f} MiB" if rss else "RSS not sampled"
            print(
                f"N={n:>6}: launcher {rate:7.0f} Jobs/s, bare Popen loop {bare:7.0f} Jobs/s, ratio {rate / bare:.2f} "
                f"(bare loop with a workdir and output file per Job {with_files:.0f} Jobs/s); "
                f"median apply->RUNNING {latency:.2f} s (all {n} applied at once); {rss_text}; "
                f"{args.slots} slots on {args.nodes} node(s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
