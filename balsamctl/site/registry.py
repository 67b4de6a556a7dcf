"""The user's site registry: ``$BALSAMCTL_CONFIG`` or ``$XDG_CONFIG_HOME/balsamctl/sites.yaml``.

Each entry names a site and carries its integer id and UUID, and either its directory on this machine or, for a
site that lives on another machine, its store's URL (``site add NAME --store URL``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def registry_path() -> Path:
    """Where the registry lives."""
    explicit = os.environ.get("BALSAMCTL_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "balsamctl" / "sites.yaml"


@dataclass(frozen=True)
class Entry:
    """One registered site: its name, integer id and UUID, and its directory or (a remote site) its store's URL."""

    name: str
    path: Path | None
    id: int
    uuid: str | None = None
    store: str | None = None
    """A remote site's store URL as given (``${VAR}`` kept): None for a site with a directory here."""

    def row(self) -> dict[str, Any]:
        """The entry as the registry file holds it."""
        row: dict[str, Any] = {"name": self.name, "id": self.id}
        if self.uuid:
            row["uuid"] = self.uuid
        if self.path is not None:
            row["path"] = str(self.path)
        if self.store is not None:
            row["store"] = self.store
        return row


def entries() -> list[Entry]:
    """Every registered site, by name."""
    path = registry_path()
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    rows = data.get("sites", [])
    return sorted(
        (
            Entry(
                str(e["name"]),
                Path(e["path"]) if e.get("path") else None,
                int(e.get("id", 0)),
                e.get("uuid"),
                e.get("store"),
            )
            for e in rows
        ),
        key=lambda e: e.name,
    )


def entry(name: str) -> Entry | None:
    """The registered site ``name``, if any."""
    return next((e for e in entries() if e.name == name), None)


def load_registry() -> dict[str, Path]:
    """``{site name: site directory}`` of the sites with a directory on this machine."""
    return {e.name: e.path for e in entries() if e.path is not None}


def next_id() -> int:
    """An integer id no registered site has."""
    return max((e.id for e in entries()), default=0) + 1


def _save(rows: list[Entry]) -> None:
    """Write the registry atomically, private to its owner."""
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {"sites": [e.row() for e in sorted(rows, key=lambda e: e.name)]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(body, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


def register(name: str, path: Path, site_id: int, uuid: str | None = None) -> None:
    """Add or update one site with a directory here."""
    add(Entry(name, path.resolve(), site_id, uuid))


def add(new: Entry) -> None:
    """Add or update one entry."""
    _save([e for e in entries() if e.name != new.name] + [new])


def unregister(name: str) -> bool:
    """Forget one site; whether it was registered."""
    rows = entries()
    kept = [e for e in rows if e.name != name]
    if len(kept) == len(rows):
        return False
    _save(kept)
    return True
