"""Push wake-ups through a PostgreSQL store: a write for a site reaches a listener on another connection (another
host's controller) at once; Jobs made runnable tell the site's launchers once per transaction; a listener outlives
the loss of its connection and never raises; SQLite has no push (and needs none: one file system)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from balsamctl.schemas import JobState as S
from balsamctl.store import Listener, RunResult, RunStart, Store, Transition, runnable_channel, site_channel, sqlite_url
from balsamctl.store.notify import APPLICATION_NAME, NO_PUSH_VAR
from tests.support.databases import Databases, pg_server_url
from tests.support.push import Tap
from tests.support.store_ops import TO_RUNNABLE, add, app_doc, job_doc, register

SOON = 1.0  # a notification arrives within this (milliseconds, in fact)


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database."""
    dbs = Databases("postgresql", pg_server_url())
    with dbs.fresh(tmp_path) as url:
        yield url
    dbs.close()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    s = Store(pg_url)
    yield s
    s.close()


def listener_on(store: Store, *channels: str) -> Listener:
    listener = store.listen(*channels)
    assert listener is not None, "a PostgreSQL store listens"
    return listener


def test_notify_site_wakes_a_listener_on_that_site_at_once_and_only_it(pg_store: Store) -> None:
    here, there = pg_store.ensure_site("here", "/h"), pg_store.ensure_site("there", "/t")
    listener = listener_on(pg_store, site_channel(here))
    try:
        assert not listener.wait(0.1), "nothing was sent yet"
        t0 = time.monotonic()
        pg_store.notify_site(here)
        assert listener.wait(10)
        assert time.monotonic() - t0 < SOON
        pg_store.notify_site(here)
        pg_store.notify_site(here)
        time.sleep(0.2)
        assert listener.wait(0.1), "both came"
        assert not listener.wait(0.3), "a wait takes every notification waiting: the next one waits for new ones"
        pg_store.notify_site(there)
        assert not listener.wait(0.3), "another site's write wakes another controller"
    finally:
        listener.close()


def test_a_listener_outlives_the_end_of_its_session_and_says_so(
    pg_store: Store, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sid = pg_store.ensure_site("here", "/h")
    listener = listener_on(pg_store, site_channel(sid))
    try:
        admin = create_engine(make_url(pg_url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:  # as a DBA, a failover or a server restart would
            ended = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = :name"
                ),
                {"name": APPLICATION_NAME},
            ).all()
        admin.dispose()
        assert len(ended) == 1
        with caplog.at_level(logging.INFO, logger="balsamctl.store.notify"):
            assert listener.wait(10), "back: what was sent while it was away is lost, so its loop looks for itself"
        assert listener.reconnects == 1
        assert "lost its connection" in caplog.text and "connected to the store again" in caplog.text
        t0 = time.monotonic()
        pg_store.notify_site(sid)
        assert listener.wait(10)
        assert time.monotonic() - t0 < SOON
    finally:
        listener.close()


def test_a_listener_whose_store_is_away_waits_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="balsamctl.store.notify"):
        listener = Listener("postgresql://nobody@127.0.0.1:1/none", [site_channel(1)])
        try:
            t0 = time.monotonic()
            assert not listener.wait(0.3)
            assert not listener.wait(0.3)
            assert 0.5 < time.monotonic() - t0 < 3
        finally:
            listener.close()
    assert caplog.text.count("cannot connect to the store") == 1, "said once, not at every try"


def test_close_ends_a_listening_thread_at_once(pg_store: Store) -> None:
    sid = pg_store.ensure_site("here", "/h")
    listener = listener_on(pg_store, site_channel(sid))
    woken = threading.Event()
    listener.start(woken.set, "push-test")
    pg_store.notify_site(sid)
    assert woken.wait(10)
    t0 = time.monotonic()
    listener.close()
    assert time.monotonic() - t0 < SOON, "a stop does not wait for the thread's tick"
    assert not [t for t in threading.enumerate() if t.name == "push-test"]


def test_jobs_made_runnable_notify_the_launchers_once_per_transaction(pg_store: Store, pg_url: str) -> None:
    sid = pg_store.ensure_site("here", "/h")
    add(pg_store, sid, [app_doc(), *(job_doc(f"j{i}") for i in range(4))])
    tap = Tap(pg_url, runnable_channel(sid))
    try:
        for src, dst in TO_RUNNABLE[:-1]:
            pg_store.advance(sid, src, dst, reason="test")
        assert tap.heard() == 0, "nothing runnable yet"
        assert pg_store.advance(sid, S.STAGED_IN, S.PREPROCESSED, reason="test") == 4
        assert tap.heard() == 1, "four Jobs, one transaction: one notification"
        assert pg_store.advance(sid, S.STAGED_IN, S.PREPROCESSED, reason="test") == 0
        assert tap.heard() == 0, "nothing moved"

        register(pg_store, sid, "l1")
        claimed = pg_store.claim(sid, owner="l1", batch_job="bj", filter_tags={}, limit=4)
        assert tap.heard() == 0, "a claim makes nothing runnable"
        assert pg_store.unclaim(sid, "l1", [claimed[0].id]) == 1
        assert tap.heard() == 1, "a Job handed back is there for the taking"
        assert pg_store.unclaim(sid, "l1", [claimed[0].id]) == 0
        assert tap.heard() == 0, "nothing handed back"

        assert len(pg_store.record(sid, owner="l1", started=[RunStart(r) for r in claimed[1:]])) == 3
        assert tap.heard() == 0
        done = RunResult(claimed[1].id, claimed[1].name, S.RUN_DONE, return_code=0)
        pg_store.record(sid, owner="l1", results=[done])
        assert tap.heard() == 0, "an ended run is not runnable"
        start_failed = [RunResult(r.id, r.name, S.RESTART_READY, reason="StartFailed") for r in claimed[2:]]
        pg_store.record(sid, owner="l1", results=start_failed)
        assert tap.heard() == 1, "two starts the node failed: runnable again, one notification"
    finally:
        tap.close()


def test_retries_notify_the_launchers_and_other_transitions_do_not(pg_store: Store, pg_url: str) -> None:
    sid = pg_store.ensure_site("here", "/h")
    add(pg_store, sid, [app_doc(), *(job_doc(f"j{i}") for i in range(3))])
    for src, dst in TO_RUNNABLE:
        pg_store.advance(sid, src, dst, reason="test")
    register(pg_store, sid, "l1")
    refs = pg_store.claim(sid, owner="l1", batch_job="bj", filter_tags={}, limit=3)
    errors = [RunResult(r.id, r.name, S.RUN_ERROR, return_code=1) for r in refs]
    pg_store.record(sid, owner="l1", started=[RunStart(r) for r in refs], results=errors)
    a, b, c = (r.id for r in refs)
    tap = Tap(pg_url, runnable_channel(sid))
    try:
        assert pg_store.transition(sid, [Transition(a, S.RUN_ERROR, S.FAILED, "HandleError")]) == 1
        assert tap.heard() == 0, "FAILED is not runnable"
        assert pg_store.rerun(sid, [a]) == 1
        assert tap.heard() == 0, "a rerun is READY: the controller stages it in, and that notifies"
        retries = [Transition(j, S.RUN_ERROR, S.RESTART_READY, "HandleError") for j in (b, c)]
        assert pg_store.transition(sid, retries) == 2
        assert tap.heard() == 1, "two retries, one transaction: one notification"
    finally:
        tap.close()


def test_sqlite_has_no_push_and_needs_none(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path / "store.db"))
    try:
        sid = store.ensure_site("here", "/h")
        assert store.listen(site_channel(sid), runnable_channel(sid)) is None
        store.notify_site(sid)  # the CLI may call it whatever the store: it does nothing
    finally:
        store.close()


def test_no_push_when_the_environment_says_so(pg_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NO_PUSH_VAR, "1")
    assert pg_store.listen(site_channel(1)) is None
