"""Access control on a shared store: ``balsamctl store init`` (its owner prepares it for its users) and
``balsamctl site grant`` / ``site revoke`` (a site's owner lets other roles read or write it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from balsamctl.cli.common import complete_registered, registered_site

T = TypeVar("T")
store_app = typer.Typer(no_args_is_help=True)


@store_app.command("init")
def store_init(
    url: Annotated[str, typer.Argument(metavar="URL", help="The store (postgresql+psycopg://OWNER@HOST/DB).")],
    grant_to: Annotated[
        list[str] | None,
        typer.Option(
            "--grant-to", metavar="ROLE", help="A role that may use the store (repeat for more). Default: PUBLIC."
        ),
    ] = None,
) -> None:
    """Prepare a shared PostgreSQL store for its users (run by the owner of its database).

    Brings its schema to the newest revision, with row-level security, and lets the roles use it. Each role then
    sees and changes only the sites it made, and those their owners grant it (`balsamctl site grant`). Idempotent:
    run it again after an upgrade of balsamctl, or for more roles.
    """
    from balsamctl.store.access import init_store

    for line in _store_call(url, lambda: init_store(url, grant_to or [])):
        typer.echo(line)


def site_grant(
    site: Annotated[str, typer.Argument(help="A site you own.", autocompletion=complete_registered)],
    role: Annotated[str, typer.Argument(help="The PostgreSQL role to let in (a group role, or PUBLIC: every role).")],
    read: Annotated[bool, typer.Option("--read", help="Get, describe, logs, events: read only.")] = False,
    write: Annotated[bool, typer.Option("--write", help="Also apply, rerun and delete.")] = False,
) -> None:
    """Let a role read (--read) or read and write (--write) a site you own in a shared store.

    The store enforces it, whatever client the role uses. A write grant lets the role's Jobs run with your site's
    launchers, as you.
    """
    from balsamctl.store import access

    if read == write:
        raise typer.BadParameter("give one of --read or --write")
    chosen = registered_site(site)
    action = _store_call(
        chosen.store_url, lambda: access.grant(chosen.store, chosen.site_id, role, "write" if write else "read")
    )
    typer.echo(f"site/{chosen.name}: {'write' if write else 'read'} access {action} to role {role}")


def site_revoke(
    site: Annotated[str, typer.Argument(help="A site you own.", autocompletion=complete_registered)],
    role: Annotated[str, typer.Argument(help="The role whose grant to take.")],
) -> None:
    """Take back a role's access to a site you own."""
    from balsamctl.store import access

    chosen = registered_site(site)
    if _store_call(chosen.store_url, lambda: access.revoke(chosen.store, chosen.site_id, role)):
        typer.echo(f"site/{chosen.name}: access of role {role} revoked")
    else:
        typer.echo(f"site/{chosen.name}: role {role} had no grant")


def _store_call(url: str, call: Callable[[], T]) -> T:
    """``call()``, a store that cannot be reached (or that fails otherwise) said in one line, password hidden."""
    from sqlalchemy.exc import SQLAlchemyError

    from balsamctl.site.light_settings import SiteError
    from balsamctl.store import redact
    from balsamctl.store.engine import said

    try:
        return call()
    except SQLAlchemyError as exc:
        raise SiteError(f"the store {redact(url)}: {said(exc)}") from None
