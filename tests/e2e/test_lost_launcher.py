"""A frozen launcher and an allocation that never starts one, end to end on a real local site.

- A launcher SIGSTOPped past its lease while its allocation stays alive: its Jobs' processes run on, so the
  controller cancels that allocation and hands the Jobs on only once it has ended. No Job ever runs twice at once
  (each run holds a lock on its Job's lock file, and the store's runs, from the events, never overlap), none is
  charged a failure, and a second BatchJob finishes them all.
- Allocations whose job script fails before it starts a launcher: each BatchJob says so (``LaunchersStarted=False``,
  with the script's last output lines) and ``get sites`` counts them in a row, until one starts a launcher.
"""

from __future__ import annotations

import itertools
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.e2e import E2ESite, Event, app_doc, batchjob_doc, job_doc, launchers, manifest

# A lease a busy 2-core machine cannot break by stalling a store write for a few seconds (a launcher fences itself
# once it could not renew for half of it); every wait below is counted in leases.
LEASE_SEC = 9
SETTINGS = {
    "sync_period_sec": 1,
    "local_nodes": {"count": 1, "cpus_per_node": 4},
    "launcher": {"lease_sec": LEASE_SEC, "idle_ttl_sec": 30},
}
JOBS = [f"frozen-{i}" for i in range(3)]
# A Job's first run outlasts its frozen launcher's lease, the sweep and the cancel (so it is still running when
# its launcher is fenced); a run after it is short.
FIRST_RUN_SEC = 3 * LEASE_SEC
# Each run locks its Job's lock file for as long as any of its processes lives (the fd is inherited) and logs
# whether it got the lock: "overlap" means another run of the same Job was still alive. No `{{`: a Jinja2 template.
RUN = (
    'exec 9>>"$LOCKS/$BALSAM_JOB_NAME"; if flock -n 9; then lock=ok; else lock=overlap; fi; '
    'echo "$BALSAM_JOB_NAME $lock" >> "$RUNLOG"; '
    'if [ -e "$LOCKS/$BALSAM_JOB_NAME.ran" ]; then sleep 1; else : > "$LOCKS/$BALSAM_JOB_NAME.ran"; '
    f"sleep {FIRST_RUN_SEC}; fi"
)


@dataclass(frozen=True)
class StoreRun:
    """One run of a Job as the store recorded it: its Started event and the event that ended it."""

    start: str
    end: str | None


@pytest.fixture
def site(tmp_path: Path) -> Iterator[E2ESite]:
    s = E2ESite.create(tmp_path, "frozen", SETTINGS)
    try:
        yield s
    finally:
        for proc in launchers(s):  # a failed test may leave one stopped: let it hear the SIGTERM of close()
            proc.send_signal(signal.SIGCONT)
        s.close()


def store_runs(events: list[Event]) -> list[StoreRun]:
    """A Job's runs from its events: each from RUNNING entered to RUNNING left."""
    runs: list[StoreRun] = []
    for event in events:
        if event.to_state == "RUNNING":
            runs.append(StoreRun(event.time, None))
        elif event.from_state == "RUNNING":
            assert runs and runs[-1].end is None, f"a run ended twice: {events}"
            runs[-1] = StoreRun(runs[-1].start, event.time)
    return runs


def start_frozen_jobs(site: E2ESite, tmp_path: Path, job_mode: str) -> Path:
    """Apply the long Jobs and a first BatchJob, start the controller, wait until every Job's first run holds its
    lock; the run log's path."""
    (tmp_path / "locks").mkdir()
    run_log = tmp_path / "runs.log"
    env = {"LOCKS": str(tmp_path / "locks"), "RUNLOG": str(run_log)}
    site.apply(
        manifest(
            app_doc("long", RUN, environment=env, max_retries=3),
            *(job_doc(name, "long", node_packing_count=4) for name in JOBS),
            batchjob_doc("first", wall_time_min=5, job_mode=job_mode),
        )
    )
    site.start_controller()
    site.wait_jobs(JOBS, ["RUNNING"])
    site.wait_for("every first run to take its lock", lambda: len(run_log.read_text().splitlines()) == len(JOBS))
    return run_log


@pytest.mark.parametrize("job_mode", ["mpi", "serial"])
def test_a_frozen_launchers_jobs_never_run_twice_at_once_and_are_never_charged(
    site: E2ESite, tmp_path: Path, job_mode: str
) -> None:
    run_log = start_frozen_jobs(site, tmp_path, job_mode)
    [launcher] = launchers(site)
    launcher.send_signal(signal.SIGSTOP)  # frozen: its Jobs' processes run on, and it never heartbeats again
    site.apply(batchjob_doc("second", wall_time_min=5, job_mode=job_mode))  # would take the Jobs if handed on

    def fenced() -> dict[str, str] | None:
        first = site.batchjobs("first")["first"]["status"]
        return next((c for c in first["conditions"] if c["type"] == "LaunchersHealthy"), None)

    told = site.wait_for("the controller to declare the launcher lost", fenced, timeout=3 * LEASE_SEC)
    jobs = site.wait_jobs(JOBS, timeout=FIRST_RUN_SEC + 60)

    assert (told["status"], told["reason"]) == ("False", "LauncherLost")
    assert socket.gethostname() in told["message"] and f"{launcher.pid}" in told["message"]
    assert {name: job["status"]["state"] for name, job in jobs.items()} == dict.fromkeys(JOBS, "JOB_FINISHED")
    assert {name: job["status"]["failures"] for name, job in jobs.items()} == dict.fromkeys(JOBS, 0)
    runs = run_log.read_text().splitlines()
    assert all(line.endswith(" ok") for line in runs), "two processes of one Job at once:\n" + "\n".join(runs)
    events = site.events()
    for name in JOBS:
        mine = store_runs(site.job_events(name, events))
        assert len(mine) == 2, mine  # the frozen launcher's, stopped, and the second BatchJob's
        for a, b in itertools.pairwise(mine):
            assert a.end is not None and a.end <= b.start, f"job/{name}: runs overlap in the store: {mine}"
        assert sum(1 for line in runs if line.startswith(f"{name} ")) == 2


def test_a_frozen_worker_delays_its_jobs_outcomes_but_never_runs_them_twice(site: E2ESite, tmp_path: Path) -> None:
    """serial mode: the worker (not its launcher) is frozen past the lease. The launcher keeps its lease, so nothing
    is handed on: once the worker wakes, each Job's one run is recorded, none charged."""
    run_log = start_frozen_jobs(site, tmp_path, "serial")
    [launcher] = launchers(site)
    [worker] = [p for p in launcher.children() if "balsamctl.launcher.worker" in p.cmdline()]
    worker.send_signal(signal.SIGSTOP)
    try:
        site.apply(batchjob_doc("second", wall_time_min=5, job_mode="serial"))
        site.wait_for(
            "the second allocation's launcher, idle: nothing handed on",
            lambda: site.batchjobs("second")["second"]["status"].get("partitions") or None,
            timeout=60,
        )
        time.sleep(LEASE_SEC * 1.5)  # past the lease and a sweep: the frozen worker's launcher is not declared lost
        assert {j["status"]["state"] for j in site.jobs(*JOBS).values()} == {"RUNNING"}
    finally:
        worker.send_signal(signal.SIGCONT)
    jobs = site.wait_jobs(JOBS, timeout=FIRST_RUN_SEC + 60)
    assert {name: job["status"]["state"] for name, job in jobs.items()} == dict.fromkeys(JOBS, "JOB_FINISHED")
    assert {name: job["status"]["failures"] for name, job in jobs.items()} == dict.fromkeys(JOBS, 0)
    assert sorted(run_log.read_text().split("\n")[:-1]) == sorted(f"{name} ok" for name in JOBS)  # one run each
    first = site.batchjobs("first")["first"]["status"]
    assert not [c for c in first["conditions"] if c["type"] == "LaunchersHealthy"]


# ---------------------------------------------------------------- allocations that never start a launcher

BROKEN_TEMPLATE = """\
#!/bin/bash
set -e
echo "setting up the environment for {{ batch_job.name }}"
source /opt/no-such-env/activate
{{ launcher_command }}
"""


def unstarted(site: E2ESite) -> str:
    """The UNSTARTED cell of ``get sites``."""
    header, row = site.cli("get", "sites").stdout.splitlines()
    return row.split()[header.split().index("UNSTARTED")]


def test_allocations_whose_script_fails_before_the_launcher_are_told_and_counted(site: E2ESite) -> None:
    template = site.path / "job-template.sh"
    good = template.read_text()
    template.write_text(BROKEN_TEMPLATE)
    site.apply(manifest(batchjob_doc("broken-1"), batchjob_doc("broken-2")))
    site.start_controller()

    def ended(*names: str) -> dict[str, dict[str, object]] | None:
        found = site.batchjobs(*names)
        return found if all(found[n]["status"]["state"] == "finished" for n in names) else None

    for name, bj in site.wait_for("the broken allocations to end", lambda: ended("broken-1", "broken-2")).items():
        status = bj["status"]
        assert isinstance(status, dict)
        [told] = [c for c in status["conditions"] if c["type"] == "LaunchersStarted"]
        assert (told["status"], told["reason"]) == ("False", "EndedBeforeLaunch")
        assert f"setting up the environment for {name}" in told["message"]
        assert "/opt/no-such-env/activate: No such file or directory" in told["message"]
    assert "EndedBeforeLaunch" in site.cli("describe", "batchjob", "broken-1").stdout
    assert unstarted(site) == "2"

    template.write_text(good)
    site.apply(manifest(app_doc("hello", "echo hi"), job_doc("hello-1", "hello"), batchjob_doc("working")))
    site.wait_jobs(["hello-1"], ["JOB_FINISHED"])
    working = site.batchjobs("working")["working"]["status"]
    [told] = [c for c in working["conditions"] if c["type"] == "LaunchersStarted"]
    assert told["status"] == "True"
    assert unstarted(site) == "0"
