"""The launcher in-process: real site and store (SQLite), the real pilot loop, real processes on this host."""

from __future__ import annotations

from pathlib import Path

import pytest

from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from tests.support.site_ops import configure


@pytest.fixture
def site(tmp_path: Path) -> SiteDirectory:
    """An unregistered local site whose launchers poll every 50 ms and stop after 1 s without work."""
    made = init_site(tmp_path / "site", "launcher", register=False)
    return configure(made, {"launcher": {"idle_ttl_sec": 1.0, "poll_interval_sec": 0.05}})
