"""Schema migrations: new stores at head, old ones stamped and upgraded in place, newer ones refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, create_engine, inspect, select, text

from balsamctl.schemas import App, Job, Manifest
from balsamctl.schemas.manifest import Document
from balsamctl.store import Selector, Store
from balsamctl.store.engine import make_engine, write_tx
from balsamctl.store.migrations import BASELINE, SCRIPTS, SchemaError, head_revision, upgrade
from balsamctl.store.tables import metadata
from tests.support.databases import Databases

HEAD = head_revision()


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def dump(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of :mod:`balsamctl.store.tables` the database has, with the columns it has, in a
    stable order."""
    found = MetaData()
    with engine.connect() as conn:
        found.reflect(conn, only=[t.name for t in metadata.sorted_tables if inspect(conn).has_table(t.name)])
        return {
            t.name: [dict(r._mapping) for r in conn.execute(select(t).order_by(*t.primary_key))]
            for t in found.sorted_tables
        }


def kept(before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether every row of ``before`` is in ``after`` unchanged (columns and tables a migration added aside)."""
    return all(
        [{column: row[column] for column in rows[0]} for row in after[table]] == rows if rows else not after[table]
        for table, rows in before.items()
    )


def fill(url: str) -> None:
    """A site with an App, two Jobs (one the other's parent, with labels), their events."""
    store = Store(url)
    site = store.ensure_site("s", "/s")
    app = App.model_validate({"metadata": {"name": "a"}, "spec": {"command": "true"}})
    jobs = [
        Job.model_validate(
            {"metadata": {"name": n, "labels": {"k": n}}, "spec": {"app": "a", "workdir": n, "parents": p}}
        )
        for n, p in (("j1", []), ("j2", ["j1"]))
    ]
    manifests: list[Manifest] = [app, *jobs]
    store.apply(site, [Document(m, "f.yaml", 1) for m in manifests], check=lambda _a, _p: [])
    store.close()


def config_for(scripts: Path, conn: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.attributes["connection"] = conn
    return config


def test_revision_files_are_named_by_their_revision_in_one_line() -> None:
    """``head_revision`` reads file names only: that holds while every file is ``<its revision>_slug.py``."""
    scripts = ScriptDirectory.from_config(config_for(SCRIPTS, None))
    assert scripts.get_current_head() == HEAD
    for script in scripts.walk_revisions():
        assert Path(script.path).name.startswith(f"{script.revision}_")
        assert script.down_revision in (None, f"{int(script.revision) - 1:04d}")


def test_a_new_store_is_created_at_head_exactly_as_the_tables_say(store_url: str) -> None:
    engine = make_engine(store_url)
    assert revision_of(engine) == HEAD
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()


def schema_sql(engine: Engine) -> set[tuple[str, str]]:
    """The definitions of every index (and on SQLite every table) as the database reports them."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            q = "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'alembic_version'"
        else:
            q = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        return {(name, " ".join(sql.split())) for name, sql in conn.exec_driver_sql(q) if "alembic" not in name}


def test_the_migrations_build_what_the_tables_declare(databases: Databases, tmp_path: Path) -> None:
    """Partial index predicates too, which ``compare_metadata`` does not look at."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    with databases.fresh(tmp_path / "a") as migrated_url, databases.fresh(tmp_path / "b") as declared_url:
        migrated, declared = make_engine(migrated_url), create_engine(declared_url)
        metadata.create_all(declared)
        assert schema_sql(migrated) == schema_sql(declared)
        assert any("WHERE" in sql for _, sql in schema_sql(migrated)), "the partial index is there"
        migrated.dispose()
        declared.dispose()


def test_make_engine_twice_is_idempotent(store_url: str) -> None:
    fill(store_url)
    engine = make_engine(store_url)
    before = dump(engine)
    engine.dispose()
    engine = make_engine(store_url)
    assert dump(engine) == before
    assert revision_of(engine) == HEAD
    engine.dispose()


def test_stores_opened_at_once_on_a_new_database_all_work(store_url: str) -> None:
    """Launchers may start together on a new store: one creates the schema, the others wait and find it."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait()
        try:
            make_engine(store_url).dispose()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    fill(store_url)


def test_a_store_made_before_migrations_is_stamped_and_upgraded_in_place(store_url: str) -> None:
    fill(store_url)
    engine = create_engine(store_url)
    with engine.begin() as conn:  # back to the baseline schema, as a site made before migrations has it
        command.downgrade(config_for(SCRIPTS, conn), BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
    before = dump(engine)
    engine.dispose()
    store = Store(store_url)
    assert revision_of(store.engine) == HEAD
    assert kept(before, dump(store.engine))
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert [o.name for o in store.list_objects(Selector("Job", (store.site_id("s"),), labels=(("k", "j2"),)))] == ["j2"]
    store.close()


TEST_REVISION = '''"""Test only: a column with a default and a table."""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("objects", sa.Column("note", sa.Text, nullable=False, server_default="none"))
    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("text", sa.Text))


def downgrade() -> None:
    op.drop_table("notes")
    op.drop_column("objects", "note")
'''


def test_a_new_revision_is_applied_in_place_and_keeps_the_data(store_url: str, tmp_path: Path) -> None:
    fill(store_url)
    scripts = tmp_path / "migrations"
    shutil.copytree(SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    newer = f"{int(HEAD) + 1:04d}"
    (scripts / "versions" / f"{newer}_test.py").write_text(TEST_REVISION.format(revision=newer, down=HEAD))
    assert head_revision(scripts) == newer
    engine = create_engine(store_url)
    before = dump(engine)
    with write_tx(engine) as conn:
        upgrade(conn, scripts)
    assert revision_of(engine) == newer
    assert kept(before, dump(engine)), "every row of every table is still there, unchanged"
    with engine.connect() as conn:
        assert set(conn.execute(text("SELECT note FROM objects")).scalars()) == {"none"}
        assert inspect(conn).has_table("notes")
    engine.dispose()
    # this balsamctl does not know the new revision: it refuses the store instead of misreading it
    with pytest.raises(SchemaError, match=f"revision {newer}.*upgrade balsamctl"):
        Store(store_url)


def test_opening_an_up_to_date_sqlite_store_does_not_load_alembic(tmp_path: Path) -> None:
    """The CLI opens the store on every call: the up-to-date check is one SELECT, without Alembic."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    make_engine(url).dispose()
    code = (
        "import sys; from balsamctl.store.engine import make_engine; make_engine(sys.argv[1]);"
        "assert 'alembic' not in sys.modules, 'alembic was imported'"
    )
    subprocess.run([sys.executable, "-c", code, url], check=True)
