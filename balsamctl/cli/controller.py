"""``balsamctl controller``: run, start, stop or check a site's controller."""

from __future__ import annotations

import typer

from balsamctl.cli import output
from balsamctl.cli.common import SiteOpt, echo, local_sites, one_local_site

controller_app = typer.Typer(no_args_is_help=True)


@controller_app.command("run")
def controller_run(site: SiteOpt = None) -> None:
    """Run the site's controller in the foreground."""
    from balsamctl.controller import daemon

    daemon.run(one_local_site(site))


@controller_app.command("start")
def controller_start(site: SiteOpt = None) -> None:
    """Start the controller of each site in the background."""
    from balsamctl.controller import daemon

    for s in local_sites(site):
        pid = daemon.start(s)
        typer.echo(f"controller of site/{s.name} started (pid {pid}, log {daemon.status(s)['log']})")


@controller_app.command("stop")
def controller_stop(site: SiteOpt = None) -> None:
    """Stop the controller of each site."""
    from balsamctl.controller import daemon

    for s in local_sites(site):
        typer.echo(f"controller of site/{s.name} {'stopped' if daemon.stop(s) else 'was not running'}")


@controller_app.command("status")
def controller_status(site: SiteOpt = None) -> None:
    """Whether each site's controller runs."""
    from balsamctl.controller import daemon

    rows = []
    for s in local_sites(site):
        st = daemon.status(s)
        rows.append([s.name, "running" if st["running"] else "stopped", output.cell(st["pid"]), str(st["log"])])
    echo(output.table(["SITE", "STATUS", "PID", "LOG"], rows))
