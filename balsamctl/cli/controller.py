"""``balsamctl controller``: run, start, stop or check a site's controller."""

from __future__ import annotations

import typer

from balsamctl.cli import output
from balsamctl.cli.common import Selection, SiteOpt, echo, local_sites, one_local_site

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
    """Whether each site's controller runs: by its pid file here, by the heartbeat it writes to its store for a site
    on another machine."""
    from balsamctl.controller import daemon
    from balsamctl.site.directory import SiteDirectory
    from balsamctl.site.remote import RemoteSite

    chosen = Selection(site)
    active = site == "active"  # every site's store says whether its controller is alive
    asked = [s for s in chosen.sites if active or not s.local]
    reached = {id(s) for group in chosen.groups(asked) for s in group.sites}
    rows = []
    for s in chosen.sites:
        if isinstance(s, SiteDirectory) and (id(s) in reached or not active):
            st = daemon.status(s)
            rows.append([s.name, "running" if st["running"] else "stopped", output.cell(st["pid"]), str(st["log"])])
        elif isinstance(s, RemoteSite) and id(s) in reached:
            running = f"running on {s.record.host}" if s.record.active() else "stopped"
            rows.append([s.name, running, output.cell(None), output.cell(None)])
    echo(output.table(["SITE", "STATUS", "PID", "LOG"], rows))
    if chosen.code():
        raise typer.Exit(chosen.code())
