"""Making a new site: its directory laid out from a platform preset, its id in the store, its registry entry."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from balsamctl.schedulers import UnsupportedScheduler, check_scheduler, scheduler_class
from balsamctl.schemas.settings import SchedulerKind, is_valid_site_name
from balsamctl.site import platforms, registry
from balsamctl.site.directory import (
    LAYOUT,
    SiteDirectory,
    SiteError,
    create_private_sqlite_file,
    open_store,
    write_uuid,
)
from balsamctl.store import NotFound, redact


def init_site(
    path: Path,
    name: str,
    scheduler: SchedulerKind | None = None,
    *,
    register: bool = True,
    site_id: int | None = None,
    platform: str | None = None,
    store_url: str | None = None,
) -> SiteDirectory:
    """Lay out a new site at ``path`` (private to its owner), give it its identity (a UUID) and register it in its
    store and in the registry (with ``site_id`` if free).

    ``store_url``: a shared store (PostgreSQL; ``${VAR}`` kept in settings.yml, expanded to connect), else SQLite in
    the site's ``.balsam/``. A name its store already gives to another site is refused, naming that site's owner,
    host and path, and nothing is made.

    Its scheduler, settings and job template come from a platform preset (``balsamctl/site/platforms/``): ``platform``,
    else ``scheduler``'s generic one (``generic-<scheduler>``; ``local``, the default). A ``scheduler`` given with
    a ``platform`` must be the preset's.
    """
    path = path.resolve()
    if (path / "settings.yml").exists():
        raise SiteError(f"{path} is already a site")
    registered = registry.entry(name)
    if registered is not None and registered.path != path:
        where = registered.path or f"the store {redact(registered.store or '')}"
        raise SiteError(f"a site named {name!r} is already registered at {where}")
    if not is_valid_site_name(name) or name.isdigit():
        raise SiteError(f"invalid site name {name!r}: use letters, digits, '-', '_' and '.', not digits alone (ids)")
    preset = _site_preset(platform, scheduler)
    try:  # a scheduler version its adapter cannot read is refused here, with the version found
        check_scheduler(preset.scheduler)
    except UnsupportedScheduler as exc:
        raise SiteError(f"scheduler {preset.scheduler!r}: {exc}") from None
    if store_url is not None:
        create_private_sqlite_file(os.path.expandvars(store_url))  # a SQLite file is made private before it is opened
        _check_name_free(name, store_url)
    settings, template_text = preset.site_settings(name), preset.template
    body = settings.model_dump(mode="json", exclude={"store_url"})
    if store_url is not None:
        body = {"name": body.pop("name"), "store_url": store_url, **body}
    made = [p for p in (path, *(path / sub for sub in LAYOUT)) if not p.exists()]
    old_umask = os.umask(0o077)
    try:
        path.mkdir(parents=True, exist_ok=True)
        for sub in LAYOUT:
            (path / sub).mkdir(exist_ok=True)
        (path / "job-template.sh").write_text(template_text)
        (path / "settings.yml").write_text(_SETTINGS_HEADER + yaml.safe_dump(body, sort_keys=False))
        write_uuid(path)
    finally:
        os.umask(old_umask)
    site = SiteDirectory.load(path)
    try:
        site_id = site.store.ensure_site(
            name, str(path), preferred_id=site_id or registry.next_id(), uuid=site.uuid, host=site.host
        )
    except BaseException:  # taken meanwhile, or the store failed: nothing is left made
        site.close()
        _unmake(path, made)
        raise
    if register:
        registry.register(name, path, site_id, site.uuid)
    return site


def _unmake(path: Path, made: list[Path]) -> None:
    """Take back what :func:`init_site` made at ``path``: the directories it created, else its files."""
    if path in made:
        shutil.rmtree(path, ignore_errors=True)
        return
    for file in ("job-template.sh", "settings.yml", ".balsam/uuid"):
        (path / file).unlink(missing_ok=True)
    for directory in made:
        shutil.rmtree(directory, ignore_errors=True)


def _check_name_free(name: str, store_url: str) -> None:
    """:class:`SiteError` if the store at ``store_url`` already has a site named ``name`` (or cannot be opened)."""
    store = open_store(name, os.path.expandvars(store_url))
    try:
        taken = store.site_record(name, by_name=True)
    except NotFound:
        return
    finally:
        store.close()
    raise SiteError(
        f"a site named {name!r} already exists in the store {redact(os.path.expandvars(store_url))}"
        f"{f' of {taken.owner}' if taken.owner else ''}, at {taken.where()} (site id {taken.id}): choose another name"
    )


def _site_preset(platform: str | None, scheduler: SchedulerKind | None) -> platforms.Platform:
    """The preset a new site is made from: ``platform``, else ``scheduler``'s generic one (``local`` by default)."""
    if scheduler is not None:
        try:
            scheduler_class(scheduler)
        except ValueError as exc:
            raise SiteError(f"scheduler: {exc}") from None
    try:
        preset = platforms.load_platform(platform or platforms.scheduler_platform(scheduler or "local"))
    except platforms.PlatformError as exc:
        raise SiteError(str(exc)) from None
    if scheduler is not None and scheduler != preset.scheduler:
        raise SiteError(f"platform {preset.name!r} uses scheduler {preset.scheduler!r}, not {scheduler!r}")
    return preset


_SETTINGS_HEADER = """\
# balsamctl site settings. store_url: set to a PostgreSQL URL (e.g. postgresql+psycopg://user@host/db,
# credentials as ${ENV_VARS}) when launchers on other hosts or many sites share one store.
"""
