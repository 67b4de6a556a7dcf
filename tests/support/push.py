"""Push wake-ups helpers: a site on a fresh PostgreSQL database, and a plain connection that counts notifications."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from tests.support.databases import Databases, pg_server_url
from tests.support.site_ops import configure


@contextlib.contextmanager
def pg_site(tmp_path: Path, name: str, settings: dict[str, Any]) -> Iterator[SiteDirectory]:
    """An unregistered local site whose store is a fresh PostgreSQL database, with ``settings`` merged into its
    settings.yml."""
    dbs = Databases("postgresql", pg_server_url())
    try:
        with dbs.fresh(tmp_path) as url:
            made = init_site(tmp_path / "site", name, register=False)
            site = configure(made, {**settings, "store_url": url})
            try:
                yield site
            finally:
                site.close()
    finally:
        dbs.close()


class Tap:
    """A plain connection of its own that ``LISTEN``s on one channel: every notification, as PostgreSQL sends it."""

    def __init__(self, store_url: str, channel: str) -> None:
        conninfo = make_url(store_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def heard(self, within: float = 0.5) -> int:
        """How many notifications came, waiting ``within`` seconds for late ones."""
        deadline = time.monotonic() + within
        count = 0
        while (left := deadline - time.monotonic()) > 0:
            count += len(list(self.conn.notifies(timeout=left)))
        return count

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
