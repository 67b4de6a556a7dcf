"""Finding sites: the one around a directory, or the ones ``--site`` names in the registry.

``--site`` takes Balsam's forms: ``NAME``, an integer site ``ID``, ``a,b`` (names, ids or ``this``), ``all`` (every
registered site), ``active`` (those whose controller is alive: a heartbeat in the last two minutes) and ``this``
(the site containing the current directory, the default)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from balsamctl.site.light_settings import SiteError

if TYPE_CHECKING:
    from balsamctl.site.handle import Site
    from balsamctl.site.registry import Entry

OnError = Callable[[str, Exception], None]
"""Told of a site that cannot be opened (its name, the error) when the others should go on."""


def find_site_dir(start: Path) -> Path | None:
    """The site directory containing ``start``, if any."""
    for candidate in (start, *start.parents):
        if (candidate / "settings.yml").is_file() and (candidate / ".balsam").is_dir():
            return candidate
    return None


def _here(cwd: Path) -> Path:
    here = find_site_dir(cwd)
    if here is None:
        from balsamctl.site import registry

        known = ", ".join(e.name for e in registry.entries()) or "none registered"
        raise SiteError(f"not inside a site directory; pass --site NAME or --site all (sites: {known})")
    return here


def selected(spec: str | None, cwd: Path) -> Iterator[Entry | Path]:
    """What ``--site`` names, in order: registry entries, or the directory of ``this``; :class:`SiteError` for a
    name or id not registered, once the sites before it are given. ``active`` is every entry (see
    :func:`resolve_sites`). The registry (YAML) is read only when needed."""
    if spec in (None, "", "this"):
        yield _here(cwd)
        return
    from balsamctl.site import registry

    entries = registry.entries()
    if spec in ("all", "active"):
        yield from entries
        return
    by_name = {e.name: e for e in entries}
    for ref in spec.split(","):
        with_id = [e for e in entries if str(e.id) == ref]
        if ref == "this":
            yield _here(cwd)
        elif ref in by_name:
            yield by_name[ref]
        elif len(with_id) == 1:
            yield with_id[0]
        elif with_id:
            names = ", ".join(e.name for e in with_id)
            raise SiteError(f"site id {ref} is ambiguous: sites {names} (of different stores) have it; use a name")
        else:
            raise SiteError(f"no site named {ref!r} (registered: {', '.join(by_name) or 'none'})")


def site_paths(spec: str | None, cwd: Path) -> Iterator[Path]:
    """The directories of the sites ``--site`` names, for the CLI's fast paths; :class:`SiteError` if one lives on
    another machine or ``active`` asks their stores (the full path answers then)."""
    if spec == "active":
        raise SiteError("--site active asks each site's store")
    for found in selected(spec, cwd):
        if isinstance(found, Path):
            yield found
        elif found.path is None:
            raise SiteError(f"site {found.name} is reached through its store")
        else:
            yield found.path


def open_entry(found: Entry | Path) -> Site:
    """The site of a registry entry or a directory: its directory loaded, or (a remote site) its store's handle."""
    from balsamctl.site.directory import SiteDirectory

    if isinstance(found, Path):
        return SiteDirectory.load(found)
    if found.path is not None:
        return SiteDirectory.load(found.path)
    from balsamctl.site.remote import RemoteSite

    assert found.store is not None
    return RemoteSite(found.name, found.store, found.uuid)


def resolve_sites(spec: str | None, cwd: Path, on_error: OnError | None = None) -> list[Site]:
    """The sites named by ``--site`` (see :func:`selected`), opened; with ``active``, those whose controller's
    heartbeat is recent. A site that cannot be opened raises :class:`SiteError`, or, given ``on_error``, is told
    to it and left out."""
    found: list[Site] = []
    for item in selected(spec, cwd):
        name = item.name if not isinstance(item, Path) else str(item)
        try:
            site = open_entry(item)
            if spec == "active" and not _is_active(site):
                site.close()
                continue
        except SiteError as exc:
            if on_error is None:
                raise
            on_error(name, exc)
            continue
        found.append(site)
    return found


def _is_active(site: Site) -> bool:
    """Whether the site's controller heartbeat is recent, as its store says."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return site.store.site_record(site.site_id).active()
    except SQLAlchemyError as exc:
        raise SiteError(f"site {site.name}: cannot read its store: {exc}") from None
