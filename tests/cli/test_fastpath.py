"""The fast paths of ``balsamctl`` answer as typer does: ``get`` read without typer, SQLAlchemy or pydantic prints
byte for byte what the typer path prints, exits with its code, and hands typer every call it does not know."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balsamctl.cli import fastpath, listing, output, verbs
from balsamctl.cli.fastpath import Handoff
from balsamctl.schemas import kind_of
from balsamctl.schemas.manifest import parse_documents
from balsamctl.schemas.objects import KINDS
from balsamctl.site import light_settings
from balsamctl.site.apply import apply_documents
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Selector
from balsamctl.store.fastread import open_reader
from tests.cli.conftest import Caller, Sites, heavy_modules

FAST = [
    ["get", "jobs", "hello-1"],
    ["get", "jobs", "hello-1", "hello-2"],
    ["get", "jobs", "hello-2", "hello-1", "hello-2"],
    ["get", "jobs", "hello-1", "nope"],
    ["get", "jobs", "nope"],
    ["get", "JOBS"],
    ["get", "Job", "hello-1", "-o", "json"],
    ["get", "jobs", "-o", "json"],
    ["get", "jobs", "-o", "yaml"],
    ["get", "jobs", "-o", "name"],
    ["get", "jobs", "-o", "wide"],
    ["get", "jobs", "hello-3", "-o", "wide"],
    ["get", "apps"],
    ["get", "apps", "-o", "yaml"],
    ["get", "bj"],
    ["get", "batchjobs", "-o", "wide"],
    ["get", "jobs", "-l", "exp=a"],
    ["get", "jobs", "-l", "exp=a,tier=gold", "-o", "wide"],
    ["get", "jobs", "--selector", "exp==b", "-o", "yaml"],
    ["get", "jobs", "--selector=exp=b"],
    ["get", "jobs", "-l", "nope=x"],
    ["get", "jobs", "-l", "nope=x", "-o", "json"],
    ["get", "jobs", "-l", ""],
    ["get", "jobs", "--limit", "1"],
    ["get", "jobs", "--limit=2", "-o", "name"],
    ["get", "jobs", "--limit", "0", "-o", "json"],
    ["get", "jobs", "--limit", "007"],
    ["get", "jobs", "--site", "test-site"],
    ["get", "jobs", "--site", "all"],
    ["get", "jobs", "--site", "all", "--limit", "3", "-o", "wide"],
    ["get", "jobs", "--site=test-site,other-site", "-o", "name"],
    ["get", "jobs", "hello-1", "--site", "all", "-o", "json"],
    ["get", "jobs", "hello-1", "elsewhere", "--site", "all", "-o", "yaml"],
    ["get", "apps", "--site", "other-site"],
    ["get", "jobs", "-l", "rack=r7", "--site", "this,other-site"],
    ["get", "jobs", "--site=", "-o", "name"],
]
HANDED_OFF = [
    ["get"],
    ["get", "frobs"],
    ["get", "sites"],
    ["get", "events"],
    ["get", "jobs", "-l", "bad"],
    ["get", "jobs", "-l", "a=b", "-l", "c=d"],
    ["get", "jobs", "--state", "CREATED"],
    ["get", "jobs", "--site", "nope"],
    ["get", "jobs", "-o", "xml"],
    ["get", "jobs", "--limit", "-1"],
    ["get", "jobs", "--limit", "x"],
    ["get", "jobs", "--help"],
    ["get", "jobs", "-ojson"],
    ["get", "--", "jobs"],
    ["get", "jobs", "--site"],
    ["nope"],
]


def same(call: Caller, args: list[str], *, fast: bool, env: dict[str, str] | None = None) -> None:
    """``balsamctl ARGS`` prints the same and exits the same with and without the fast paths, answered by the fast
    path when ``fast``."""
    quick, slow = call(*args, env=env), call(*args, fast=False, env=env)
    assert (quick.code, quick.out, quick.err) == (slow.code, slow.out, slow.err), args
    assert quick.fast == fast, args
    assert not slow.fast


@pytest.mark.parametrize("args", FAST, ids=" ".join)
def test_the_fast_path_prints_what_typer_prints(sites: Sites, call: Caller, args: list[str]) -> None:
    same(call, args, fast=True)


@pytest.mark.parametrize("args", HANDED_OFF, ids=" ".join)
def test_what_the_fast_path_does_not_know_typer_answers(sites: Sites, call: Caller, args: list[str]) -> None:
    same(call, args, fast=False)


def test_the_listings_are_real(sites: Sites, call: Caller) -> None:
    """The conformance above compares real output: rows, documents, footers and errors as ``get`` prints them."""
    assert call("get", "jobs", "hello-1", "nope").err == 'Error from server (NotFound): jobs "nope" not found\n'
    assert call("get", "jobs", "-o", "name").out == "job/hello-1\njob/hello-2\njob/hello-3\n"
    assert call("get", "jobs", "--limit", "1").err == "(showing 1 of 3 jobs: 2 left out; use --limit 0 for all)\n"
    assert call("get", "jobs", "-l", "nope=x").err == "No resources found.\n"
    wide = call("get", "jobs", "hello-3", "-o", "wide").out
    assert "esc/red" in wide and "\x1b" not in wide  # escape sequences stripped off a terminal, as echo does
    everywhere = call("get", "jobs", "hello-1", "--site", "all", "-o", "name").out
    assert sorted(everywhere.splitlines()) == ["other-site/job/hello-1", "test-site/job/hello-1"]
    assert json.loads(call("get", "jobs", "hello-1", "-o", "json").out)["spec"]["ranks_per_node"] == 4


def test_balsam_site_chooses_the_sites_as_site_does(sites: Sites, call: Caller, tmp_path: Path) -> None:
    os.chdir(tmp_path)
    same(call, ["get", "jobs", "-o", "name"], fast=True, env={"BALSAM_SITE": "other-site"})
    same(call, ["get", "jobs", "--site", "test-site"], fast=True, env={"BALSAM_SITE": "other-site"})
    same(call, ["get", "jobs"], fast=False)  # not in a site: typer's error


def test_settings_changed_since_their_last_check_are_read_in_full(sites: Sites, call: Caller) -> None:
    """The fast path trusts settings.yml only as last found valid: an edit sends the next call through the full
    read, which reports an invalid file as always and records a valid one for the calls after it."""
    settings_file = sites.main.path / "settings.yml"
    valid = settings_file.read_text()
    settings_file.write_text(valid + "launcher: {lease_sec: -1}\n")
    same(call, ["get", "jobs"], fast=False)
    assert "launcher.lease_sec" in call("get", "jobs").err
    settings_file.write_text(valid + "\n# a comment\n")
    assert not call("get", "jobs").fast  # read in full, and recorded
    same(call, ["get", "jobs"], fast=True)


def test_a_site_its_store_does_not_know_is_handed_off(sites: Sites, call: Caller) -> None:
    """A site not registered in its store at its directory (moved) is registered by the full path, then read fast."""
    from sqlalchemy import update

    from balsamctl.store.tables import sites as sites_table

    with sites.main.store.engine.begin() as conn:
        conn.execute(update(sites_table).where(sites_table.c.name == "test-site").values(path="elsewhere"))
    assert not call("get", "jobs").fast
    same(call, ["get", "jobs"], fast=True)


# ---------------------------------------------------------------- the parts


@given(word=st.sampled_from(sorted(fastpath.KIND_WORDS)), upper=st.lists(st.booleans(), min_size=12, max_size=12))
def test_the_fast_kind_words_name_what_kind_of_names(word: str, upper: list[bool]) -> None:
    cased = "".join(c.upper() if u else c for c, u in zip(word, upper, strict=False))
    assert fastpath.kind_of(cased) == kind_of(cased)


VOCABULARY = ["get", "jobs", "apps", "bj", "frobs", "x", "-l", "a=b", "--selector", "--selector=a=b", "-o", "json"]
VOCABULARY += ["name", "yaml", "wide", "xml", "--output=name", "--limit", "3", "0", "-2", "--limit=5", "--site"]
VOCABULARY += ["all", "--site=a", "--state", "--kind", "-h", "--help", "--", "-", "", "-lx=y", "-ojson", "--x"]


@settings(max_examples=300, deadline=None)
@given(args=st.lists(st.sampled_from(VOCABULARY), max_size=7))
def test_the_get_parser_reads_what_typer_reads_or_hands_off(args: list[str]) -> None:
    """Whatever ``get`` is given, the fast parser reads what typer reads (kind, names, -l, -o, --limit, --site), or
    hands the call off."""
    import typer

    root = typer.main.get_command(verbs.build(["get"]))
    command = root.commands["get"]  # type: ignore[attr-defined]
    try:
        positional, options = fastpath.parse_get(args)
    except Handoff:
        return
    with command.make_context("get", list(args), parent=root.make_context("balsamctl", ["get"])) as ctx:
        params = ctx.params
    assert params["kind"] == positional[0]
    assert list(params["names"] or []) == positional[1:]
    assert params["selector"] == options.get("selector")
    assert params["fmt"] == options.get("fmt")
    assert params["limit"] == (int(options["limit"]) if "limit" in options else None)
    assert params["site"] == options.get("site")
    assert not params["state"] and params["event_kind"] is None


def test_raw_rows_give_the_tables_the_validated_objects_give(sites: Sites) -> None:
    """The fast path formats Job and App tables from the rows as stored: their cells are the validated objects'."""
    site = sites.main
    reader = open_reader(site.store_url)
    try:
        for kind in ("Job", "App"):
            sel = Selector(kind, (site.site_id,))
            raw, full = reader.objects(sel, 0, 100, full=False), reader.objects(sel, 0, 100, full=True)
            assert [i for i, _ in raw] == [i for i, _ in full] and raw
            for (_, r), (_, f) in zip(raw, full, strict=True):
                for wide in (False, True):
                    assert output.row(r, 0.0, wide) == output.row(f, 0.0, wide)
                assert output.object_name(r, with_site=True) == output.object_name(f, with_site=True)
                assert f == KINDS[kind].model_validate(f).model_dump(mode="json", by_alias=True)
    finally:
        reader.close()


def test_the_fast_queries_use_the_stores_indexes(sqlite_sites: Sites) -> None:
    """The SQLite reader's queries are the store's, answered from its indexes (no scan of the objects table)."""
    import sqlite3

    from balsamctl.store import fastread

    conn = sqlite3.connect(sqlite_sites.main.store_url.removeprefix("sqlite:///"))
    queries = [fastread.names_query("Job", [1], "hel", 10), fastread.label_keys_query("Job", [1, 2], "e", 10)]
    for sel in (
        Selector("Job", (1,), names=("hello-1", "hello-2")),
        Selector("Job", (1, 2), labels=(("exp", "a"),)),
        Selector("Job", (1,), labels=(("exp", "a"), ("tier", "gold"))),
        Selector("App", (1,)),
    ):
        queries += [fastread.page_query(sel, 0, 50), fastread.count_query(sel)]
    for sql, params in queries:
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "SCAN objects" not in plan and "SCAN labels" not in plan, (sql, plan)
        assert "INDEX" in plan, (sql, plan)
    conn.close()


@given(size=st.integers(0, 9), page=st.integers(1, 4), limit=st.none() | st.integers(0, 12))
def test_listing_pages_keep_order_and_limit(size: int, page: int, limit: int | None) -> None:
    """Keyset pages give every item once, in order, at most ``limit`` (None: all), none longer than a page."""
    items = [(i * 3, f"item{i}") for i in range(1, size + 1)]

    def fetch(after: int, count: int) -> list[tuple[int, str]]:
        return [it for it in items if it[0] > after][:count]

    old, listing.PAGE = listing.PAGE, page
    try:
        pages = list(listing.pages(fetch, limit))
    finally:
        listing.PAGE = old
    assert [x for p in pages for x in p] == [name for _, name in items][:limit]
    assert all(0 < len(p) <= page for p in pages)


# ---------------------------------------------------------------- a real process


@pytest.mark.parametrize(
    "args",
    [["version"], ["--help"], ["get", "jobs", "hello-1"], ["get", "jobs", "-l", "exp=a", "--limit", "50"]],
    ids=" ".join,
)
def test_a_fast_call_imports_no_typer_sqlalchemy_pydantic_or_yaml(sqlite_sites: Sites, args: list[str]) -> None:
    assert heavy_modules(args) == []


def test_the_fast_help_lists_the_verbs_and_options_typer_has(call: Caller) -> None:
    import typer

    root = typer.main.get_command(verbs.build())
    ctx = root.make_context("balsamctl", ["--help"], resilient_parsing=True)
    commands = {name: cmd.get_short_help_str(1000) for name, cmd in root.commands.items()}  # type: ignore[attr-defined]
    assert list(commands) == verbs.verb_names()
    text = call("--help").out
    assert call("-h").out == text and call("--help", fast=False).code == 0
    listed = _section(text, "Commands:")
    assert listed == commands
    options = {frozenset(p.opts): getattr(p, "help", None) for p in root.get_params(ctx)}
    assert {frozenset(name.split(", ")): help for name, help in _section(text, "Options:").items()} == options
    assert verbs.ROOT_HELP in " ".join(text.split())
    none = call()
    assert (none.code, none.out) == (2, text)
    assert call(fast=False).code == 2


def _section(text: str, title: str) -> dict[str, str]:
    """The ``name  text`` rows of a help section, wrapped lines joined."""
    rows: dict[str, str] = {}
    body = text.split(title + "\n", 1)[1].split("\n\n", 1)[0]
    last = ""
    for line in body.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name, _, rest = line.strip().partition("  ")
            last, rows[name] = name, rest.strip()
        else:
            rows[last] += " " + line.strip()
    return rows


def test_version_is_the_packages(call: Caller) -> None:
    from balsamctl import __version__

    assert call("version").out == call("version", fast=False).out == f"balsamctl {__version__}\n"


def test_the_settings_record_is_private_and_vouches_for_exact_text(sites: Sites) -> None:
    path = sites.main.path
    record = path / ".balsam" / light_settings.RECORD
    assert record.stat().st_mode & 0o777 == 0o600
    assert light_settings.checked(path) == (sites.main.name, sites.main.settings.store_url)
    text = (path / "settings.yml").read_text()
    (path / "settings.yml").write_text(text.replace("\n", "\n ", 0) + " ")
    assert light_settings.checked(path) is None
    (path / "settings.yml").write_text(text)
    assert light_settings.checked(path) is not None
    body = json.loads(record.read_text())
    record.write_text(json.dumps({**body, "version": "0.0.0"}))
    assert light_settings.checked(path) is None
    assert SiteDirectory.load(path) and light_settings.checked(path) is not None


def test_the_store_url_expands_as_the_site_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST_FOR_TEST", "db.example")
    assert light_settings.store_url(tmp_path, "postgresql://u@${PGHOST_FOR_TEST}/x") == "postgresql://u@db.example/x"
    assert light_settings.store_url(tmp_path, None) == f"sqlite:///{tmp_path}/.balsam/store.db"


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_what_the_fast_path_dumps_applies_back_unchanged(sites: Sites, call: Caller, fmt: str) -> None:
    dumped = call("get", "jobs", "-o", fmt).out
    results = apply_documents(sites.main, parse_documents(dumped, "dumped"))
    assert [(r.ref, r.action) for r in results] == [(f"job/hello-{i}", "unchanged") for i in (1, 2, 3)]
