"""Shared fixtures: an isolated site registry, a bare store and a real site directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from balsamctl.site import Site, init_site
from store import Store, sqlite_url


@pytest.fixture(autouse=True)
def isolated_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own site registry: the user's ``sites.yaml`` is never read or written."""
    path = tmp_path_factory.mktemp("config") / "sites.yaml"
    monkeypatch.setenv("BALSAMCTL_CONFIG", str(path))
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite store in ``tmp_path``."""
    s = Store(sqlite_url(tmp_path / "store.db"))
    yield s
    s.close()


@pytest.fixture
def site_id(store: Store, tmp_path: Path) -> int:
    """A site registered in :func:`store`."""
    return store.ensure_site("test-site", str(tmp_path))


@pytest.fixture
def balsam_site(tmp_path: Path) -> Iterator[Site]:
    """A real site directory made by ``init_site`` (local scheduler, SQLite store)."""
    site = init_site(tmp_path / "site", "test-site")
    yield site
    site.close()
