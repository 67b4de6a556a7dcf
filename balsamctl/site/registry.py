"""The user's site registry: ``$BALSAMCTL_CONFIG`` or ``$XDG_CONFIG_HOME/balsamctl/sites.yaml``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
    """One registered site: its name, directory and integer id."""

    name: str
    path: Path
    id: int


def entries() -> list[Entry]:
    """Every registered site, by name."""
    path = registry_path()
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    rows = data.get("sites", [])
    return sorted((Entry(str(e["name"]), Path(e["path"]), int(e.get("id", 0))) for e in rows), key=lambda e: e.name)


def load_registry() -> dict[str, Path]:
    """``{site name: site directory}``."""
    return {e.name: e.path for e in entries()}


def next_id() -> int:
    """An integer id no registered site has."""
    return max((e.id for e in entries()), default=0) + 1


def _save(rows: list[Entry]) -> None:
    """Write the registry atomically, private to its owner."""
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {"sites": [{"name": e.name, "id": e.id, "path": str(e.path)} for e in sorted(rows, key=lambda e: e.name)]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(body, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


def register(name: str, path: Path, site_id: int) -> None:
    """Add or update one site."""
    _save([e for e in entries() if e.name != name] + [Entry(name, path.resolve(), site_id)])


def unregister(name: str) -> bool:
    """Forget one site; whether it was registered."""
    rows = entries()
    kept = [e for e in rows if e.name != name]
    if len(kept) == len(rows):
        return False
    _save(kept)
    return True
