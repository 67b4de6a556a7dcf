"""Controller idle CPU and apply-to-RUNNING latency on an idle launcher, through the real CLI and processes.

    python bench/controller_latency.py [--samples 20] [--idle-seconds 30]

Targets (issue 2): controller idle CPU under 1%; from ``apply`` of a Job to RUNNING on an idle launcher under
1 s median (the reference system's launch delay was 2-3 s). Latency is status.start_time minus
metadata.creation_timestamp of each Job, both written by the store.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import APP_DOC, cli, median, wait_for

BATCHJOB = """---
apiVersion: balsam/v1
kind: BatchJob
metadata: {name: idle-launcher}
spec: {num_nodes: 1, wall_time_min: 30, queue: local, project: local}
"""


def job_status(site: Path, config: Path, name: str) -> dict[str, Any]:
    """One Job as ``get jobs NAME -o json`` prints it."""
    job: dict[str, Any] = json.loads(cli(["get", "jobs", name, "-o", "json"], site, config).stdout)
    return job


def start_time(site: Path, config: Path, name: str) -> str | None:
    """When a Job started (ISO text), if it did."""
    started: str | None = job_status(site, config, name)["status"].get("start_time")
    return started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        config = base / "sites.yaml"
        site = base / "site"
        cli(["site", "init", str(site), "--name", "latency"], base, config)
        settings = yaml.safe_load((site / "settings.yml").read_text())
        settings["launcher"]["idle_ttl_sec"] = 600
        (site / "settings.yml").write_text(yaml.safe_dump(settings))
        cli(["controller", "start"], site, config)
        pid = int((site / ".balsam" / "controller.pid").read_text().split()[0])
        proc = psutil.Process(pid)
        try:
            time.sleep(2)
            before, t0 = proc.cpu_times(), time.monotonic()
            time.sleep(args.idle_seconds)
            after, wall = proc.cpu_times(), time.monotonic() - t0
            busy = (after.user + after.system) - (before.user + before.system)
            print(f"controller idle CPU: {100 * busy / wall:.2f}% over {wall:.0f} s (target < 1%)")

            (base / "start.yaml").write_text(APP_DOC + BATCHJOB)
            cli(["apply", "-f", str(base / "start.yaml")], site, config)
            wait_for(lambda: (site / "log").exists() and any((site / "qsubmit").glob("*.out")), 30, "allocation")
            time.sleep(2)  # the launcher is up and idle
            latencies = []
            for i in range(args.samples):
                doc = (
                    f"apiVersion: balsam/v1\nkind: Job\nmetadata: {{name: probe-{i}}}\n"
                    f"spec: {{app: hello, workdir: probe/{i}}}\n"
                )
                (base / "probe.yaml").write_text(doc)
                cli(["apply", "-f", str(base / "probe.yaml")], site, config)
                wait_for(functools.partial(start_time, site, config, f"probe-{i}"), 30, "RUNNING")
                job = job_status(site, config, f"probe-{i}")
                created = datetime.fromisoformat(job["metadata"]["creation_timestamp"])
                started = datetime.fromisoformat(job["status"]["start_time"])
                latencies.append((started - created).total_seconds())
                time.sleep(0.3)
            latencies.sort()
            print(
                f"apply -> RUNNING on an idle launcher: median {median(latencies):.3f} s, "
                f"min {latencies[0]:.3f} s, max {latencies[-1]:.3f} s over {len(latencies)} Jobs (target < 1 s median)"
            )
        finally:
            cli(["delete", "batchjob", "idle-launcher"], site, config)
            time.sleep(1)
            cli(["controller", "stop"], site, config)
            for record in (site / "qsubmit" / ".local").glob("*.json"):
                with contextlib.suppress(psutil.Error):
                    psutil.Process(json.loads(record.read_text())["pid"]).send_signal(signal.SIGKILL)


if __name__ == "__main__":
    main()
