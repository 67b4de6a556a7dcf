"""Launcher throughput: N ``/bin/true`` Jobs through a serial-mode launcher on a local site, against a bare
``subprocess.Popen`` loop with the same concurrency, in the same run.

    python bench/launcher_throughput.py [--jobs 2000 20000] [--slots 8] [--runs 3] [--dir bench/]

Prints Jobs/s of each, their ratio (and, for scale, the bare loop that also makes each Job's workdir and output
file), the median apply-to-RUNNING latency, the launcher's RSS at its start and its peak, and the CPU each part
spends per Job. Target (issue 4): at least 0.8 of the bare loop; Jobs/s that do not fall as N grows; flat RSS.
The Jobs ask for ``node_packing_count: slots`` (the default, 1, gives each Job a whole node: one at a time) and
are applied and preprocessed by the controller first (stage-in makes their workdirs). The clock runs from the
launcher's first start to its last Job's end (status start_time/end_time, written by the store). Launcher runs and
bare loops alternate (``--runs`` launcher runs, one more bare loop) and the medians are compared: this VM's speed
drifts by a third between minutes. Sites go under ``--dir`` (the repository's ``bench/`` by default), not /tmp.
Progress is polled with one indexed COUNT in this process: listing N Jobs through the CLI every half second would
take a core of its own, growing with N.
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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Selector
from bench.common import ROOT, cli, median

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


def sample_launcher(site: Path, stop: threading.Event, samples: list[float], cpu: dict[str, dict[int, float]]) -> None:
    """Sample the RSS (MiB) of the launcher processes of ``site`` and their local workers every second until
    ``stop`` (once more then), and the CPU seconds each has used so far (``cpu["launcher"]``, ``cpu["worker"]``, by
    pid).

    A launcher's child caught between fork and exec still shows the launcher's command line (and shares its
    pages): it is not counted again."""
    launchers: list[psutil.Process] = []
    while True:
        last = stop.is_set()
        if not launchers:  # a scan of every process's command line costs ~10 ms: once, until the launcher is seen
            found = {
                proc.pid: proc
                for proc in psutil.process_iter(["cmdline", "ppid"])
                if "balsamctl.launcher" in (proc.info["cmdline"] or []) and str(site) in proc.info["cmdline"]
            }
            launchers = [proc for proc in found.values() if proc.info["ppid"] not in found]
        parts = [("launcher", proc) for proc in launchers] + [("worker", w) for p in launchers for w in _workers(p)]
        total = 0.0
        for part, proc in parts:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss / 2**20
                cpu[part][proc.pid] = cpu_seconds(proc)
        if total:
            samples.append(total)
        if last:
            return
        stop.wait(1.0)


def _workers(launcher: psutil.Process) -> list[psutil.Process]:
    """Serial mode's local worker (``python -m balsamctl.launcher.worker``): its own process, the launcher's child."""
    found = []
    with contextlib.suppress(psutil.Error):
        for child in launcher.children():
            with contextlib.suppress(psutil.Error):
                if "balsamctl.launcher.worker" in child.cmdline():
                    found.append(child)
    return found


def wait_for(site: SiteDirectory, states: tuple[str, ...], n: int, stall_sec: float = 60.0) -> None:
    """Until ``n`` Jobs of ``site`` are in ``states`` (one indexed COUNT every 0.2 s); RuntimeError if none gets
    there for ``stall_sec`` (a launcher or controller that died: see the site's ``log/`` and ``qsubmit/``)."""
    sel = Selector("Job", (site.site_id,), states=states)
    done, progress = 0, time.monotonic()
    while done < n:
        time.sleep(0.2)
        count = site.store.count_objects(sel)
        if count > done:
            done, progress = count, time.monotonic()
        elif time.monotonic() - progress > stall_sec:
            raise RuntimeError(f"{done} of {n} Jobs reached {'/'.join(states)}; no progress for {stall_sec:.0f} s")


@dataclass(frozen=True)
class Measured:
    """One launcher run: Jobs/s, median apply->RUNNING seconds, RSS samples (MiB), CPU µs per Job."""

    rate: float
    latency: float
    rss: list[float]
    launcher_us: float
    worker_us: float
    controller_us: float


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of one process so far."""
    times = proc.cpu_times()
    return times.user + times.system


def run_launcher(base: Path, n: int, slots: int, nodes: int) -> Measured:
    """Run ``n`` Jobs through one serial-mode BatchJob and measure it."""
    config = base / f"sites-{n}.yaml"
    site = base / f"site-{n}"
    cli(["site", "init", str(site), "--name", f"tp{n}"], base, config)
    settings = yaml.safe_load((site / "settings.yml").read_text())
    settings["local_nodes"] = {"count": nodes, "cpus_per_node": slots // nodes, "gpus_per_node": 0}
    settings["launcher"]["idle_ttl_sec"] = 2
    settings["allowed_queues"]["local"]["max_nodes"] = nodes
    (site / "settings.yml").write_text(yaml.safe_dump(settings))
    packing = slots // nodes  # as many Jobs at once on a node as it has slots: the bare loop's concurrency
    jobs = "".join(
        f"---\napiVersion: balsam/v1\nkind: Job\nmetadata: {{name: t{i}}}\n"
        f"spec: {{app: noop, workdir: t/{i}, node_packing_count: {packing}}}\n"
        for i in range(n)
    )
    (base / "jobs.yaml").write_text(APP + jobs)
    cli(["controller", "start"], site, config)
    store_site = SiteDirectory.load(site)
    try:
        cli(["apply", "-f", str(base / "jobs.yaml")], site, config)
        wait_for(store_site, ("PREPROCESSED",), n)
        (base / "bj.yaml").write_text(
            "apiVersion: balsam/v1\nkind: BatchJob\nmetadata: {name: tp}\n"
            f"spec: {{num_nodes: {nodes}, wall_time_min: 30, queue: local, project: local, job_mode: serial}}\n"
        )
        stop, samples = threading.Event(), list[float]()
        cpu: dict[str, dict[int, float]] = {"launcher": {}, "worker": {}}
        sampler = threading.Thread(target=sample_launcher, args=(site, stop, samples, cpu))
        sampler.start()
        controller = psutil.Process(int((site / ".balsam" / "controller.pid").read_text().split()[0]))
        controller_cpu = cpu_seconds(controller)
        cli(["apply", "-f", str(base / "bj.yaml")], site, config)
        wait_for(store_site, ("JOB_FINISHED",), n)
        controller_cpu = cpu_seconds(controller) - controller_cpu
        stop.set()
        sampler.join()
        items = json.loads(cli(["get", "jobs", "-o", "json", "--limit", "0"], site, config).stdout)["items"]
    finally:
        store_site.close()
        cli(["controller", "stop"], site, config)
    starts = [datetime.fromisoformat(j["status"]["start_time"]) for j in items]
    ends = [datetime.fromisoformat(j["status"]["end_time"]) for j in items]
    created = [datetime.fromisoformat(j["metadata"]["creation_timestamp"]) for j in items]
    span = (max(ends) - min(starts)).total_seconds()
    latency = median([(s - c).total_seconds() for s, c in zip(starts, created, strict=True)])
    launcher, worker = (sum(cpu[part].values()) / n * 1e6 for part in ("launcher", "worker"))
    return Measured(n / span, latency, samples, launcher, worker, controller_cpu / n * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--slots", type=int, default=8, help="concurrent Jobs (CPUs of all emulated nodes)")
    parser.add_argument("--nodes", type=int, default=1, help="emulated nodes: one serial-mode worker each")
    parser.add_argument("--runs", type=int, default=3, help="launcher runs per N (bare loops: one more)")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench", help="where the sites and workdirs go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix=".run-") as tmp:
        for n in args.jobs:
            (Path(tmp) / f"bare-{n}").mkdir()
            with_files = bare_loop(n, args.slots, Path(tmp) / f"bare-{n}")
            bares, runs = [bare_loop(n, args.slots)], []
            for _ in range(args.runs):  # interleaved: this machine's speed drifts, both see the same drift
                runs.append(run_launcher(Path(tempfile.mkdtemp(dir=tmp)), n, args.slots, args.nodes))
                bares.append(bare_loop(n, args.slots))
            bare = median(bares)
            got = sorted(runs, key=lambda run: run.rate)[len(runs) // 2]  # the median run
            rss = [sample for run in runs for sample in run.rss]
            rss_text = (
                f"RSS start {runs[0].rss[0]:.0f} MiB, peak {max(rss):.0f} MiB" if runs[0].rss else "RSS not sampled"
            )
            print(
                f"N={n:>6}: launcher {got.rate:7.0f} Jobs/s (median of {', '.join(f'{r.rate:.0f}' for r in runs)}), "
                f"bare Popen loop {bare:7.0f} Jobs/s (median of {', '.join(f'{b:.0f}' for b in bares)}), "
                f"ratio {got.rate / bare:.2f} (bare loop with a workdir and output file per Job {with_files:.0f} "
                f"Jobs/s); median apply->RUNNING {got.latency:.2f} s (all {n} applied at once); {rss_text}; "
                f"CPU per Job: launcher {got.launcher_us:.0f} µs + its worker {got.worker_us:.0f} µs, "
                f"controller {got.controller_us:.0f} µs (until JOB_FINISHED); {args.slots} slots on {args.nodes} "
                "node(s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
