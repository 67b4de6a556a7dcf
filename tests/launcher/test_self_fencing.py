"""Self-fencing: a launcher that cannot renew its lease stops its own Jobs before the lease can run out elsewhere.

A real launcher loop on a real PostgreSQL store; the store then refuses every write (the database made read-only
and its connections ended, as a failover or a full disk would), so no heartbeat goes through. The launcher must
stop its running Job within half its lease: by the time a controller could declare it lost and hand the Job on,
the first run is over. Before self-fencing, a store error crashed the launcher loop and its Job ran on, unseen.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from balsamctl.schemas import JobState
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from tests.support.databases import Databases, pg_server_url
from tests.support.launcher_ops import jobs_of, launcher_on, running_in_thread, wait_for
from tests.support.site_ops import advance_to_runnable, app, apply_raws, batchjob, job

LEASE_SEC = 4.0


@pytest.fixture
def pg_site(tmp_path: Path) -> Iterator[tuple[SiteDirectory, str]]:
    """A site whose store is a fresh PostgreSQL database; yields it and the database's URL."""
    made = init_site(tmp_path / "site", "fencing", register=False)
    made.close()
    dbs = Databases("postgresql", pg_server_url())
    with dbs.fresh(tmp_path) as url:
        settings = made.path / "settings.yml"
        body = yaml.safe_load(settings.read_text())
        launcher = {**body.get("launcher", {}), "lease_sec": LEASE_SEC, "idle_ttl_sec": 60.0}
        settings.write_text(yaml.safe_dump({**body, "store_url": url, "launcher": launcher}, sort_keys=False))
        site = SiteDirectory.load(made.path)
        try:
            yield site, url
        finally:
            site.close()
            refuse_writes(url, False)
    dbs.close()


def refuse_writes(url: str, refuse: bool) -> None:
    """Make the database read-only (or writable again) and end its sessions, so every new one is so."""
    name = make_url(url).database
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if refuse else "off"}'))
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
    admin.dispose()


def test_a_launcher_that_cannot_renew_its_lease_stops_its_jobs_before_the_lease_runs_out(
    pg_site: tuple[SiteDirectory, str],
) -> None:
    site, url = pg_site
    apply_raws(site, app("long", "sleep 120"), job("j1", "long", "w/j1"), batchjob("bj"))
    advance_to_runnable(site)
    launcher = launcher_on(site, cpus=2, seconds_left=300)
    runner, crashed = running_in_thread(launcher)
    wait_for("j1 running", lambda: jobs_of(site)["j1"].status.state == JobState.RUNNING)
    [sleeper] = [p for p in psutil.Process().children(recursive=True) if p.cmdline() == ["sleep", "120"]]

    refuse_writes(url, True)
    refused_at = time.time()
    try:
        sleeper.wait(timeout=LEASE_SEC * 3)
    except psutil.TimeoutExpired:
        sleeper.kill()
        pytest.fail("the Job ran on after its launcher could no longer renew its lease")
    stopped_at = time.time()
    runner.join(timeout=30)
    assert not runner.is_alive(), "the launcher did not end after fencing itself"
    assert crashed == [], f"the launcher crashed instead of fencing itself: {crashed}"

    # the store still reads: the last heartbeat that went through, and the Job as the launcher left it
    [row] = site.store.launchers_of(site.site_id, "bj")
    last_renewed = row["heartbeat_at"]
    assert last_renewed <= refused_at
    assert stopped_at < last_renewed + LEASE_SEC, (
        f"the Job was stopped {stopped_at - last_renewed:.1f} s after the last renewal, past the lease ({LEASE_SEC} s)"
    )
    assert jobs_of(site)["j1"].status.state == JobState.RUNNING  # its end could not be written: left to the controller
