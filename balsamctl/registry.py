"""The user's site registry: ``$BALSAMCTL_CONFIG`` or ``$XDG_CONFIG_HOME/balsamctl/sites.yaml``."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def registry_path() -> Path:
    """Where the registry lives."""
    explicit = os.environ.get("BALSAMCTL_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "balsamctl" / "sites.yaml"


def load_registry() -> dict[str, Path]:
    """``{site name: site directory}``."""
    path = registry_path()
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return {str(e["name"]): Path(e["path"]) for e in data.get("sites", [])}


def save_registry(entries: dict[str, Path]) -> None:
    """Write the registry atomically, private to its owner."""
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {"sites": [{"name": n, "path": str(p)} for n, p in sorted(entries.items())]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(body, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


def register(name: str, path: Path) -> None:
    """Add or update one site."""
    entries = load_registry()
    entries[name] = path.resolve()
    save_registry(entries)


def unregister(name: str) -> bool:
    """Forget one site; whether it was registered."""
    entries = load_registry()
    if entries.pop(name, None) is None:
        return False
    save_registry(entries)
    return True
