"""``balsamctl site``: create, list and forget sites; the sites table ``get sites`` prints too."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from balsamctl.cli import output
from balsamctl.cli.common import OutputFormat, complete_registered, echo, err
from balsamctl.schedulers import SCHEDULERS
from balsamctl.schemas.settings import SchedulerKind
from balsamctl.site import platforms, registry
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory, SiteError

site_app = typer.Typer(no_args_is_help=True)


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
) -> None:
    """Lay out a new site directory and register it.

    Its scheduler, settings.yml and job-template.sh come from a platform preset (balsamctl/site/platforms/);
    --scheduler X gives exactly what --platform generic-X gives.
    """
    site = init_site(path, name or path.resolve().name, scheduler, platform=platform)
    typer.echo(f"site/{site.name} created at {site.path}")


def print_sites(entries: Iterable[tuple[str, Path]], fmt: OutputFormat | None) -> bool:
    """The sites table (or names); sites whose directory or store cannot be read are listed with a warning.
    Whether every site could be read."""
    if fmt in ("yaml", "json"):
        raise ValueError(f"-o {fmt} is not supported for sites")
    rows, readable = [], True
    for name, path in entries:
        site, site_id, unstarted = None, None, None
        try:
            site = SiteDirectory.load(path)
            site_id = site.site_id  # opens the store
            unstarted = _unstarted(site, site_id)
        except SiteError as exc:
            err(f"warning: {exc}" if site else f"warning: site {name}: {exc}")
            readable = False
        rows.append(output.site_row(name, path, site, site_id, unstarted))
    if fmt == "name":
        echo("".join(f"site/{r[0]}\n" for r in rows))
    else:
        echo(output.table(output.SITE_HEADERS, rows))
    return readable


def _unstarted(site: SiteDirectory, site_id: int) -> int | None:
    """The site's allocations in a row that never started a launcher; None, with a warning, if its store fails
    to count them (the rest of its row is still shown)."""
    from sqlalchemy.exc import DBAPIError

    try:
        return site.store.allocations_not_started(site_id)
    except DBAPIError as exc:
        said = str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__]
        err(f"warning: site {site.name}: cannot count its allocations that never started a launcher: {said[0]}")
        return None


@site_app.command("ls")
def site_ls() -> None:
    """List the registered sites."""
    entries = registry.load_registry()
    if not entries:
        err("No sites registered.")
    print_sites(sorted(entries.items()), None)  # the registry is listed whole: unreadable sites are warnings


@site_app.command("rm")
def site_rm(
    name: Annotated[str, typer.Argument(help="The site to forget.", autocompletion=complete_registered)],
) -> None:
    """Unregister a site; its directory and store are left untouched."""
    path = registry.load_registry().get(name)
    if path is None or not registry.unregister(name):
        raise SiteError(f"no site named {name!r} is registered")
    typer.echo(f"site/{name} unregistered (its directory {path} and its store were left untouched)")
