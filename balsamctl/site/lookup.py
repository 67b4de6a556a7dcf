"""Finding sites: the one around a directory, or the ones ``--site`` names in the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from balsamctl.site.light_settings import SiteError

if TYPE_CHECKING:
    from balsamctl.site.directory import SiteDirectory


def find_site_dir(start: Path) -> Path | None:
    """The site directory containing ``start``, if any."""
    for candidate in (start, *start.parents):
        if (candidate / "settings.yml").is_file() and (candidate / ".balsam").is_dir():
            return candidate
    return None


def site_paths(spec: str | None, cwd: Path) -> Iterator[Path]:
    """The directories of the sites named by ``--site``: ``NAME``, ``a,b``, ``all``, ``this`` (default: the site
    containing cwd), in order; :class:`SiteError` for a name not registered, once the sites before it are given.
    The registry (YAML) is read only when needed: the CLI's fast paths find the site around cwd with this."""
    if spec in (None, "", "this"):
        here = find_site_dir(cwd)
        if here is None:
            from balsamctl.site import registry

            known = ", ".join(sorted(registry.load_registry())) or "none registered"
            raise SiteError(f"not inside a site directory; pass --site NAME or --site all (sites: {known})")
        yield here
        return
    from balsamctl.site import registry

    entries = registry.load_registry()
    if spec == "all":
        yield from (p for _, p in sorted(entries.items()))
        return
    for name in spec.split(","):
        if name == "this":
            yield from site_paths("this", cwd)
        elif name in entries:
            yield entries[name]
        else:
            raise SiteError(f"no site named {name!r} (registered: {', '.join(sorted(entries)) or 'none'})")


def resolve_sites(spec: str | None, cwd: Path) -> list[SiteDirectory]:
    """The sites named by ``--site`` (see :func:`site_paths`), loaded."""
    from balsamctl.site.directory import SiteDirectory

    return [SiteDirectory.load(path) for path in site_paths(spec, cwd)]
