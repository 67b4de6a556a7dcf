"""Finding sites: the one around a directory, or the ones ``--site`` names in the registry."""

from __future__ import annotations

from pathlib import Path

from balsamctl.site import registry
from balsamctl.site.directory import SiteDirectory, SiteError


def find_site_dir(start: Path) -> Path | None:
    """The site directory containing ``start``, if any."""
    for candidate in (start, *start.parents):
        if (candidate / "settings.yml").is_file() and (candidate / ".balsam").is_dir():
            return candidate
    return None


def resolve_sites(spec: str | None, cwd: Path) -> list[SiteDirectory]:
    """The sites named by ``--site``: ``NAME``, ``a,b``, ``all``, ``this`` (default: the site containing cwd)."""
    if spec in (None, "", "this"):
        here = find_site_dir(cwd)
        if here is None:
            known = ", ".join(sorted(registry.load_registry())) or "none registered"
            raise SiteError(f"not inside a site directory; pass --site NAME or --site all (sites: {known})")
        return [SiteDirectory.load(here)]
    entries = registry.load_registry()
    if spec == "all":
        return [SiteDirectory.load(p) for _, p in sorted(entries.items())]
    sites = []
    for name in spec.split(","):
        if name == "this":
            sites += resolve_sites("this", cwd)
        elif name in entries:
            sites.append(SiteDirectory.load(entries[name]))
        else:
            raise SiteError(f"no site named {name!r} (registered: {', '.join(sorted(entries)) or 'none'})")
    return sites
