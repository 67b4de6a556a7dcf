"""How long a CLI call takes, against the interpreter's own start-up in the same run (issue 12, point 7).

    python bench/cli_latency.py [--jobs 100000] [--runs 9]

On a site holding ``--jobs`` Jobs, each call is timed ``--runs`` times, alternating with ``python -c pass`` (this
machine's floor for any Python program); prints the medians of both, their ratio and the target. Targets:
``version`` <= 0.06 s, ``--help`` <= 0.1 s, ``get jobs NAME`` and ``get jobs -l k=v --limit 50`` <= 0.12 s; a
TAB (the completion of ``get jobs``: the site's Job names) is held to the ``get`` target. ``get jobs NAME`` through
typer (``BALSAMCTL_NO_FASTPATH=1``) is timed too, for reference. Bytecode is compiled first, as an installed
package has it (with ``PYTHONDONTWRITEBYTECODE`` set, every run would compile the changed modules). The query
plans of the two ``get`` shapes on this store are printed: each reads an index, no table scan.
"""

from __future__ import annotations

import argparse
import compileall
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import APP_DOC, ROOT, cli, env_for, median
from bench.store_scale import load

CALLS = {  # label -> (argv, extra environment, target seconds or None)
    "balsamctl version": (["version"], {}, 0.06),
    "balsamctl --help": (["--help"], {}, 0.10),
    "balsamctl get jobs NAME": (["get", "jobs", "bulk-7"], {}, 0.12),
    "balsamctl get jobs -l batch=b3 --limit 50": (["get", "jobs", "-l", "batch=b3", "--limit", "50"], {}, 0.12),
    "TAB: balsamctl get jobs <TAB> (bash)": (
        [],
        {"_BALSAMCTL_COMPLETE": "complete_bash", "COMP_WORDS": "balsamctl get jobs ", "COMP_CWORD": "3"},
        0.12,
    ),
    "balsamctl get jobs NAME, through typer": (["get", "jobs", "bulk-7"], {"BALSAMCTL_NO_FASTPATH": "1"}, None),
}


def timed(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    """Seconds one process takes (its output discarded; it must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def plans(store: Path) -> list[str]:
    """The query plans of ``get jobs NAME`` and ``get jobs -l batch=b3 --limit 50`` (page and count) on ``store``."""
    from balsamctl.store import fastread

    name = fastread.Selector("Job", (1,), names=("bulk-7",))
    label = fastread.Selector("Job", (1,), labels=(("batch", "b3"),))
    queries = {
        "get jobs NAME": fastread.page_query(name, 0, 1000),
        "get -l: page": fastread.page_query(label, 0, 50),
        "get -l: count": fastread.count_query(label),
        "TAB: names": fastread.names_query("Job", [1], "", 1000),
    }
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return [
            f"  {label}: " + "; ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            for label, (sql, params) in queries.items()
        ]
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000, help="Jobs the site holds (default 100,000)")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "balsamctl", quiet=1)
    with open("/proc/loadavg") as stream:
        print(f"load average (1, 5, 15 min): {' '.join(stream.read().split()[:3])}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        config, site = base / "sites.yaml", base / "site"
        cli(["site", "init", str(site), "--name", "bench"], base, config)
        (base / "app.yaml").write_text(APP_DOC)
        cli(["apply", "-f", str(base / "app.yaml")], site, config)  # the Jobs' App; warms the imports' file cache
        print(f"loading {args.jobs:,} Jobs: {load(site, args.jobs, 0):.1f} s", flush=True)
        print("query plans:", *plans(site / ".balsam" / "store.db"), sep="\n")
        bare = [sys.executable, "-c", "pass"]
        print(f"{'python -c pass':45s} median {median([timed(bare) for _ in range(args.runs)]):.3f} s")
        for label, (argv, extra, target) in CALLS.items():
            env = {**env_for(config), **extra}
            command = [str(Path(sys.executable).parent / "balsamctl"), *argv]
            timed(command, site, env)  # warm-up
            ours, floor = [], []
            for _ in range(args.runs):  # alternated: both see the same spell of this machine
                ours.append(timed(command, site, env))
                floor.append(timed(bare))
            secs, base_secs = median(ours), median(floor)
            verdict = "" if target is None else f"; target {target:.2f} s: {'met' if secs <= target else 'not met'}"
            print(
                f"{label:45s} median {secs:.3f} s (python -c pass {base_secs:.3f} s, {secs / base_secs:.1f}x, "
                f"{secs - base_secs:+.3f} s over it){verdict}",
                flush=True,
            )


if __name__ == "__main__":
    main()
