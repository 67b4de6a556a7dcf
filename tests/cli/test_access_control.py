"""Access control on a shared PostgreSQL store through the command line: ``store init`` by the database's owner,
``site grant`` / ``site revoke`` by a site's owner, and what another person's ``balsamctl`` may then do with the
site; bad input said in one line, changing nothing.

Role A makes site ``alpha`` in the store (``site init --store``); role B, with a registry of its own, reaches it by
``site add alpha --store`` (its own URL), or through a copy of its directory whose settings name B's URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from balsamctl.cli import app as cli
from balsamctl.controller.publish import publish
from balsamctl.site.directory import SiteDirectory
from tests.support.shared_store import Shared, dump, shared_store

runner = CliRunner()

MANIFEST = """\
apiVersion: balsam/v1
kind: App
metadata: {name: hello}
spec: {command: "echo hi"}
---
apiVersion: balsam/v1
kind: Job
metadata: {name: hello-1}
spec: {app: hello, workdir: hello/1}
"""
FROM_B = """\
apiVersion: balsam/v1
kind: Job
metadata: {name: from-b}
spec: {app: hello, workdir: hello/b}
"""


@dataclass
class Person:
    """One role's ``balsamctl``: its registry and its URL of the shared store."""

    role: str
    url: str
    registry: Path

    def __call__(self, *args: str, code: int = 0) -> Result:
        """``balsamctl ARGS`` as this person; its exit code checked."""
        result = runner.invoke(cli.app, list(args), env={"BALSAMCTL_CONFIG": str(self.registry)})
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result


@dataclass
class World:
    shared: Shared
    a: Person
    b: Person
    site: Path
    """A's site ``alpha``: its directory."""
    manifests: Path


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A's site ``alpha`` with an App and a Job, published (as its controller does), in a store shared with B."""
    monkeypatch.delenv("BALSAM_SITE", raising=False)
    with shared_store(tmp_path) as shared:
        a, b = (Person(r, shared.url(r), tmp_path / f"{r}.yaml") for r in shared.roles)
        path = tmp_path / "alpha"
        a("site", "init", str(path), "--store", a.url)
        (tmp_path / "m.yaml").write_text(MANIFEST)
        (tmp_path / "b.yaml").write_text(FROM_B)
        a("apply", "--site", "alpha", "-f", str(tmp_path / "m.yaml"))
        site = SiteDirectory.load(path)
        publish(site)
        site.close()
        yield World(shared, a, b, path, tmp_path)


def test_store_init_says_what_it_did_and_again(tmp_path: Path) -> None:
    assert "store  " in runner.invoke(cli.app, ["--help"]).stdout
    with shared_store(tmp_path, prepare=False) as shared:
        owner = Person("postgres", shared.owner_url, tmp_path / "owner.yaml")
        first = owner("store", "init", shared.owner_url, "--grant-to", shared.roles[0]).stdout.splitlines()
        assert first[0].endswith("(created)")
        assert first[1] == "row-level security on events, labels, launchers, objects, parents, site_grants, sites"
        assert first[2].startswith(f"granted to {shared.roles[0]}: USAGE on schema public; SELECT, INSERT, UPDATE")
        again = owner("store", "init", shared.owner_url).stdout.splitlines()
        assert again[0].endswith("(already)") and again[2].startswith("granted to PUBLIC:")


def test_store_init_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    with shared_store(tmp_path, prepare=False) as shared:
        owner = Person("postgres", shared.owner_url, tmp_path / "owner.yaml")
        refused = owner("store", "init", shared.owner_url, "--grant-to", "nobody_balsam_t", code=1)
        assert refused.stderr == "error: no role 'nobody_balsam_t' on this server: create it first (CREATE ROLE)\n"
        with shared.sql() as conn:
            assert conn.execute("SELECT to_regclass('sites')").fetchone() == (None,)  # nothing made
        unreachable = owner("store", "init", "postgresql+psycopg://me:secret@127.0.0.1:1/db", code=1)
        assert unreachable.stderr.startswith("error: the store postgresql+psycopg://me:***@127.0.0.1:1/db: ")
        assert "Connection refused" in unreachable.stderr and "secret" not in unreachable.stderr
        assert len(unreachable.stderr.splitlines()) == 1
        stranger = owner("store", "init", shared.url("nobody_balsam_t"), code=1)
        assert 'role "nobody_balsam_t" does not exist' in stranger.stderr
        lite = owner("store", "init", f"sqlite:///{tmp_path / 's.db'}", code=1)
        assert "SQLite" in lite.stderr and not (tmp_path / "s.db").exists()


def test_without_a_grant_another_role_cannot_reach_the_site(world: World) -> None:
    a, b = world.a, world.b
    before = dump(world.shared)
    refused = b("site", "add", "alpha", "--store", b.url, code=1)
    assert "has no site of that name (or this role may not see it)" in refused.stderr
    taken = b("site", "init", str(world.manifests / "mine"), "--name", "alpha", "--store", b.url, code=1)
    assert "a site named 'alpha' already exists in this store, owned by another role" in taken.stderr
    assert not (world.manifests / "mine").exists()
    assert "no site named 'alpha' is registered" in b("site", "grant", "alpha", b.role, "--write", code=1).stderr
    assert dump(world.shared) == before
    assert "hello-1" in a("get", "jobs", "--site", "alpha").stdout


def test_without_a_grant_a_copy_of_the_sites_directory_reaches_nothing(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B holds a copy of A's directory with B's URL in its settings: every verb is refused, nothing changes."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("settings.yml", "job-template.sh", ".balsam"):
        source = world.site / name
        target = copy / name
        if source.is_dir():
            target.mkdir()
            (target / "uuid").write_text((source / "uuid").read_text())
        else:
            target.write_text(source.read_text())
    settings = yaml.safe_load((copy / "settings.yml").read_text())
    (copy / "settings.yml").write_text(yaml.safe_dump({**settings, "store_url": world.b.url}))
    monkeypatch.chdir(copy)
    before = dump(world.shared)
    for args in (
        ("get", "jobs"),
        ("describe", "job", "hello-1"),
        ("apply", "-f", str(world.manifests / "b.yaml")),
        ("rerun", "jobs", "hello-1", "--state", "CREATED"),
        ("delete", "job", "hello-1"),
    ):
        refused = world.b(*args, code=1)
        assert "error: a site named 'alpha' already exists in this store, owned by another role" in refused.stderr
    assert dump(world.shared) == before


def test_a_read_grant_lets_get_and_describe_but_not_write(world: World) -> None:
    a, b = world.a, world.b
    assert a("site", "grant", "alpha", b.role, "--read").stdout == f"site/alpha: read access granted to role {b.role}\n"
    b("site", "add", "alpha", "--store", b.url)
    assert "hello-1" in b("get", "jobs", "--site", "alpha").stdout
    assert "Name:" in b("describe", "job", "hello-1", "--site", "alpha").stdout
    before = dump(world.shared)
    applied = b("apply", "--site", "alpha", "-f", str(world.manifests / "b.yaml"), code=1)
    assert f"error: role {b.role} may not do that in this store: new row violates row-level security" in applied.stderr
    deleted = b("delete", "job", "hello-1", "--site", "alpha", code=1)
    assert "row-level security" in deleted.stderr
    granted = b("site", "grant", "alpha", b.role, "--write", code=1)
    owner_only = f"error: only the owner of site alpha ({a.role}) may grant access to it, not role {b.role}\n"
    assert granted.stderr == owner_only
    assert "may revoke" in b("site", "revoke", "alpha", b.role, code=1).stderr
    assert dump(world.shared) == before


def test_a_write_grant_lets_apply_and_revoke_takes_it_back(world: World) -> None:
    a, b = world.a, world.b
    a("site", "grant", "alpha", b.role, "--read")
    changed = a("site", "grant", "alpha", b.role, "--write").stdout
    assert changed == f"site/alpha: write access changed from read to role {b.role}\n"
    b("site", "add", "alpha", "--store", b.url)
    assert b("apply", "--site", "alpha", "-f", str(world.manifests / "b.yaml")).stdout == "job/from-b created\n"
    assert "from-b" in a("get", "jobs", "--site", "alpha").stdout
    purged = b("site", "rm", "alpha", "--purge", code=1)  # a write grant is not ownership: nothing removed
    assert "only the owner of site alpha" in purged.stderr or "does not own it" in purged.stderr, purged.stderr
    assert "hello-1" in a("get", "jobs", "--site", "alpha").stdout
    assert a("site", "revoke", "alpha", b.role).stdout == f"site/alpha: access of role {b.role} revoked\n"
    assert a("site", "revoke", "alpha", b.role).stdout == f"site/alpha: role {b.role} had no grant\n"
    gone = b("get", "jobs", "--site", "alpha", code=1)
    assert "has no site of that name (or this role may not see it)" in gone.stderr


def test_site_grant_refuses_bad_input(world: World) -> None:
    a, b = world.a, world.b
    before = dump(world.shared)
    assert "no role 'nobody_balsam_t'" in a("site", "grant", "alpha", "nobody_balsam_t", "--read", code=1).stderr
    assert "give one of --read or --write" in a("site", "grant", "alpha", b.role, code=2).stderr
    assert "give one of --read or --write" in a("site", "grant", "alpha", b.role, "--read", "--write", code=2).stderr
    assert "no site named 'nosuch' is registered" in a("site", "grant", "nosuch", b.role, "--read", code=1).stderr
    assert f"role {a.role} owns site alpha" in a("site", "grant", "alpha", a.role, "--read", code=1).stderr
    assert dump(world.shared) == before


def test_the_balsam_api_as_another_role_reads_with_a_read_grant_and_writes_with_a_write_grant(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from balsam import api

    a, b = world.a, world.b
    monkeypatch.setattr(api, "_OPEN", {})  # the API's open sites, for this test's stores only
    monkeypatch.setenv("BALSAMCTL_CONFIG", str(b.registry))
    assert list(api.Job.objects.all()) == []
    a("site", "grant", "alpha", b.role, "--read")
    b("site", "add", "alpha", "--store", b.url)
    assert [j.name for j in api.Job.objects.filter(site_name="alpha")] == ["hello-1"]
    before = dump(world.shared)
    with pytest.raises(PermissionError, match="row-level security"):
        api.Job.objects.create(site_name="alpha", app_id="hello", workdir="api/1")
    with pytest.raises(PermissionError, match="row-level security"):
        api.Job.objects.filter(site_name="alpha").delete()
    assert dump(world.shared) == before
    a("site", "grant", "alpha", b.role, "--write")
    made = api.Job.objects.create(site_name="alpha", app_id="hello", workdir="api/1")
    assert made.name in a("get", "jobs", "--site", "alpha").stdout
