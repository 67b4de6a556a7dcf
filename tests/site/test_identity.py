"""A site's identity: a UUID in its directory, its store and the registry; a name another site holds is refused
with nothing rewritten; a moved directory stays the same site; what a controller publishes."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from balsamctl.controller.publish import publish
from balsamctl.site import registry
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory, SiteError
from balsamctl.site.remote import RemoteSite
from balsamctl.store import Store
from balsamctl.store.rows import now
from balsamctl.store.sites import ACTIVE_SEC, SiteTaken
from balsamctl.store.tables import sites
from tests.support.site_ops import app, apply_raws, job


def use_registry(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Another person's registry (another machine's, in effect)."""
    monkeypatch.setenv("BALSAMCTL_CONFIG", str(path))


def test_a_new_site_has_one_identity_in_its_directory_its_store_and_the_registry(
    store_url: str, tmp_path: Path
) -> None:
    site = init_site(tmp_path / "a", "a", store_url=store_url)
    uuid = (site.path / ".balsam" / "uuid").read_text().strip()
    record = site.store.site_record("a")
    entry = registry.entry("a")
    assert entry is not None and entry.uuid == uuid == record.uuid == site.uuid
    assert record.path == str(site.path) and record.host == socket.gethostname() and record.owner
    assert len(uuid) == 36
    site.close()


def test_a_name_another_site_holds_in_the_store_is_refused_and_nothing_is_made_or_rewritten(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = init_site(tmp_path / "first", "shared", store_url=store_url)
    before = first.store.site_record("shared")
    apply_raws(first, app("hello", "echo hi"), job("j", "hello", "j"))
    use_registry(monkeypatch, tmp_path / "second.yaml")
    with pytest.raises(SiteError) as refused:
        init_site(tmp_path / "second", "shared", store_url=store_url)
    said = str(refused.value)
    assert before.owner is not None and before.owner in said and str(first.path) in said
    assert socket.gethostname() in said
    assert not (tmp_path / "second").exists()
    assert registry.entries() == []
    after = first.store.site_record("shared")
    assert (after.uuid, after.path, after.host, after.owner) == (before.uuid, before.path, before.host, before.owner)
    first.close()


def test_the_store_refuses_a_second_site_of_a_taken_name_even_past_the_check(store_url: str) -> None:
    store = Store(store_url)
    site_id = store.ensure_site("x", "/here/x", uuid="11111111-1111-1111-1111-111111111111", host="h1")
    with pytest.raises(SiteTaken, match="/here/x"):
        store.ensure_site("x", "/there/x", uuid="22222222-2222-2222-2222-222222222222", host="h2")
    with pytest.raises(SiteTaken):  # no UUID: identified by its path, which differs
        store.ensure_site("x", "/there/x")
    record = store.site_record("x")
    assert (record.id, record.path, record.host) == (site_id, "/here/x", "h1")
    store.close()


def test_a_moved_directory_is_the_same_site_with_its_objects(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a")
    apply_raws(site, app("hello", "echo hi"), job("j", "hello", "j"))
    site_id, uuid = site.site_id, site.uuid
    site.close()
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    moved = SiteDirectory.load(tmp_path / "b")
    assert (moved.site_id, moved.uuid) == (site_id, uuid)
    assert moved.store.site_record(site_id).path == str(moved.path)  # moved on its own host: the store follows
    assert moved.store.get_object(site_id, "Job", "j").name == "j"
    moved.close()


def test_a_site_made_before_identities_gets_one_and_its_store_adopts_it(tmp_path: Path) -> None:
    site = init_site(tmp_path / "old", "old")
    site_id = site.site_id
    with site.store.engine.begin() as conn:
        conn.execute(update(sites).values(uuid=None))
    site.close()
    (tmp_path / "old" / ".balsam" / "uuid").unlink()
    again = SiteDirectory.load(tmp_path / "old")
    assert again.site_id == site_id
    assert again.uuid is not None and again.store.site_record(site_id).uuid == again.uuid
    again.close()


def test_a_remote_site_reads_what_its_controller_published(store_url: str, tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a", scheduler="slurm", store_url=store_url)
    remote = RemoteSite("a", store_url, site.uuid)
    with pytest.raises(SiteError, match="has not published its settings yet"):
        _ = remote.settings
    publish(site)
    remote = RemoteSite("a", store_url, site.uuid)
    launcher = site.settings.launcher.model_copy(update={"python": sys.executable})  # the interpreter it runs
    assert remote.settings == site.settings.model_copy(update={"store_url": None, "launcher": launcher})
    assert remote.job_template == site.job_template
    assert (remote.site_id, remote.path, remote.host) == (site.site_id, site.path, socket.gethostname())
    record = remote.record
    assert record.active() and record.scheduler == "slurm" and record.platform == "generic-slurm"
    assert not record.active(now() + ACTIVE_SEC + 1)
    assert "store_url" not in (record.settings or {})
    remote.close()
    site.close()


def test_a_remote_site_that_is_not_there_or_is_another_site_now_is_an_error(store_url: str, tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a", store_url=store_url)
    with pytest.raises(SiteError, match="has no site of that name"):
        _ = RemoteSite("nope", store_url).site_id
    with pytest.raises(SiteError, match="another site now"):
        _ = RemoteSite("a", store_url, "33333333-3333-3333-3333-333333333333").site_id
    site.close()


def test_a_remote_sites_files_are_read_only_where_its_directory_is(store_url: str, tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a", store_url=store_url)
    remote = RemoteSite("a", store_url, site.uuid)
    assert remote.workdir("j/1") == site.workdir("j/1")  # a shared file system: the same site, by its UUID
    site.close()
    shutil.rmtree(tmp_path / "a")  # as seen from another machine
    remote = RemoteSite("a", store_url, site.uuid)
    with pytest.raises(SiteError, match="cannot be read here"):
        remote.workdir("j/1")
    remote.close()


def test_a_refused_site_init_into_an_existing_directory_leaves_it_as_it_was(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_site(tmp_path / "first", "shared", store_url=store_url).close()
    use_registry(monkeypatch, tmp_path / "second.yaml")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(SiteError, match="already exists"):
        init_site(tmp_path / "mine", "shared", store_url=store_url)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_a_site_name_of_digits_alone_is_refused_it_would_read_as_an_id(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match="not digits alone"):
        init_site(tmp_path / "12", "12")
    assert not (tmp_path / "12").exists()
