"""``balsamctl site``: create, add, move, list and forget sites; the sites table ``get sites`` prints too."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from balsamctl.cli import listing, output
from balsamctl.cli.access import site_grant, site_revoke
from balsamctl.cli.common import OutputFormat, complete_registered, echo, err, site_warning
from balsamctl.cli.listing import PARTIAL
from balsamctl.schedulers import SCHEDULERS
from balsamctl.schemas.settings import SchedulerKind
from balsamctl.site import platforms, registry
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory, SiteError, said
from balsamctl.site.lookup import OnError, resolve_sites
from balsamctl.store import redact

if TYPE_CHECKING:
    from balsamctl.site.handle import Site

site_app = typer.Typer(no_args_is_help=True, help="Create, add, move, list, share and forget sites.")
T = TypeVar("T")

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help="A shared PostgreSQL store (postgresql+psycopg://USER@HOST/DB; a password as ${VAR}, or in PGPASSWORD or "
        "~/.pgpass). Default: SQLite in the site's .balsam/.",
    ),
]


@site_app.command("init")
def site_init(
    path: Annotated[Path, typer.Argument(help="The new site's directory.")],
    name: Annotated[str | None, typer.Option("--name", help="Default: the directory's name.")] = None,
    scheduler: Annotated[
        SchedulerKind | None,
        typer.Option(
            "--scheduler",
            metavar="|".join(sorted(SCHEDULERS)),
            help="The batch scheduler: the site is made from its preset, as with --platform generic-X (local: "
            "the local preset). Jobs start with srun under slurm, mpiexec under pbs, mpirun under lsf, aprun under "
            "cobalt. Default: local.",
        ),
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option(
            "--platform",
            metavar="NAME",
            help="Take the scheduler, settings and job template from a preset: "
            + ", ".join(platforms.platform_names())
            + ".",
        ),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Lay out a new site directory, give it its identity and register it.

    Its scheduler, settings.yml and job-template.sh come from a platform preset (balsamctl/site/platforms/);
    --scheduler X gives exactly what --platform generic-X gives. With --store, the site lives in a shared
    PostgreSQL store, where collaborators and the site's own launchers on other hosts reach it.
    """
    site = init_site(path, name or path.resolve().name, scheduler, platform=platform, store_url=store)
    typer.echo(f"site/{site.name} created at {site.path}")


@site_app.command("add")
def site_add(
    name: Annotated[str, typer.Argument(help="The site's name in its store.")],
    store: Annotated[str, typer.Option("--store", metavar="URL", help="Its store's URL (a password as ${VAR}).")],
) -> None:
    """Register a site that lives on another machine, by its store: every verb then works on it with --site NAME."""
    from balsamctl.site.remote import RemoteSite

    known = registry.entry(name)
    if known is not None:
        raise SiteError(f"a site named {name!r} is already registered ({known.path or redact(known.store or '')})")
    _no_new_sqlite_file(store)
    remote = RemoteSite(name, store)
    try:
        record = remote.record
    finally:
        remote.close()
    registry.add(registry.Entry(name, None, record.id, record.uuid, store))
    typer.echo(f"site/{name} added: id {record.id}, at {record.where()}")


def _no_new_sqlite_file(url: str) -> None:
    """:class:`SiteError` for a SQLite store whose file does not exist: opening it would make a new store."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(os.path.expandvars(url))
    except ArgumentError:
        raise SiteError(f"not a store URL: {redact(url)!r}") from None
    if parsed.get_backend_name() == "sqlite" and not (parsed.database and Path(parsed.database).is_file()):
        raise SiteError(f"no store at {redact(url)}: the file {parsed.database!r} does not exist")


@site_app.command("mv")
def site_mv(
    name: Annotated[str, typer.Argument(help="The site.", autocompletion=complete_registered)],
    path: Annotated[Path, typer.Argument(help="Its new directory (moved there, or already moved there by hand).")],
) -> None:
    """Move a site's directory (or record where it was moved to): its identity, id and objects stay."""
    entry = registry.entry(name)
    if entry is None or entry.path is None:
        raise SiteError(f"no site named {name!r} with a directory on this machine is registered")
    target = path.resolve()
    if not (target / "settings.yml").is_file():
        if target.exists():
            raise SiteError(f"{target} exists and is not the site: choose a new path")
        from balsamctl.controller.daemon import running_pid

        old = SiteDirectory.load(entry.path)
        if running_pid(old) is not None:
            raise SiteError(f"the controller of site {name} runs: `balsamctl controller stop --site {name}` first")
        old.close()
        shutil.move(str(entry.path), str(target))
    site = SiteDirectory.load(target)
    if entry.uuid is not None and site.uuid != entry.uuid:
        raise SiteError(f"{target} holds another site (uuid {site.uuid}, registered: {entry.uuid})")
    site.store.move_site(site.site_id, str(target), site.host)
    registry.add(registry.Entry(name, target, entry.id, site.uuid))
    site.close()
    typer.echo(f"site/{name} moved to {target}")


@site_app.command("ls")
def site_ls(fmt: Annotated[OutputFormat | None, typer.Option("-o", "--output")] = None) -> None:
    """List the registered sites (as ``get sites --site=all``)."""
    if not registry.entries():
        err("No sites registered.")
        return
    if not print_sites("all", fmt):
        raise typer.Exit(PARTIAL)


@site_app.command("rm")
def site_rm(
    name: Annotated[str, typer.Argument(help="The site to forget.", autocompletion=complete_registered)],
    purge: Annotated[
        bool,
        typer.Option("--purge", help="Also remove the site and everything it holds from its store (its owner only)."),
    ] = False,
) -> None:
    """Unregister a site; its directory and store are left untouched (with --purge, its store's records go)."""
    entry = registry.entry(name)
    if entry is None:
        raise SiteError(f"no site named {name!r} is registered")
    if purge:
        _purge(entry)
    registry.unregister(name)
    kept = "its store's records were removed" if purge else "its store was left untouched"
    where = f"its directory {entry.path}" if entry.path else "its directory on its own host"
    typer.echo(f"site/{name} unregistered ({where} and {kept})")


def _purge(entry: registry.Entry) -> None:
    """Remove the site of ``entry`` from its store, once it is sure to be that site (its UUID)."""
    from balsamctl.site.lookup import open_entry
    from balsamctl.site.remote import RemoteSite

    if entry.path is not None and not entry.path.is_dir():  # its directory is gone: reach its store by its settings
        raise SiteError(
            f"the directory of site {entry.name} ({entry.path}) is gone, and with it its store's URL: add it by its "
            f"store (`balsamctl site rm {entry.name}`, `balsamctl site add {entry.name} --store URL`) and purge that"
        )
    site = open_entry(entry)
    try:
        site.store.require_owner(site.site_id, "remove it")
        if isinstance(site, RemoteSite) and site.host is not None and site.record.active():
            raise SiteError(f"site {entry.name}'s controller is alive on {site.host}: stop it first")
        if isinstance(site, SiteDirectory):
            from balsamctl.controller.daemon import running_pid

            if running_pid(site) is not None:
                raise SiteError(f"site {entry.name}'s controller runs: `balsamctl controller stop --site {entry.name}`")
        site.store.remove_site(site.site_id)
    finally:
        site.close()


def print_sites(spec: str | None, fmt: OutputFormat | None) -> bool:
    """The sites table (or names, YAML, JSON) of the sites ``--site`` names, their stores read side by side, one
    query per kind per store. Several sites named (``all``, ``active``, ``a,b``), a site or store that cannot be
    read is a warning line and a row of what is known; one named, it is an error. Whether every site was read."""
    lenient = listing.partial_ok(spec)
    problems: list[str] = []

    def warn(name: str, exc: Exception) -> None:
        if not lenient:
            raise exc
        problems.append(name)
        err(site_warning(name, exc))

    found = resolve_sites(spec, Path.cwd(), on_error=warn if lenient else None)
    try:
        groups = listing.each(lambda group: _summaries(group, warn), _by_store(found))
    finally:
        for site in found:
            site.close()
    summaries = sorted((summary for group in groups for summary in group), key=lambda s: s["name"])
    if fmt == "name":
        echo("".join(f"site/{s['name']}\n" for s in summaries))
    elif fmt in ("json", "yaml"):
        items = {"apiVersion": "v1", "kind": "List", "items": summaries}
        echo(json.dumps(items, indent=2) + "\n" if fmt == "json" else output.to_yaml(items))
    else:
        headers = output.SITE_HEADERS + (output.SITE_WIDE_HEADERS if fmt == "wide" else [])
        echo(output.table(headers, [output.site_row(s, fmt == "wide") for s in summaries]))
    return not problems


def _by_store(found: Sequence[Site]) -> list[list[Site]]:
    groups: dict[str, list[Site]] = {}
    for site in found:
        groups.setdefault(site.store_url, []).append(site)
    return list(groups.values())


def _summaries(group: Sequence[Site], warn: OnError) -> list[dict[str, Any]]:
    """What ``get sites`` shows of the sites of one store: their published records and counts (one query each)."""
    from sqlalchemy.exc import SQLAlchemyError

    from balsamctl.store import redact

    url = redact(group[0].store_url)
    base: list[dict[str, Any]] = [
        {"name": s.name, "store": url, "path": str(s.path) if s.local else None} for s in group
    ]
    ids: dict[int, dict[str, Any]] = {}
    for site, summary in zip(group, base, strict=True):
        try:
            ids[site.site_id] = summary
        except (SiteError, SQLAlchemyError) as exc:
            warn(
                site.name, exc if isinstance(exc, SiteError) else SiteError(f"cannot read its store {url}: {said(exc)}")
            )
    if not ids:
        return base
    store = group[0].store

    def read(what: str, query: Callable[[], T], names: Sequence[str] | None = None) -> T | None:
        try:
            return query()
        except SQLAlchemyError as exc:
            for name in names if names is not None else [s["name"] for s in ids.values()]:
                warn(name, SiteError(f"cannot {what} in its store {url}: {said(exc)}"))
            return None

    records = read("read its record", lambda: {r.id: r for r in store.site_records(list(ids))}) or {}
    counts = read("count its Jobs and BatchJobs", lambda: store.object_counts(list(ids)))
    for site_id, summary in ids.items():
        summary["id"] = site_id
        record = records.get(site_id)
        if record is not None:
            summary.update(
                uuid=record.uuid,
                owner=record.owner,
                host=record.host,
                path=record.path,
                scheduler=record.scheduler,
                platform=record.platform,
                active=record.active(),
                heartbeat=output.timestamp(record.heartbeat_at) if record.heartbeat_at else None,
            )
        if counts is not None:
            summary.update(jobs=counts[site_id]["Job"], batchjobs=counts[site_id]["BatchJob"])
        summary["unstarted"] = read(
            "count its allocations that never started a launcher",
            partial(store.allocations_not_started, site_id),
            [summary["name"]],
        )
    for site, summary in zip(group, base, strict=True):
        if summary.get("scheduler") is None and isinstance(site, SiteDirectory):
            summary["scheduler"] = site.settings.scheduler  # its controller has not published yet
    return base


site_app.command("grant")(site_grant)
site_app.command("revoke")(site_revoke)
