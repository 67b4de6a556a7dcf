"""The real Slurm cluster's e2e site: its settings, its creation and control, and where its Jobs ran."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from balsamctl.site.directory import SiteDirectory
from tests.support.e2e import VENV_BIN, E2EError, E2ESite

SETTINGS: dict[str, Any] = {
    "sync_period_sec": 1,
    "allowed_queues": {
        "debug": {"max_nodes": 4, "max_walltime": 60, "max_queued_jobs": 10},
        "nosuchpart": {"max_nodes": 4, "max_walltime": 60, "max_queued_jobs": 10},  # Slurm has no such partition
    },
    "allowed_projects": ["none"],
    "launcher": {
        "mpi_flavor": "mpich",
        "mpi_command": str(VENV_BIN / "mpiexec"),
        "idle_ttl_sec": 5,
        "python": str(VENV_BIN / "python"),
    },
}


CLUSTER_NODES = {"n1", "n2", "n3", "n4"}


SLURM_DEADLINE_SEC = 120.0  # submit -> running is 0.3-1 s here; other runs may share the nodes, and the CPUs (xdist)


def create_slurm_site(root: Path, name: str, settings: Mapping[str, Any]) -> E2ESite:
    """``balsamctl site init PATH --scheduler slurm`` through the real CLI, then ``settings`` merged in."""
    site = E2ESite(root, name)
    site.home.mkdir(parents=True, exist_ok=True)
    (site.home / "canary").write_text("rm -rf ~ never ran\n")
    out = site.cli("site", "init", str(site.path), "--name", name, "--scheduler", "slurm", cwd=root).stdout
    assert f"site/{name} created" in out, out
    site.update_settings(settings)
    assert yaml.safe_load((site.path / "settings.yml").read_text())["scheduler"] == "slurm"
    return site


@contextlib.contextmanager
def controlled(site: E2ESite) -> Iterator[E2ESite]:
    """``site`` with its controller running; afterwards none of its processes or Slurm jobs is left."""
    try:
        site.start_controller()
        yield site
    finally:
        try:
            site.close()
        finally:
            cancel_site_jobs(f"balsam-{site.name}-")


def batchjob(name: str, num_nodes: int = 1, queue: str = "debug", **spec: Any) -> str:
    """A BatchJob document on ``queue``, project ``none``, 5 minutes."""
    body = {"num_nodes": num_nodes, "wall_time_min": 5, "queue": queue, "project": "none", **spec}
    return yaml.safe_dump(
        {"apiVersion": "balsam/v1", "kind": "BatchJob", "metadata": {"name": name}, "spec": body}, sort_keys=False
    )


def wait_batchjob(site: E2ESite, name: str, states: set[str], timeout: float = SLURM_DEADLINE_SEC) -> dict[str, Any]:
    """Wait until batchjob/NAME is in one of ``states``; returns it."""

    def probe() -> dict[str, Any] | None:
        found = site.batchjobs(name).get(name)
        return found if found and found["status"]["state"] in states else None

    return site.wait_for(f"batchjob/{name} to reach {sorted(states)}", probe, timeout)


def placed_nodes(store_site: SiteDirectory, job: str) -> list[str]:
    """The nodes the launcher placed ``job`` on (the placement recorded with its RUNNING event)."""
    for event in reversed(store_site.store.events((store_site.site_id,), kind="Job", name=job, limit=50)):
        placement = (event.get("data") or {}).get("placement")
        if event["to_state"] == "RUNNING" and placement:
            return [share["node"] for share in placement["nodes"]]
    raise E2EError(f"job/{job} has no RUNNING event with a placement")


def ran_on(site: E2ESite, job: str) -> str:
    """The ``SLURMD_NODENAME`` the Job's command saw (``node=...`` in its job.out)."""
    match = re.search(r"node=(\S*)", site.logs(job))
    assert match, f"job/{job} printed no node: {site.logs(job)!r}"
    return match.group(1)


def cancel_site_jobs(prefix: str) -> None:
    """scancel every live Slurm job whose name starts with ``prefix``."""
    with contextlib.suppress(E2EError, subprocess.TimeoutExpired):
        out = slurm("squeue", "-h", "-o", "%i|%j")
        ids = [sid for sid, _, name in (line.partition("|") for line in out.splitlines()) if name.startswith(prefix)]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)


def slurm(*argv: str) -> str:
    """Run a Slurm client command; its stdout (fails the test on a non-zero exit)."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise E2EError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout
