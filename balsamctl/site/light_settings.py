"""A site's name and store URL read without pydantic or YAML, for the CLI's fast paths, vouched for by the last full
read of its ``settings.yml``.

:meth:`balsamctl.site.directory.SiteDirectory.load` reads ``settings.yml`` whole (YAML, the pydantic model, the
scheduler) and, once it is valid, records in ``.balsam/settings-checked.json`` the exact text it read with the name
and store URL found in it (:func:`remember`). :func:`checked` trusts that record only while ``settings.yml`` holds
that text byte for byte and the record was made by this balsamctl; otherwise it answers None and the caller loads the
site in full, so that an invalid file is reported exactly as before. Both paths expand the store URL with
:func:`store_url`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from balsamctl import __version__
from balsamctl.store.fastread import sqlite_url

RECORD = "settings-checked.json"
"""The record of the last valid read of ``settings.yml``, in the site's ``.balsam/``."""


class SiteError(Exception):
    """A site that cannot be found, created or read."""


def store_url(path: Path, configured: str | None) -> str:
    """The SQLAlchemy URL of the store of the site at ``path``: ``store_url`` of its settings with ``${VAR}``
    expanded (credentials can stay in the environment), else the SQLite file in its ``.balsam/``."""
    if configured:
        return os.path.expandvars(configured)
    return sqlite_url(path / ".balsam" / "store.db")


def _record(text: str, name: str, configured: str | None) -> dict[str, str | None]:
    return {"version": __version__, "settings": text, "name": name, "store_url": configured}


def remember(path: Path, text: str, name: str, configured: str | None) -> None:
    """Record that ``settings.yml`` of the site at ``path`` (resolved), holding ``text``, is valid and names the site
    ``name`` and its store ``configured`` (unexpanded). Best effort: a site whose ``.balsam/`` this user cannot
    write is read in full every time."""
    state = path / ".balsam"
    record = _record(text, name, configured)
    if not state.is_dir() or _read(state / RECORD) == record:
        return
    tmp = state / f"{RECORD}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            json.dump(record, stream)
        os.replace(tmp, state / RECORD)
    except OSError:
        tmp.unlink(missing_ok=True)


def _read(file: Path) -> object:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None


def checked(path: Path) -> tuple[str, str | None] | None:
    """``(name, store_url as configured)`` of the site at ``path`` (resolved) if its ``settings.yml`` is the text
    last found valid; None if it may not be (changed since, never read in full, or not there)."""
    record = _read(path / ".balsam" / RECORD)
    if not isinstance(record, dict) or record.get("version") != __version__:
        return None
    try:
        text = (path / "settings.yml").read_text()
    except (OSError, ValueError):
        return None
    name, configured = record.get("name"), record.get("store_url")
    if not isinstance(name, str) or not isinstance(configured, str | None) or record != _record(text, name, configured):
        return None
    return name, configured
