"""``--site`` over many sites: its forms choose as documented, a site or store that cannot be read is one warning line
while the others are listed (exit 3), stores are reached side by side, and one store's sites are one query."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from sqlalchemy import event
from sqlalchemy.engine import Engine
from typer.testing import CliRunner, Result

from balsamctl.cli import app as cli
from balsamctl.cli import listing
from balsamctl.controller.publish import publish
from balsamctl.site import registry
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store.fastread import ObjectData
from tests.cli.conftest import Caller, apply_text
from tests.support.databases import Databases, pg_server_url

PARTIAL = 3
SECRET = "s3cret-pw"


def manifest(name: str) -> str:
    """An App, a Job ``NAME-job`` and a BatchJob ``NAME-bj``."""
    return f"""\
apiVersion: balsam/v1
kind: App
metadata: {{name: app}}
spec: {{command: "true"}}
---
apiVersion: balsam/v1
kind: Job
metadata: {{name: {name}-job}}
spec: {{app: app, workdir: w}}
---
apiVersion: balsam/v1
kind: BatchJob
metadata: {{name: {name}-bj}}
spec: {{num_nodes: 1, wall_time_min: 10, queue: local, project: local}}
"""


def unreachable(port: int = 1, database: str = "x") -> str:
    """A store URL of a port on this host (by default one where nothing listens), with a password."""
    return f"postgresql+psycopg://u:{SECRET}@127.0.0.1:{port}/{database}"


def add_remote(name: str, url: str, site_id: int) -> None:
    """Register a site on another machine by its store, as ``site add`` would once it had reached it."""
    registry.add(registry.Entry(name, None, site_id, None, url))


@pytest.fixture
def two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[SiteDirectory]]:
    """Sites ``alpha`` and ``beta`` (their own SQLite stores, a Job each), registered; not inside either."""
    monkeypatch.delenv("BALSAM_SITE", raising=False)
    made = [init_site(tmp_path / name, name) for name in ("alpha", "beta")]
    for site in made:
        apply_text(site, manifest(site.name))
    monkeypatch.chdir(tmp_path)
    yield made
    for site in made:
        site.close()


def gone_site(tmp_path: Path) -> None:
    """A registered site ``gone`` whose directory was deleted."""
    site = init_site(tmp_path / "gone", "gone")
    site.close()
    shutil.rmtree(site.path)


def both_paths(call: Caller, *args: str) -> tuple[int, str, str]:
    """``balsamctl ARGS`` with and without the fast path, which must print the same: exit code, stdout, stderr."""
    fast, full = call(*args), call(*args, fast=False)
    assert (fast.code, fast.out, fast.err) == (full.code, full.out, full.err), args
    return full.code, full.out, full.err


def rows(out: str) -> list[list[str]]:
    """A table's rows (without its header), split in cells."""
    return [line.split() for line in out.splitlines()[1:]]


def warnings(err: str) -> list[str]:
    """The warning lines of stderr."""
    return [line for line in err.splitlines() if line.startswith("warning:")]


def invoke(*args: str) -> Result:
    """``balsamctl ARGS`` through typer, in-process, the clock as it is."""
    return CliRunner().invoke(cli.app, list(args))


# ---------------------------------------------------------------- partial results


def test_a_site_whose_directory_is_gone_is_a_warning_and_the_others_are_listed(
    two: list[SiteDirectory], tmp_path: Path, call: Caller
) -> None:
    gone_site(tmp_path)
    code, out, err = both_paths(call, "get", "jobs", "--site=all")
    assert code == PARTIAL
    assert [(r[0], r[1]) for r in rows(out)] == [("alpha", "alpha-job"), ("beta", "beta-job")]
    (warning,) = warnings(err)
    assert warning.startswith("warning: site gone: ") and "not a site directory" in warning
    assert both_paths(call, "get", "jobs", "-o", "name", "--site=alpha,gone")[:2] == (PARTIAL, "alpha/job/alpha-job\n")
    code, out, err = both_paths(call, "get", "jobs", "--site=gone")
    assert code == 1 and not out and err.startswith("error: ") and "not a site directory" in err


@pytest.mark.parametrize(
    "args", [["get", "events"], ["queue", "ls"], ["controller", "status"]], ids=lambda a: " ".join(a)
)
def test_every_listing_over_many_sites_is_partial_without_a_site_it_cannot_open(
    two: list[SiteDirectory], tmp_path: Path, args: list[str]
) -> None:
    gone_site(tmp_path)
    add_remote("far", unreachable(), 41)
    result = invoke(*args, "--site=all")
    assert result.exit_code == PARTIAL, (result.stdout, result.stderr, result.exception)
    assert {r[0] for r in rows(result.stdout)} == {"alpha", "beta"}
    assert [w.split()[1:3] for w in warnings(result.stderr)] == [["site", "gone:"], ["store", unreachable_shown()]]
    assert invoke(*args, "--site=gone").exit_code == 1


def unreachable_shown(port: int = 1) -> str:
    """How a warning names :func:`unreachable`'s store: its password redacted."""
    return unreachable(port).replace(SECRET, "***")


def test_a_store_that_cannot_be_reached_is_one_warning_naming_it_and_its_sites(
    two: list[SiteDirectory], call: Caller
) -> None:
    for number, name in enumerate(("far-1", "far-2")):
        add_remote(name, unreachable(), 40 + number)
    code, out, err = both_paths(call, "get", "jobs", "--site=all", "-o", "wide")
    assert code == PARTIAL
    assert [r[0] for r in rows(out)] == ["alpha", "beta"]
    assert warnings(err) == [
        f"warning: store {unreachable_shown()} (sites far-1, far-2) cannot be reached: "
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'
    ]
    assert SECRET not in out + err
    code, _, err = both_paths(call, "get", "jobs", "--site=far-1")
    assert code == 1 and err.startswith("error: site far-1: cannot open its store ") and SECRET not in err


def test_a_local_site_on_a_server_store_that_cannot_be_reached_is_a_warning_on_the_fast_path_too(
    two: list[SiteDirectory], tmp_path: Path, call: Caller
) -> None:
    """The fast path says what the full path says, without waiting for the store a second time."""
    site = init_site(tmp_path / "gamma", "gamma", register=False)
    settings = site.path / "settings.yml"
    settings.write_text(yaml.safe_dump({**yaml.safe_load(settings.read_text()), "store_url": unreachable()}))
    SiteDirectory.load(site.path)  # its settings are valid: the fast path may vouch for them
    registry.register("gamma", site.path, 50)
    quick, slow = call("get", "jobs", "--site=all"), call("get", "jobs", "--site=all", fast=False)
    assert quick.fast and (quick.code, quick.out, quick.err) == (slow.code, slow.out, slow.err)
    assert quick.code == PARTIAL and [r[0] for r in rows(quick.out)] == ["alpha", "beta"]
    assert warnings(quick.err) == [
        f"warning: store {unreachable_shown()} (site gamma) cannot be reached: "
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'
    ]


# ---------------------------------------------------------------- the forms of --site


def test_names_ids_and_active_choose_the_sites(two: list[SiteDirectory], call: Caller) -> None:
    alpha = two[0]
    beta_id = next(e.id for e in registry.entries() if e.name == "beta")  # the registry's id (and its store's)
    code, out, _ = both_paths(call, "get", "jobs", "-o", "name", f"--site=alpha,{beta_id}")
    assert (code, out) == (0, "alpha/job/alpha-job\nbeta/job/beta-job\n")
    assert both_paths(call, "get", "jobs", "-o", "name", f"--site={beta_id}")[:2] == (0, "job/beta-job\n")
    assert invoke("get", "jobs", "--site=active").stderr == "No resources found.\n"
    publish(alpha)  # its controller's heartbeat
    result = invoke("get", "jobs", "-o", "name", "--site=active")
    assert (result.exit_code, result.stdout) == (0, "alpha/job/alpha-job\n")
    assert [r[0] for r in rows(invoke("controller", "status", "--site=active").stdout)] == ["alpha"]


def test_controller_status_says_whether_a_site_on_another_machine_beats(two: list[SiteDirectory]) -> None:
    """A site known by its store: its controller is running while its heartbeat is recent."""
    alpha = two[0]
    publish(alpha)
    registry.unregister("alpha")
    registry.add(registry.Entry("alpha", None, alpha.site_id, alpha.uuid, alpha.store_url))  # reached by its store
    result = invoke("controller", "status", "--site=all")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert [r[:3] for r in rows(result.stdout)] == [["alpha", "running", "on"], ["beta", "stopped", "<none>"]]


# ---------------------------------------------------------------- side by side


@pytest.fixture
def hanging() -> Iterator[Callable[[], int]]:
    """Makes TCP listeners that accept connections and never answer (a store host that hangs); their ports."""
    sockets: list[socket.socket] = []

    def listen() -> int:
        server = socket.create_server(("127.0.0.1", 0))
        sockets.append(server)

        def accept() -> None:
            held = []
            while True:
                try:
                    held.append(server.accept()[0])
                except OSError:  # closed
                    return

        threading.Thread(target=accept, daemon=True).start()
        return int(server.getsockname()[1])

    yield listen
    for server in sockets:
        server.close()


def test_stores_that_hang_are_waited_for_side_by_side(
    two: list[SiteDirectory], hanging: Callable[[], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four stores that never answer cost one connect timeout, not four (psycopg waits at least 2 s)."""
    monkeypatch.setenv("BALSAMCTL_CONNECT_TIMEOUT", "1")
    ports = [hanging() for _ in range(4)]
    for number, port in enumerate(ports):
        add_remote(f"hung-{number}", unreachable(port), 60 + number)
    start = time.monotonic()
    result = invoke("get", "jobs", "--site=all")
    elapsed = time.monotonic() - start
    assert result.exit_code == PARTIAL, (result.stdout, result.stderr)
    assert [r[0] for r in rows(result.stdout)] == ["alpha", "beta"]
    assert [w.split()[2] for w in warnings(result.stderr)] == [unreachable_shown(p) for p in ports]
    assert all("timeout" in w for w in warnings(result.stderr)), result.stderr
    assert elapsed < 3.5, elapsed


def test_stores_opened_side_by_side_are_migrated_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores that need their schema made or migrated, opened side by side, each get it (Alembic's state is one a
    process)."""
    monkeypatch.chdir(tmp_path)
    for number in range(4):
        site = init_site(tmp_path / f"s{number}", f"s{number}")
        site.close()
        for file in site.state_dir.glob("store.db*"):
            file.unlink()  # a new store: made, all its migrations run, when it is opened
    result = invoke("get", "jobs", "--site=all")
    assert (result.exit_code, result.stderr) == (0, "No resources found.\n"), (result.stderr, result.exception)


class Fake:
    """A store's share of a listing: ``count`` objects of one site, each page taking ``delay`` s; ``fail_after``
    pages, it fails."""

    def __init__(self, site: str, count: int, delay: float = 0.0, fail_after: int | None = None) -> None:
        self.site, self.items, self.delay, self.fail_after = site, list(range(1, count + 1)), delay, fail_after
        self.pages = 0

    def fetch(self, after_id: int, size: int) -> Sequence[tuple[int, ObjectData]]:
        time.sleep(self.delay)
        if self.fail_after is not None and self.pages >= self.fail_after:
            raise listing.StoreFailed("server closed the connection unexpectedly")
        self.pages += 1
        return [(i, _job(self.site, i)) for i in self.items if i > after_id][:size]

    def count(self) -> int:
        return len(self.items)

    def where(self) -> str:
        return listing.where(f"sqlite:///{self.site}.db", [self.site])


def _job(site: str, number: int) -> ObjectData:
    return {"kind": "Job", "metadata": {"name": f"j{number}", "site": site}, "spec": {}, "status": {}}


def names_shown(sources: Sequence[Fake], limit: int = 0, side_by_side: bool = True) -> tuple[list[str], list[str], int]:
    """What ``get -o name`` prints of the fake sources: the names, the stderr lines, the exit code."""
    out: list[str] = []
    err: list[str] = []
    code = listing.show(
        sources, "Job", [], "name", limit, many=True, out=out.append, err=err.append, side_by_side=side_by_side
    )
    return "".join(out).split(), err, code


def test_stores_read_side_by_side_print_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "PAGE", 2)
    sources = [Fake("s1", 5, 0.2), Fake("s2", 3, 0.2), Fake("s3", 4, 0.2), Fake("s4", 1, 0.2)]
    start = time.monotonic()
    shown, err, code = names_shown(sources)
    assert time.monotonic() - start < 1.5  # one after the other: 3 + 2 + 3 + 1 pages of 0.2 s
    assert shown == [f"{s.site}/job/j{i}" for s in sources for i in s.items] and (err, code) == ([], 0)
    shown, err, code = names_shown([Fake("s1", 5), Fake("s2", 3)], limit=6)
    assert len(shown) == 6 and shown[-1] == "s2/job/j1"
    assert err == ["(showing 6 of 8 jobs: 2 left out; use --limit 0 for all)"]


@pytest.mark.parametrize("side_by_side", [True, False])
def test_a_store_that_fails_mid_listing_is_one_warning_and_the_others_are_printed(
    monkeypatch: pytest.MonkeyPatch, side_by_side: bool
) -> None:
    monkeypatch.setattr(listing, "PAGE", 2)
    sources = [Fake("s1", 3), Fake("s2", 5, fail_after=1), Fake("s3", 2)]
    shown, err, code = names_shown(sources, side_by_side=side_by_side)
    assert shown == ["s1/job/j1", "s1/job/j2", "s1/job/j3", "s2/job/j1", "s2/job/j2", "s3/job/j1", "s3/job/j2"]
    assert err == ["warning: store sqlite:///s2.db (site s2) cannot be read: server closed the connection unexpectedly"]
    assert code == PARTIAL


# ---------------------------------------------------------------- one store, one query


def test_the_sites_of_one_store_are_listed_with_one_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Caller
) -> None:
    databases = Databases("postgresql", pg_server_url())
    with databases.fresh(tmp_path) as url:
        monkeypatch.setenv("BALSAMCTL_TEST_STORE_URL", url)
        for name in ("pg-a", "pg-b"):
            site = init_site(tmp_path / name, name, store_url="${BALSAMCTL_TEST_STORE_URL}")
            apply_text(site, manifest(name))
            site.close()
        statements: list[str] = []

        def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            statements.append(" ".join(statement.split()))

        event.listen(Engine, "before_cursor_execute", record)
        try:
            called = call("get", "jobs", "-o", "name", "--site=all", fast=False)
        finally:
            event.remove(Engine, "before_cursor_execute", record)
        assert (called.code, called.out) == (0, "pg-a/job/pg-a-job\npg-b/job/pg-b-job\n")
        listed = [s for s in statements if s.startswith("SELECT objects.") and "FROM objects" in s]
        assert len(listed) == 1, listed
    databases.close()
