"""Apply of 10,000 Jobs from one file, and ``get`` over 1,000,000 Jobs, through the real CLI.

    python bench/store_scale.py [--jobs 1000000]

Prints wall time and peak memory of each CLI call (medians of 5 for ``get``). Targets (issue 2): apply 10,000
Jobs in under 5 s; ``get`` a page over 1,000,000 Jobs in under 0.5 s. The 1,000,000 Jobs are loaded through
the store's own apply (in transactions of 100,000) before the ``get`` runs; the load time is printed too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from balsamctl.schemas.manifest import Document
from balsamctl.schemas.objects import Job, JobSpec, ObjectMeta
from bench.common import APP_DOC, cli, job_docs, median


def load(site_path: Path, total: int, already: int) -> float:
    """Add Jobs through the store's apply until the site holds ``total``; returns seconds taken."""
    from balsamctl.site.apply import apply_documents
    from balsamctl.site.directory import SiteDirectory

    site = SiteDirectory.load(site_path)
    t0 = time.perf_counter()
    chunk = 100_000
    for start in range(already, total, chunk):
        docs = [
            Document(
                Job(
                    metadata=ObjectMeta(name=f"bulk-{i}", labels={"batch": f"b{i % 10}"}),
                    spec=JobSpec(app="hello", workdir=f"bulk/{i}", parameters={"name": f"n{i}"}),
                ),
                "bench",
                i,
            )
            for i in range(start, min(total, start + chunk))
        ]
        apply_documents(site, docs)
        print(f"  loaded {min(total, start + chunk):,} Jobs", flush=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        config = base / "sites.yaml"
        site = base / "site"
        cli(["site", "init", str(site), "--name", "bench"], base, config)
        manifest = base / "jobs.yaml"
        manifest.write_text(APP_DOC + job_docs(10_000))
        run = cli(["apply", "-f", str(manifest)], site, config)
        print(f"apply 10,000 Jobs from one file: {run.seconds:.2f} s, peak RSS {run.peak_mib:.0f} MiB (target < 5 s)")
        run = cli(["apply", "-f", str(manifest)], site, config)
        print(f"re-apply, all unchanged:          {run.seconds:.2f} s, peak RSS {run.peak_mib:.0f} MiB")
        seconds = load(site, args.jobs, 10_000)
        print(f"loading to {args.jobs:,} Jobs (store apply, 100,000 per transaction): {seconds:.1f} s")
        queries = {
            "get jobs (first page of 500)": ["get", "jobs"],
            "get jobs --limit 50": ["get", "jobs", "--limit", "50"],
            "get jobs --state CREATED --limit 50": ["get", "jobs", "--state", "CREATED", "--limit", "50"],
            "get jobs --state RUNNING (none)": ["get", "jobs", "--state", "RUNNING"],
            "get jobs -l batch=b3 --limit 50": ["get", "jobs", "-l", "batch=b3", "--limit", "50"],
            "get jobs bulk-999999 -o yaml": ["get", "jobs", f"bulk-{args.jobs - 1}", "-o", "yaml"],
            "get jobs -o name --limit 1000": ["get", "jobs", "-o", "name", "--limit", "1000"],
        }
        startup = median([cli(["version"], site, config).seconds for _ in range(5)])
        print(f"CLI start-up alone (balsamctl version): median {startup:.3f} s (Python, SQLAlchemy, pydantic imports)")
        for label, argv in queries.items():
            runs = [cli(argv, site, config) for _ in range(5)]
            secs = median([r.seconds for r in runs])
            peak = max(r.peak_mib for r in runs)
            print(
                f"{label:40s} median {secs:.3f} s, of which past start-up {secs - startup:.3f} s; "
                f"peak RSS {peak:.0f} MiB (target < 0.5 s)"
            )


if __name__ == "__main__":
    main()
