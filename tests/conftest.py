"""Shared fixtures: an isolated site registry, a bare store and a real site directory, on SQLite and PostgreSQL.

Every fixture that builds a store is parametrized over the ``backend``s: a test that uses one runs once on a
SQLite file and once on a fresh PostgreSQL database (``CREATE DATABASE balsam_test_<random>``, dropped after) on
the server of ``BALSAMCTL_TEST_PG_URL``. Without that variable the server is started with ``scripts/pg-up.sh``,
except in CI (``CI`` set), where the missing variable fails the PostgreSQL tests instead of skipping them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Store
from tests.support.databases import Databases, pg_server_url

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(autouse=True)
def isolated_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own site registry: the user's ``sites.yaml`` is never read or written."""
    path = tmp_path_factory.mktemp("config") / "sites.yaml"
    monkeypatch.setenv("BALSAMCTL_CONFIG", str(path))
    return path


@pytest.fixture(scope="session", params=BACKENDS)
def databases(request: pytest.FixtureRequest) -> Iterator[Databases]:
    """Makes fresh databases of one back end (the test runs once per back end)."""
    dbs = Databases(request.param, pg_server_url() if request.param == "postgresql" else None)
    yield dbs
    dbs.close()


@pytest.fixture
def store_url(databases: Databases, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database."""
    with databases.fresh(tmp_path) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A fresh store."""
    s = Store(store_url)
    yield s
    s.close()


@pytest.fixture
def site_id(store: Store, tmp_path: Path) -> int:
    """A site registered in :func:`balsamctl.store`."""
    return store.ensure_site("test-site", str(tmp_path))


@pytest.fixture
def balsam_site(databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SiteDirectory]:
    """A real site directory made by ``init_site`` (local scheduler); on PostgreSQL its settings name the store.

    The PostgreSQL URL goes into ``settings.yml`` as ``${BALSAMCTL_TEST_STORE_URL}``, as a user would keep
    credentials in the environment.
    """
    site = init_site(tmp_path / "site", "test-site")
    if databases.backend == "sqlite":
        yield site
        site.close()
        return
    site.close()
    settings = site.path / "settings.yml"
    body = yaml.safe_load(settings.read_text())
    settings.write_text(yaml.safe_dump({**body, "store_url": "${BALSAMCTL_TEST_STORE_URL}"}, sort_keys=False))
    with databases.fresh(tmp_path) as url:
        monkeypatch.setenv("BALSAMCTL_TEST_STORE_URL", url)
        site = SiteDirectory.load(site.path)
        yield site
        site.close()


@pytest.fixture(scope="session")
def cluster() -> None:
    """The real Slurm cluster of ``scripts/slurm-up.sh``: fail (never skip) when it is not up."""
    fix = "start it with `bash scripts/slurm-up.sh`"
    if shutil.which("sinfo") is None:
        pytest.fail(f"Slurm is not installed (no sinfo on PATH): {fix}")
    proc = subprocess.run(["sinfo", "-h", "-o", "%P %a %D"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or "debug" not in proc.stdout:
        pytest.fail(f"the Slurm cluster does not answer ({proc.stderr.strip() or proc.stdout.strip()}): {fix}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (scripts/test.sh), the tests of the one real Slurm cluster run one at a
    time on one worker (their allocations would wait for each other's nodes), beside the rest."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures tests recorded (``record_property("figures", ...)``: the fault-injection run's counts), at the
    end of the run, whether or not its tests ran in xdist workers."""
    for report in terminalreporter.getreports("passed") + terminalreporter.getreports("failed"):
        for name, value in report.user_properties:
            if name == "figures":
                terminalreporter.write_line(f"{report.nodeid}: {value}")
