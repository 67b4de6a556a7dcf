"""``balsamctl site add|mv|rm --purge`` and ``get sites``: sites known by their store, moved, forgotten, listed."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from sqlalchemy import update

from balsamctl.controller.publish import publish
from balsamctl.site import registry
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Selector, Store
from balsamctl.store.tables import sites
from tests.cli.conftest import NOW, Caller
from tests.support.site_ops import app, apply_raws, job


def other_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Another machine's registry and working directory."""
    monkeypatch.setenv("BALSAMCTL_CONFIG", str(tmp_path / "elsewhere.yaml"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def shared(store_url: str, tmp_path: Path) -> SiteDirectory:
    """A site in the shared store of ``store_url``, its controller having published it, with two Jobs."""
    site = init_site(tmp_path / "home" / "shared", "shared", store_url=store_url)
    apply_raws(site, app("hello", "echo hi"), job("j1", "hello", "w1"), job("j2", "hello", "w2"))
    publish(site)
    with site.store.engine.begin() as conn:  # alive as of the clock the CLI calls see
        conn.execute(update(sites).values(heartbeat_at=NOW))
    return site


def test_site_add_registers_a_site_by_its_store_and_every_listing_reaches_it(
    shared: SiteDirectory, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Caller
) -> None:
    other_machine(monkeypatch, tmp_path)
    added = call("site", "add", "shared", "--store", store_url)
    assert added.code == 0, added.err
    assert f"id {shared.site_id}" in added.out and str(shared.path) in added.out
    entry = registry.entry("shared")
    assert entry is not None and (entry.path, entry.store, entry.uuid) == (None, store_url, shared.uuid)
    for ref in ("shared", str(shared.site_id), "all", "active"):
        listed = call("get", "jobs", "--site", ref, "-o", "name")
        assert listed.code == 0, listed.err
        assert listed.out.split() in (["job/j1", "job/j2"], ["shared/job/j1", "shared/job/j2"])
    sites = call("get", "sites", "-o", "json")
    (row,) = json.loads(sites.out)["items"]
    assert row["name"] == "shared" and row["id"] == shared.site_id and row["active"] is True
    assert row["host"] == socket.gethostname() and row["scheduler"] == "local" and row["uuid"] == shared.uuid
    assert row["jobs"] == {"CREATED": 2} and row["batchjobs"] == {}
    table = call("get", "sites")
    assert table.out.split("\n")[0].split() == [
        "NAME", "ID", "HOST", "SCHEDULER", "ACTIVE", "JOBS", "BATCHJOBS", "UNSTARTED"
    ]  # fmt: skip
    assert "CREATED=2" in table.out and " yes " in table.out


def test_site_add_of_a_site_the_store_lacks_or_a_store_out_of_reach_changes_nothing(
    shared: SiteDirectory, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Caller
) -> None:
    other_machine(monkeypatch, tmp_path)
    missing = call("site", "add", "nope", "--store", store_url)
    assert missing.code == 1 and "has no site of that name" in missing.err
    closed = call("site", "add", "shared", "--store", "postgresql+psycopg://someone:secret@127.0.0.1:1/none")
    assert closed.code == 1 and "cannot open its store" in closed.err and "secret" not in closed.err
    assert registry.entries() == []


def test_an_inactive_site_is_not_active(
    shared: SiteDirectory, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Caller
) -> None:
    with shared.store.engine.begin() as conn:
        conn.execute(update(sites).values(heartbeat_at=0.0))
    other_machine(monkeypatch, tmp_path)
    assert call("site", "add", "shared", "--store", store_url).code == 0
    assert call("get", "jobs", "--site", "active", "-o", "name").out == ""
    assert " no " in call("get", "sites").out


def test_site_mv_moves_the_directory_and_it_stays_the_same_site(tmp_path: Path, call: Caller) -> None:
    site = init_site(tmp_path / "a", "a")
    apply_raws(site, app("hello", "echo hi"), job("j1", "hello", "w1"))
    site_id, uuid = site.site_id, site.uuid
    site.close()
    moved = call("site", "mv", "a", str(tmp_path / "b"))
    assert moved.code == 0, moved.err
    assert not (tmp_path / "a").exists() and (tmp_path / "b" / ".balsam" / "uuid").read_text().strip() == uuid
    entry = registry.entry("a")
    assert entry is not None and entry.path == (tmp_path / "b").resolve()
    assert call("get", "jobs", "--site", "a", "-o", "name").out == "job/j1\n"
    shutil.move(str(tmp_path / "b"), str(tmp_path / "c"))  # moved by hand: site mv records it
    assert call("site", "mv", "a", str(tmp_path / "c")).code == 0
    store = Store(f"sqlite:///{tmp_path / 'c' / '.balsam' / 'store.db'}")
    assert store.site_record(site_id).path == str((tmp_path / "c").resolve())
    store.close()
    init_site(tmp_path / "d", "d").close()
    refused = call("site", "mv", "a", str(tmp_path / "d"))
    assert refused.code == 1 and "another site" in refused.err


def test_site_rm_purge_removes_a_site_and_what_it_holds_from_its_store(
    shared: SiteDirectory, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Caller
) -> None:
    site_id = shared.site_id
    shared.close()
    shutil.rmtree(shared.path)  # its directory is gone
    other_machine(monkeypatch, tmp_path)
    assert call("site", "add", "shared", "--store", store_url).code == 0
    with Store(store_url).engine.begin() as conn:  # its controller stopped long ago
        conn.execute(update(sites).values(heartbeat_at=0.0))
    purged = call("site", "rm", "shared", "--purge")
    assert purged.code == 0, purged.err
    store = Store(store_url)
    assert [r.id for r in store.site_records()] == []
    assert store.count_objects(Selector("Job", (site_id,))) == 0
    store.close()
    assert registry.entries() == []


def test_site_add_of_a_sqlite_file_that_is_not_there_makes_no_store(tmp_path: Path, call: Caller) -> None:
    missing = tmp_path / "nothing.db"
    added = call("site", "add", "x", "--store", f"sqlite:///{missing}")
    assert added.code == 1 and "does not exist" in added.err
    assert not missing.exists() and registry.entries() == []


def test_an_id_two_registered_sites_share_is_refused_by_name(tmp_path: Path, call: Caller) -> None:
    for name in ("a", "b"):
        init_site(tmp_path / name, name).close()
    rows = registry.entries()
    registry.add(registry.Entry("b", rows[1].path, rows[0].id, rows[1].uuid))  # two stores, the same id
    refused = call("get", "jobs", "--site", str(rows[0].id))
    assert refused.code == 1 and "ambiguous" in refused.err and "sites a, b" in refused.err
