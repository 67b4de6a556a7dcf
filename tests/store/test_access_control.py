"""Access control on a shared PostgreSQL store, enforced by the database: a role sees and changes only the sites
it owns, unless their owner grants it read or write access; through the Store API and through raw SQL alike.

Every test runs on the real server of ``BALSAMCTL_TEST_PG_URL`` with LOGIN roles of its own (tests/support/
shared_store.py): role A (``a``) owns a site with Jobs, role B (``b``) is the other person.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from balsamctl.schemas import JobState as S
from balsamctl.store import NotFound, RunResult, RunStart, Selector, Store, sqlite_url
from balsamctl.store.access import grant, grants, init_store, revoke
from balsamctl.store.engine import AccessDenied
from balsamctl.store.migrations import SCRIPTS, head_revision
from balsamctl.store.sites import SiteTaken
from tests.support.shared_store import TABLES, Owned, Shared, dump, login_roles, owned_site, shared_store
from tests.support.store_ops import add, job_doc, make_runnable, state_of, stored_job


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Shared]:
    with shared_store(tmp_path) as s:
        yield s


@pytest.fixture
def a(shared: Shared) -> Iterator[Store]:
    store = Store(shared.url(shared.roles[0]))
    yield store
    store.close()


@pytest.fixture
def b(shared: Shared) -> Iterator[Store]:
    store = Store(shared.url(shared.roles[1]))
    yield store
    store.close()


@pytest.fixture
def site(shared: Shared) -> Owned:
    """Role A's site, with Jobs, events and a launcher."""
    return owned_site(shared.url(shared.roles[0]))


def job_names(store: Store, site_id: int) -> list[str]:
    return [o.name for o in store.list_objects(Selector("Job", (site_id,)))]


# ---------------------------------------------------------------- store init


def test_store_init_prepares_every_table_and_is_idempotent(shared: Shared) -> None:
    again = init_store(shared.owner_url, [])
    assert again[0].endswith(f"schema revision {head_revision()} (already)")
    assert again[1] == f"row-level security on {', '.join(sorted(TABLES))}"
    assert "granted to PUBLIC" in again[2]
    with shared.sql(shared.roles[1]) as conn:
        for table in TABLES:
            rights = conn.execute(
                "SELECT has_table_privilege(%s, 'SELECT'), has_table_privilege(%s, 'DELETE'), "
                "has_table_privilege(%s, 'TRUNCATE')",
                (table, table, table),
            ).fetchone()
            assert rights == (True, True, False), table  # never TRUNCATE: row-level security does not see it
        assert conn.execute(
            "SELECT has_table_privilege('alembic_version', 'SELECT'), has_table_privilege('alembic_version', 'UPDATE')"
        ).fetchone() == (True, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE objects")


def test_store_init_grants_only_the_roles_named(tmp_path: Path) -> None:
    with shared_store(tmp_path, roles=3, prepare=False) as shared:
        said = init_store(shared.owner_url, shared.roles[:2])
        assert f"granted to {shared.roles[0]}, {shared.roles[1]}:" in said[2]
        owned_site(shared.url(shared.roles[1]))
        with pytest.raises(AccessDenied, match="ask its owner to run `balsamctl store init") as refused:
            Store(shared.url(shared.roles[2]))
        assert "schema revision none this role can read" in str(refused.value)


def test_store_init_refuses_bad_input_and_changes_nothing(tmp_path: Path, shared: Shared) -> None:
    with pytest.raises(ValueError, match="SQLite"):
        init_store(sqlite_url(tmp_path / "s.db"), [])
    assert not (tmp_path / "s.db").exists()
    before = dump(shared)
    with pytest.raises(ValueError, match="no role 'nobody_balsam_t'"):
        init_store(shared.owner_url, [shared.roles[0], "nobody_balsam_t"])
    with pytest.raises(AccessDenied, match=f"store init is for the owner of the store's tables .* {shared.roles[1]}"):
        init_store(shared.url(shared.roles[1]), [])
    assert dump(shared) == before
    with pytest.raises(OperationalError, match="Connection refused"):
        init_store("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", [])


def test_a_new_database_stays_empty_when_store_init_is_refused(tmp_path: Path) -> None:
    with shared_store(tmp_path, prepare=False) as shared:
        with pytest.raises(ValueError, match="no role"):
            init_store(shared.owner_url, ["nobody_balsam_t"])
        with shared.sql() as conn:
            assert conn.execute("SELECT to_regclass('sites'), to_regclass('alembic_version')").fetchone() == (
                None,
                None,
            )


def test_a_role_that_may_not_migrate_an_older_store_is_told_to_ask_its_owner(tmp_path: Path) -> None:
    with shared_store(tmp_path, prepare=False) as shared:
        owner = create_engine(shared.owner_url, poolclass=NullPool)
        with owner.begin() as conn:  # a store an older balsamctl made and shared
            config = Config()
            config.set_main_option("script_location", str(SCRIPTS))
            config.attributes["connection"] = conn
            command.upgrade(config, "0004")
            conn.execute(text("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO PUBLIC"))
        with pytest.raises(AccessDenied) as refused:
            Store(shared.url(shared.roles[0]))
        message = str(refused.value)
        assert "is at schema revision 0004" in message
        assert f"balsamctl needs {head_revision()}: role {shared.roles[0]} may not migrate it" in message
        assert "ask its owner to run `balsamctl store init postgresql+psycopg://OWNER@127.0.0.1:" in message
        with owner.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
        owner.dispose()


# ---------------------------------------------------------------- without a grant


def test_without_a_grant_raw_sql_sees_and_changes_nothing_of_another_roles_site(shared: Shared, site: Owned) -> None:
    before = dump(shared)
    other, obj = site.site_id, site.object_ids[1]
    with shared.sql(shared.roles[1]) as conn:
        for table in TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        for statement in (
            "UPDATE sites SET owner = current_user, path = '/stolen'",
            "UPDATE objects SET state = 'READY', owner = NULL",
            "UPDATE labels SET value = 'x'",
            "UPDATE events SET message = 'x'",
            "UPDATE launchers SET ended_at = 1",
            "DELETE FROM parents",
            "DELETE FROM labels",
            "DELETE FROM events",
            "DELETE FROM launchers",
            "DELETE FROM objects",
            "DELETE FROM site_grants",
            "DELETE FROM sites",
        ):
            assert conn.execute(statement).rowcount == 0, statement
        for statement, values in (
            (
                "INSERT INTO objects (site_id, kind, name, uid, generation, resource_version, spec, labels, "
                "annotations, status, created_at, updated_at, attempts) VALUES (%s, 'App', 'x', 'u', 1, 1, '{}', '{}',"
                " '{}', '{}', 0, 0, 0)",
                (other,),
            ),
            ("INSERT INTO labels (object_id, key, value) VALUES (%s, 'k2', 'v')", (obj,)),
            ("INSERT INTO parents (child_id, parent_id) VALUES (%s, %s)", (obj, site.object_ids[0])),
            (
                "INSERT INTO events (site_id, kind, name, time, reason, message) VALUES (%s, 'Job', 'j', 0, 'r', 'm')",
                (other,),
            ),
            (
                "INSERT INTO launchers (id, site_id, batch_job, partition, job_mode, host, pid, nodes, started_at, "
                "heartbeat_at, status) VALUES ('l9', %s, 'bj', 0, 'mpi', 'h', 1, '[]', 0, 0, '{}')",
                (other,),
            ),
            (
                "INSERT INTO site_grants (site_id, role, access, granted_at) VALUES (%s, current_user, 'write', 0)",
                (other,),
            ),
            ("INSERT INTO sites (name, path, created_at, owner) VALUES ('beta', '/b', 0, %s)", (shared.roles[0],)),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                conn.execute(statement, values)
        # the policies' function answers a session only for a role it can act as
        assert conn.execute("SELECT balsam_granted_sites('read', %s)", (shared.roles[0],)).fetchone() == ([],)
    assert dump(shared) == before


def test_without_a_grant_the_store_api_finds_nothing_and_changes_nothing(shared: Shared, site: Owned, b: Store) -> None:
    before = dump(shared)
    other = site.site_id
    assert b.sites() == [] and b.site_records() == []
    with pytest.raises(NotFound):
        b.site_record("alpha")
    assert job_names(b, other) == []
    with pytest.raises(NotFound):
        b.get_object(other, "Job", "j0")
    assert b.events((other,)) == []
    with pytest.raises(AccessDenied, match="row-level security"):
        add(b, other, [job_doc("intruder")])
    with pytest.raises(AccessDenied):
        b.record_event(other, "Job", "j0", "Forged", "forged")
    assert b.rerun(other, site.object_ids) == 0
    assert {r.action for r in b.delete(other, [("Job", "j0"), ("Job", "j1"), ("App", "sim")])} == {"not found"}
    assert b.claim(other, owner="l9", batch_job="bj", filter_tags={}, limit=10) == []
    b.publish_site(other, host="h", path="/p", scheduler="local", platform=None, settings={}, job_template=None)
    with pytest.raises(NotFound):
        b.remove_site(other)
    with pytest.raises(NotFound):
        grant(b, other, shared.roles[1], "write")
    assert dump(shared) == before


def test_a_site_name_another_role_holds_is_taken_and_nothing_is_written(
    shared: Shared, site: Owned, a: Store, b: Store
) -> None:
    before = dump(shared)
    with pytest.raises(SiteTaken, match="a site named 'alpha' already exists in this store, owned by another role"):
        b.ensure_site("alpha", "/elsewhere")
    assert dump(shared) == before
    assert a.ensure_site("far", "/far", preferred_id=100) == 100
    assert b.ensure_site("beta", "/beta", preferred_id=site.site_id) not in (site.site_id, 100)  # held, unseen
    assert b.ensure_site("mid", "/mid", preferred_id=60) == 60
    assert a.ensure_site("gamma", "/gamma") > 100  # B's id did not move the sequence back below A's
    assert sorted(s["name"] for s in b.sites()) == ["beta", "mid"]


# ---------------------------------------------------------------- grants


def test_a_read_grant_lets_read_and_nothing_more(shared: Shared, site: Owned, a: Store, b: Store) -> None:
    role_b = shared.roles[1]
    assert grant(a, site.site_id, role_b, "read") == "granted"
    assert grant(a, site.site_id, role_b, "read") == "unchanged"
    assert [(g.role, g.access) for g in grants(a, site.site_id)] == [(role_b, "read")]
    assert [(g.role, g.access) for g in grants(b, site.site_id)] == [(role_b, "read")]  # its own grant
    assert b.site_record("alpha").owner == shared.roles[0]
    assert job_names(b, site.site_id) == ["j0", "j1"]
    assert stored_job(b, site.site_id, "j1").spec.parents == ["j0"]
    assert {e["reason"] for e in b.events((site.site_id,))} == {"Created"}
    make_runnable(a, site.site_id)
    (ref,) = a.claim(site.site_id, owner="l0", batch_job="bj", filter_tags={}, limit=1)
    a.record(site.site_id, owner="l0", started=[RunStart(ref)])
    a.record_results(site.site_id, [RunResult(ref.id, ref.name, S.RUN_ERROR, return_code=1)])
    a.advance(site.site_id, S.RUN_ERROR, S.FAILED, reason="test")
    before = dump(shared)
    with pytest.raises(AccessDenied):
        add(b, site.site_id, [job_doc("intruder")])
    with pytest.raises(AccessDenied):
        b.delete(site.site_id, [("Job", "j1")])
    with pytest.raises(AccessDenied, match="no write grant"):  # a FAILED Job it sees: refused, not "0 reset"
        b.rerun(site.site_id, [ref.id])
    with pytest.raises(AccessDenied, match=f"only the owner of site alpha \\({shared.roles[0]}\\) may grant"):
        grant(b, site.site_id, role_b, "write")
    with pytest.raises(AccessDenied, match="may revoke"):
        revoke(b, site.site_id, role_b)
    with shared.sql(role_b) as conn:
        assert conn.execute("UPDATE objects SET state = 'READY'").rowcount == 0
        assert conn.execute("UPDATE site_grants SET access = 'write'").rowcount == 0
    assert dump(shared) == before
    assert state_of(a, site.site_id, ref.name) == S.FAILED


def test_a_write_grant_lets_apply_rerun_and_delete_but_not_manage_the_site(
    shared: Shared, site: Owned, a: Store, b: Store
) -> None:
    role_a, role_b = shared.roles
    assert grant(a, site.site_id, role_b, "read") == "granted"
    assert grant(a, site.site_id, role_b, "write") == "changed from read"
    add(b, site.site_id, [job_doc("from-b", parents=["j0"])])
    assert job_names(a, site.site_id) == ["j0", "j1", "from-b"]
    make_runnable(a, site.site_id)
    (ref,) = a.claim(site.site_id, owner="l0", batch_job="bj", filter_tags={}, limit=1)
    a.record(site.site_id, owner="l0", started=[RunStart(ref)])
    a.record_results(site.site_id, [RunResult(ref.id, ref.name, S.RUN_ERROR, return_code=1)])
    a.advance(site.site_id, S.RUN_ERROR, S.FAILED, reason="test")
    assert b.rerun(site.site_id, [ref.id]) == 1
    assert state_of(a, site.site_id, ref.name) == S.READY
    assert {r.action for r in b.delete(site.site_id, [("Job", "from-b")])} == {"deleted"}
    with pytest.raises(AccessDenied, match="may grant"):
        grant(b, site.site_id, role_b, "write")
    events, launchers = (dump(shared)[t] for t in ("events", "launchers"))
    b.site_heartbeat(site.site_id)  # the site's row, its events and its launchers are its owner's alone
    with shared.sql(role_b) as conn:
        for statement in ("DELETE FROM events", "UPDATE events SET message = 'x'", "DELETE FROM launchers"):
            assert conn.execute(statement).rowcount == 0, statement
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO launchers (id, site_id, batch_job, partition, job_mode, host, pid, nodes, started_at, "
                "heartbeat_at, status) VALUES ('l9', %s, 'bj', 0, 'mpi', 'h', 1, '[]', 0, 0, '{}')",
                (site.site_id,),
            )
    assert (dump(shared)["events"], dump(shared)["launchers"]) == (events, launchers)
    assert a.site_record("alpha").heartbeat_at is None
    assert a.site_record("alpha").owner == role_a


def test_revoke_takes_everything_back(shared: Shared, site: Owned, a: Store, b: Store) -> None:
    grant(a, site.site_id, shared.roles[1], "write")
    assert revoke(a, site.site_id, shared.roles[1]) is True
    assert revoke(a, site.site_id, shared.roles[1]) is False
    assert grants(a, site.site_id) == []
    assert b.sites() == [] and job_names(b, site.site_id) == []
    with pytest.raises(AccessDenied):
        add(b, site.site_id, [job_doc("intruder")])


def test_a_grant_to_a_group_role_or_to_public_reaches_its_members(tmp_path: Path, shared: Shared, site: Owned) -> None:
    a = Store(shared.url(shared.roles[0]))
    with login_roles(1) as (group,), shared.sql() as admin:
        admin.execute(f'GRANT "{group}" TO "{shared.roles[1]}"')
        b = Store(shared.url(shared.roles[1]))
        grant(a, site.site_id, group, "read")
        assert job_names(b, site.site_id) == ["j0", "j1"]
        revoke(a, site.site_id, group)
        assert job_names(b, site.site_id) == []
        assert grant(a, site.site_id, "PUBLIC", "read") == "granted"
        assert [g.role for g in grants(a, site.site_id)] == ["public"]
        assert job_names(b, site.site_id) == ["j0", "j1"]
        b.close()
    a.close()


def test_grants_refuse_bad_input(tmp_path: Path, shared: Shared, site: Owned, a: Store) -> None:
    with pytest.raises(ValueError, match="no role 'nobody_balsam_t'"):
        grant(a, site.site_id, "nobody_balsam_t", "read")
    with pytest.raises(ValueError, match="owns site alpha"):
        grant(a, site.site_id, shared.roles[0], "write")
    with pytest.raises(ValueError, match="access must be"):
        grant(a, site.site_id, shared.roles[1], "admin")  # type: ignore[arg-type]  # what a caller might pass
    with pytest.raises(NotFound):
        grant(a, 999_999, shared.roles[1], "read")
    lite = Store(sqlite_url(tmp_path / "s.db"))
    with pytest.raises(ValueError, match="SQLite"):
        grant(lite, lite.ensure_site("s", "/s"), shared.roles[1], "read")
    lite.close()
    assert grants(a, site.site_id) == []


# ---------------------------------------------------------------- cost


def function_calls(shared: Shared) -> int:
    """How often the policies' function ran in the database (statistics flushed by the backends that exit)."""
    with shared.sql() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT calls FROM pg_stat_user_functions WHERE funcname = 'balsam_granted_sites'"
        ).fetchone()
        return int(row[0]) if row else 0


def settled_calls(shared: Shared, at_least: int = 0) -> int:
    """:func:`function_calls` once the exiting backends' statistics arrived."""
    deadline = time.monotonic() + 10
    calls = function_calls(shared)
    while calls < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
        calls = function_calls(shared)
    return calls


def test_the_policies_cost_no_function_call_for_the_owner_and_one_per_statement_for_a_grantee(
    shared: Shared, site: Owned, b: Store
) -> None:
    b.ensure_site("beta", "/beta")  # a site of another role in the store: the owner's statements read past it
    with shared.sql() as admin:
        admin.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET track_functions = pl', current_database()); END $$"
        )
    a = Store(shared.url(shared.roles[0]))
    add(a, site.site_id, [job_doc(f"n{i}", labels={"batch": "n"}) for i in range(300)])
    make_runnable(a, site.site_id)
    refs = a.claim(site.site_id, owner="l0", batch_job="bj", filter_tags={"batch": "n"}, limit=100)
    assert len(refs) == 100
    a.record(site.site_id, owner="l0", started=[RunStart(r) for r in refs])
    a.record_results(site.site_id, [RunResult(r.id, r.name, S.RUN_DONE, return_code=0) for r in refs])
    grant(a, site.site_id, shared.roles[1], "read")
    a.close()  # its backends exit: their statistics are flushed
    assert settled_calls(shared) == 0, "a site's own controller and launchers never call the function"
    reader = Store(shared.url(shared.roles[1]))
    assert len(job_names(reader, site.site_id)) == 302  # one statement over 302 Jobs (and one for the site names)
    reader.close()
    assert 1 <= settled_calls(shared, at_least=1) <= 4
