"""A controller on a PostgreSQL site is woken by a write for its site from anywhere: the writer (another host's CLI)
cannot touch its wake-up file, only the store. Its timers here are an hour long: a Job that moves within seconds was
moved by the push."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsamctl.schemas import JobState
from balsamctl.site.directory import SiteDirectory
from tests.support.launcher_ops import wait_for
from tests.support.push import pg_site
from tests.support.store_ops import add, app_doc, job_doc, state_of

HOUR = 3600.0
CONTROLLER = """\
import sys
from pathlib import Path
from balsamctl.controller import loop
from balsamctl.site.directory import SiteDirectory
loop.JOB_PERIOD_SEC = loop.MANIFEST_RESYNC_SEC = float(sys.argv[2])
loop.Controller(SiteDirectory.load(Path(sys.argv[1]))).run()
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteDirectory]:
    with pg_site(tmp_path, "push", {"sync_period_sec": HOUR}) as made:
        yield made


def test_a_controller_moves_a_job_on_when_the_store_says_its_site_was_written(site: SiteDirectory) -> None:
    store, sid = site.store, site.site_id
    add(store, sid, [app_doc(), job_doc("first")])  # through the store alone: no wake-up file touched
    controller = subprocess.Popen([sys.executable, "-c", CONTROLLER, str(site.path), str(HOUR)])
    try:
        wait_for("the controller's first pass", lambda: state_of(store, sid, "first") == JobState.PREPROCESSED)
        time.sleep(1.0)  # the pass after it, which finds nothing to move, is over

        add(store, sid, [job_doc("second")])
        time.sleep(1.5)
        assert state_of(store, sid, "second") == JobState.CREATED, "no timer is due for an hour, nothing woke it"

        written = time.monotonic()
        store.notify_site(sid)
        wait_for("the pushed pass", lambda: state_of(store, sid, "second") == JobState.PREPROCESSED, timeout=10)
        assert time.monotonic() - written < 2.0, "moved on at once, not at its next timer"
    finally:
        controller.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert controller.wait(timeout=30) == 0
    assert time.monotonic() - stopped < 5.0, "its listener stops with it"
