"""How long a CLI call takes, against the interpreter's own start-up in the same run (issue 12, point 7).

    python bench/cli_latency.py [--jobs 100000] [--runs 7]

Each verb is timed ``--runs`` times, alternating with ``python -c pass`` (this machine's floor for any Python
program), on a site holding ``--jobs`` Jobs; prints the medians of both and their difference. Targets: ``version``
<= 0.06 s, ``--help`` <= 0.1 s, ``get jobs NAME`` and ``get jobs -l k=v --limit 50`` <= 0.12 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import APP_DOC, cli, median
from bench.store_scale import load

TARGETS = {  # label -> (argv, target seconds)
    "balsamctl version": (["version"], 0.06),
    "balsamctl --help": (["--help"], 0.10),
    "balsamctl get jobs NAME": (["get", "jobs", "bulk-7"], 0.12),
    "balsamctl get jobs -l batch=b3 --limit 50": (["get", "jobs", "-l", "batch=b3", "--limit", "50"], 0.12),
}


def bare_python() -> float:
    """Seconds for ``python -c pass``: the floor of any Python CLI here."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000, help="Jobs the site holds (default 100,000)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        config, site = base / "sites.yaml", base / "site"
        cli(["site", "init", str(site), "--name", "bench"], base, config)
        (base / "app.yaml").write_text(APP_DOC)
        cli(["apply", "-f", str(base / "app.yaml")], site, config)  # the Jobs' App; warms the imports' file cache
        print(f"loading {args.jobs:,} Jobs: {load(site, args.jobs, 0):.1f} s", flush=True)
        print(f"{'python -c pass':45s} median {median([bare_python() for _ in range(args.runs)]):.3f} s")
        for label, (argv, target) in TARGETS.items():
            ours, bare = [], []
            for _ in range(args.runs):  # alternated: both see the same spell of this machine
                ours.append(cli(argv, site, config).seconds)
                bare.append(bare_python())
            secs, floor = median(ours), median(bare)
            verdict = "met" if secs <= target else "not met"
            print(
                f"{label:45s} median {secs:.3f} s (python -c pass {floor:.3f} s, {secs - floor:+.3f} s over it); "
                f"target {target:.2f} s: {verdict}"
            )


if __name__ == "__main__":
    main()
