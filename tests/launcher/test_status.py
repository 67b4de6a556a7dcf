"""Launcher heartbeats in a BatchJob's ``status.partitions`` and in ``balsamctl get batchjobs -o wide``.

From the formatting of a given status (fixed times), through the controller's copy of the launcher records
(running, ended, lost), to a real launcher on a local site whose heartbeat shows in the wide table.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from balsamctl.cli import app as cli
from balsamctl.cli import output
from balsamctl.controller.batchjobs import BatchJobReconciler
from balsamctl.schedulers import AllocationStatus, get_scheduler
from balsamctl.schemas import BatchJob, BatchJobState
from balsamctl.schemas.objects import Condition
from balsamctl.site.apply import apply_documents, read_documents
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Heartbeat, StoredObject
from tests.support.e2e import E2ESite, app_doc, job_doc, manifest

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
BASE = ["NAME", "STATE", "SCHEDULER_ID", "NODES", "QUEUE", "PROJECT", "WALLTIME", "MODE", "AGE"]


def ago(seconds: float) -> str:
    """An ISO timestamp ``seconds`` before NOW, as the controller writes ``last_heartbeat``."""
    return datetime.fromtimestamp(NOW - seconds, UTC).isoformat()


def report(mode: str, nodes: int, running: int, occupancy: float, seconds_ago: float, **extra: Any) -> dict[str, Any]:
    """One entry of ``status.partitions``."""
    return {
        "launcher": f"bj.0.host.{nodes}.abcdef",
        "partition": 0,
        "job_mode": mode,
        "nodes": [f"n{i}" for i in range(nodes)],
        "running_jobs": running,
        "claimed_jobs": 1,
        "occupancy": occupancy,
        "last_heartbeat": ago(seconds_ago),
        "ended": False,
        "lost": False,
        **extra,
    }


def stored_batchjob(partitions: list[dict[str, Any]]) -> StoredObject:
    """A running BatchJob with ``status.partitions``, as ``get`` reads it from the store."""
    bj = BatchJob.model_validate(
        {
            "apiVersion": "balsam/v1",
            "kind": "BatchJob",
            "metadata": {"name": "alloc", "creation_timestamp": ago(120)},
            "spec": {
                "num_nodes": 6,
                "wall_time_min": 30,
                "queue": "local",
                "project": "local",
                "partitions": [{"job_mode": "mpi", "num_nodes": 2}, {"job_mode": "serial", "num_nodes": 4}],
            },
            "status": {"state": "running", "scheduler_id": "42", "partitions": partitions},
        }
    )
    return StoredObject(id=1, site_id=1, site_name="s", manifest=bj)


# ---------------------------------------------------------------- formatting (fixed times)


def test_launcher_cell_shows_mode_nodes_running_jobs_occupancy_and_heartbeat_age() -> None:
    live = report("mpi", 2, 5, 0.62, 3)
    assert output.launcher_text(live, NOW) == "mpi:2n/5run/62%/hb:3s"
    assert output.launcher_text(report("serial", 4, 0, 0.0, 0.4), NOW) == "serial:4n/0run/0%/hb:0s"
    assert output.launcher_text(report("serial", 4, 8, 1.0, 150), NOW) == "serial:4n/8run/100%/hb:2m"
    # an ended launcher shows neither Jobs nor occupancy, only when it last reported (as it ended)
    ended = report("serial", 4, 0, 0.0, 150, ended=True)
    assert output.launcher_text(ended, NOW) == "serial:4n/ended/hb:2m"
    # one declared lost by its lease (ended by the sweep, silent since its last heartbeat)
    lost = report("mpi", 2, 3, 0.5, 7200, ended=True, lost=True)
    assert output.launcher_text(lost, NOW) == "mpi:2n/lost/hb:2h"
    # a record written before "lost" existed, or one without a heartbeat time, still renders
    legacy = {k: v for k, v in report("mpi", 1, 1, 1.0, 3).items() if k not in ("lost", "last_heartbeat")}
    assert output.launcher_text(legacy, NOW) == "mpi:1n/1run/100%/hb:<none>"
    # several launchers: one cell, comma-separated in the order of status.partitions
    assert output.launchers_text([live, ended], NOW) == "mpi:2n/5run/62%/hb:3s,serial:4n/ended/hb:2m"
    assert output.launchers_text([], NOW) == ""


def test_wide_batchjob_row_has_the_launchers_and_the_plain_one_does_not() -> None:
    obj = stored_batchjob([report("mpi", 2, 5, 0.62, 3), report("serial", 4, 0, 0.0, 150, ended=True)])
    assert output.headers("BatchJob", wide=False) == BASE
    assert output.headers("BatchJob", wide=True) == [*BASE, "PARTITIONS", "LAUNCHERS", "CONDITIONS", "MESSAGE"]
    plain = output.row(obj, NOW, wide=False)
    assert plain == ["alloc", "running", "42", "6", "local", "local", "30m", "mpi", "2m"]
    wide = output.row(obj, NOW, wide=True)
    assert wide == [*plain, "mpi:2,serial:4", "mpi:2n/5run/62%/hb:3s,serial:4n/ended/hb:2m", "<none>", "<none>"]
    text = output.TableWriter("BatchJob", wide=True, with_site=False, now=NOW).page([obj])
    assert text.splitlines()[1].split()[9:11] == ["mpi:2,serial:4", "mpi:2n/5run/62%/hb:3s,serial:4n/ended/hb:2m"]
    assert output.row(stored_batchjob([]), NOW, wide=True)[10] == "<none>"


# ---------------------------------------------------------------- the controller's copy of the launcher records


@pytest.fixture
def local_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SiteDirectory]:
    """A local site (SQLite store), the current directory, with a BatchJob ``alloc`` in state ``running``."""
    site = init_site(tmp_path / "site", "hb-site")
    doc = {
        "apiVersion": "balsam/v1",
        "kind": "BatchJob",
        "metadata": {"name": "alloc"},
        "spec": {"num_nodes": 1, "wall_time_min": 10, "queue": "local", "project": "local"},
    }
    apply_documents(site, read_documents([("test", yaml.safe_dump(doc))]))
    B = BatchJobState
    assert site.store.set_batchjob_status(site.site_id, "alloc", src=B.pending_submission, dst=B.queued)
    assert site.store.set_batchjob_status(site.site_id, "alloc", src=B.queued, dst=B.running)
    monkeypatch.chdir(site.path)
    yield site
    site.close()


def stored(site: SiteDirectory) -> BatchJob:
    obj = site.store.get_object(site.site_id, "BatchJob", "alloc").manifest
    assert isinstance(obj, BatchJob)
    return obj


def test_report_copies_each_launchers_heartbeat_and_tells_ended_from_lost(local_site: SiteDirectory) -> None:
    store, sid = local_site.store, local_site.site_id

    def register(launcher: str, index: int, node: str) -> None:
        store.register_launcher(
            sid, launcher, batch_job="alloc", partition=index, job_mode="mpi", host="h", pid=1, nodes=[node]
        )

    register("gone", 0, "n0")  # silent from the start: lost once its lease runs out
    time.sleep(1.0)
    register("live", 1, "n1")
    register("done", 2, "n2")
    beat = Heartbeat(job_mode="mpi", nodes=("n1",), running_jobs=2, claimed_jobs=3, occupancy=0.75)
    assert store.heartbeat("live", beat)
    assert store.heartbeat("done", Heartbeat(job_mode="mpi", nodes=("n2",)), ended=True)
    assert store.sweep_lost_launchers(sid, lease_sec=0.5).launchers == ["gone"]

    reconciler = BatchJobReconciler(local_site, get_scheduler("local", local_site.path))
    running = AllocationStatus("1", "running", "RUNNING", start_time=datetime.now(UTC))
    assert reconciler._watch_launchers(stored(local_site), running) is False
    parts = {p.launcher: p for p in stored(local_site).status.partitions}
    assert set(parts) == {"gone", "live", "done"}
    live = parts["live"]
    assert (live.partition, live.nodes, live.running_jobs, live.claimed_jobs, live.occupancy) == (1, ["n1"], 2, 3, 0.75)
    assert [(parts[n].ended, parts[n].lost) for n in ("live", "done", "gone")] == [
        (False, False),
        (True, False),
        (True, True),
    ]
    for p in parts.values():
        assert p.last_heartbeat is not None and abs(p.last_heartbeat.timestamp() - time.time()) < 60

    result = CliRunner().invoke(cli.app, ["get", "batchjobs", "-o", "wide"])
    assert result.exit_code == 0, result.stdout
    header, line = result.stdout.splitlines()
    cells = line[header.index("LAUNCHERS") :].split()[0].split(",")
    patterns = {"live": r"mpi:1n/2run/75%/hb:\d+s", "done": r"mpi:1n/ended/hb:\d+s", "gone": r"mpi:1n/lost/hb:\d+s"}
    by_launcher = dict(zip([p.launcher for p in stored(local_site).status.partitions], cells, strict=True))
    for launcher, pattern in patterns.items():
        assert re.fullmatch(pattern, by_launcher[launcher]), (launcher, by_launcher)
    plain = CliRunner().invoke(cli.app, ["get", "batchjobs"])
    assert plain.stdout.splitlines()[0].split() == BASE


def test_partitions_stored_before_lost_and_last_heartbeat_existed_still_load_and_show(
    local_site: SiteDirectory,
) -> None:
    """``status.partitions`` is stored as JSON; a record an older controller wrote (no ``lost``, no
    ``last_heartbeat``) reads into the typed model with their defaults, and ``get -o wide`` shows it."""
    legacy = {k: v for k, v in report("serial", 2, 4, 0.5, 3).items() if k not in ("lost", "last_heartbeat")}
    B = BatchJobState
    assert local_site.store.set_batchjob_status(
        local_site.site_id, "alloc", src=B.running, status={"partitions": [legacy]}
    )
    [part] = stored(local_site).status.partitions
    assert (part.launcher, part.job_mode, part.nodes, part.running_jobs) == (
        legacy["launcher"],
        "serial",
        ["n0", "n1"],
        4,
    )
    assert (part.occupancy, part.ended, part.lost, part.last_heartbeat) == (0.5, False, False, None)
    result = CliRunner().invoke(cli.app, ["get", "batchjobs", "-o", "wide"])
    assert result.exit_code == 0, result.stdout
    header, line = result.stdout.splitlines()
    assert line[header.index("LAUNCHERS") :].split()[0] == "serial:2n/4run/50%/hb:<none>"


# ---------------------------------------------------------------- a real launcher on a local site


E2E_SETTINGS = {
    "sync_period_sec": 1,
    # heartbeats every lease_sec / 4 = 2 s; a lease long enough that a loaded machine does not lose the launcher
    "launcher": {"idle_ttl_sec": 2, "lease_sec": 8},
    "local_nodes": {"count": 2, "cpus_per_node": 2},
    "allowed_queues": {"local": {"max_nodes": 2}},
}
BATCHJOB = """\
apiVersion: balsam/v1
kind: BatchJob
metadata: {name: hb-alloc}
spec:
  num_nodes: 2
  wall_time_min: 5
  queue: local
  project: local
  partitions:
  - {job_mode: mpi, num_nodes: 1, filter_tags: {t: hb}}
  - {job_mode: mpi, num_nodes: 1, filter_tags: {t: nothing-matches}}
"""


@pytest.mark.slow
def test_a_real_launchers_heartbeat_lands_in_status_partitions_and_the_wide_table(tmp_path: Path) -> None:
    """Partition 0 runs a ``sleep`` Job (one node of one: 100 % occupancy); partition 1 has nothing to do and ends
    after ``idle_ttl_sec`` while the allocation runs on."""
    site = E2ESite.create(tmp_path, "hb-site", E2E_SETTINGS)
    try:
        site.start_controller()
        site.apply(manifest(app_doc("nap", "sleep 30"), job_doc("nap-1", "nap", labels={"t": "hb"}), BATCHJOB))

        def reported() -> list[dict[str, Any]] | None:
            bj = site.batchjobs("hb-alloc").get("hb-alloc")
            reports = (bj or {}).get("status", {}).get("partitions", [])
            parts = {p["partition"]: p for p in reports}
            busy = parts.get(0, {}).get("running_jobs", 0) >= 1
            return reports if busy and parts.get(1, {}).get("ended") else None

        reports = site.wait_for("a heartbeat with a running Job, and the idle launcher's end", reported, timeout=20)
        busy, idle = ({p["partition"]: p for p in reports}[i] for i in (0, 1))
        assert busy["job_mode"] == "mpi" and len(busy["nodes"]) == 1 and busy["running_jobs"] == 1
        assert busy["occupancy"] == 1.0 and not busy["ended"] and not busy["lost"]
        assert idle["ended"] and not idle["lost"] and idle["running_jobs"] == 0
        for p in (busy, idle):
            assert abs(datetime.fromisoformat(p["last_heartbeat"]).timestamp() - time.time()) < 15

        header, line = site.cli("get", "batchjobs", "-o", "wide").stdout.splitlines()
        assert header.split()[9:] == ["PARTITIONS", "LAUNCHERS", "CONDITIONS", "MESSAGE"]
        cells = line.split()
        assert cells[:2] == ["hb-alloc", "running"] and cells[9] == "mpi:1,mpi:1"
        # one entry per launcher, in the order of status.partitions (oldest launcher first: it does not change)
        launchers = dict(zip([p["partition"] for p in reports], cells[10].split(","), strict=True))
        assert re.fullmatch(r"mpi:1n/1run/100%/hb:\d+s", launchers[0]), cells[10]
        assert re.fullmatch(r"mpi:1n/ended/hb:\d+s", launchers[1]), cells[10]

        # the allocation ends: the finished BatchJob keeps each launcher's last word, every one ended on its own
        site.kill_allocations()

        def finished() -> dict[str, Any] | None:
            status = site.batchjobs("hb-alloc")["hb-alloc"]["status"]
            return status if status["state"] == "finished" else None

        final = site.wait_for("the BatchJob to finish", finished)["partitions"]
        assert sorted(p["partition"] for p in final) == [0, 1], final
        assert all(p["ended"] and not p["lost"] for p in final), final
        cell = site.cli("get", "batchjobs", "-o", "wide").stdout.splitlines()[1].split()[10]
        assert all(re.fullmatch(r"mpi:1n/ended/hb:\d+s", c) for c in cell.split(",")), cell
    finally:
        site.close()


def test_wide_batchjob_row_names_the_conditions_that_are_not_true() -> None:
    obj = stored_batchjob([])
    assert isinstance(obj.manifest, BatchJob)
    obj.manifest.status.conditions = [
        Condition(type="LaunchersStarted", status="True", reason="Registered", message="a launcher registered"),
        Condition(type="LauncherReady", status="False", reason="MPICommandNotFound", message="no mpiexec"),
        Condition(type="Submitted", status="Unknown", reason="SubmitTimeout", message="sbatch timed out"),
    ]
    wide = output.row(obj, NOW, wide=True)
    assert wide[-2] == "LauncherReady=MPICommandNotFound,Submitted=SubmitTimeout"
