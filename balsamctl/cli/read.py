"""The verbs that read: ``get``, ``describe``, ``logs``, ``schema`` and ``version``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError

from balsamctl import __version__
from balsamctl.cli import listing, output
from balsamctl.cli.common import (
    OutputFormat,
    Selection,
    SelectorOpt,
    SiteOpt,
    StoreGroup,
    complete_job_names,
    complete_kinds,
    complete_names,
    echo,
    err,
    fetch,
    one_site,
    states,
)
from balsamctl.schemas import KINDS, Job, kind_of
from balsamctl.site.directory import SiteError, said
from balsamctl.site.joboutput import attempt_files
from balsamctl.store import Selector
from balsamctl.store.fastread import ObjectData

DEFAULT_EVENT_LIMIT = 100


class _StoreSource:
    """One store's share of a listing, read by the full store."""

    def __init__(self, group: StoreGroup, sel: Selector) -> None:
        self.group, self.sel = group, sel

    def fetch(self, after_id: int, size: int) -> list[tuple[int, ObjectData]]:
        """A page of objects (see :class:`balsamctl.cli.listing.Source`)."""
        try:
            found = self.group.store.list_objects(self.sel, limit=size, after_id=after_id)
        except SQLAlchemyError as exc:
            raise listing.StoreFailed(said(exc)) from None
        return [(o.id, output.data_of(o)) for o in found]

    def count(self) -> int:
        """How many objects there are in all."""
        try:
            return self.group.store.count_objects(self.sel)
        except SQLAlchemyError as exc:
            raise listing.StoreFailed(said(exc)) from None

    def where(self) -> str:
        """The store and its sites, for a warning."""
        return self.group.where()


def get(
    kind: Annotated[
        str, typer.Argument(help="apps, jobs, batchjobs (bj), sites or events.", autocompletion=complete_kinds)
    ],
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Only these objects (events: of this object).", autocompletion=complete_names),
    ] = None,
    selector: SelectorOpt = None,
    state: Annotated[list[str] | None, typer.Option("--state", help="Only objects in these states.")] = None,
    fmt: Annotated[OutputFormat | None, typer.Option("-o", "--output", help="wide, yaml, json or name.")] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=0,
            help="At most N (default: tables 500, events 100; -o name|json|yaml every match); 0: all, page by page.",
        ),
    ] = None,
    event_kind: Annotated[str | None, typer.Option("--kind", help="events: only of this kind.")] = None,
    site: SiteOpt = None,
) -> None:
    """List objects as a table, or as YAML, JSON or names."""
    word = {"site": "sites", "sites": "sites", "event": "events", "events": "events"}.get(kind.lower())
    names = names or []
    if word in ("sites", "events") and (selector or state):
        raise ValueError(f"-l and --state do not apply to {word}")
    if word != "events" and event_kind:
        raise ValueError("--kind applies to events only")
    if word == "sites":
        from balsamctl.cli.sites import print_sites

        if names:
            raise ValueError("get sites takes no NAME; choose sites with --site")
        if not print_sites(site or "all", fmt):
            raise typer.Exit(listing.PARTIAL)  # what could be read was printed, with a warning per site left out
    elif word == "events":
        _get_events(site, names, event_kind, DEFAULT_EVENT_LIMIT if limit is None else limit, fmt)
    else:
        k = kind_of(kind)
        labels, wanted = listing.parse_labels(selector), states(k, state or [])
        chosen = Selection(site)
        sources = [
            _StoreSource(group, Selector(k, tuple(group.ids), tuple(names), labels, wanted))
            for group in chosen.groups()
        ]
        code = listing.show(
            sources,
            k,
            names,
            fmt or "table",
            0 if names else listing.default_limit(fmt, limit),
            many=listing.many_sites(site, chosen.names),
            out=echo,
            err=err,
            side_by_side=True,
        )
        if chosen.code(code):
            raise typer.Exit(chosen.code(code))


def _get_events(spec: str | None, names: Sequence[str], kind: str | None, limit: int, fmt: OutputFormat | None) -> None:
    """The newest ``limit`` events of the sites ``--site`` names (of one object with a NAME), newest last; their
    stores read side by side, one that fails a warning."""
    if fmt not in (None, "wide"):
        raise ValueError(f"-o {fmt} is not supported for events")
    if len(names) > 1:
        raise ValueError("get events takes at most one NAME")
    if limit == 0:
        raise ValueError("--limit 0 (all) is not supported for events; give a number")
    k = kind_of(kind) if kind else None

    def read(group: StoreGroup) -> list[tuple[str, dict[str, Any]]] | str:
        try:
            found = group.store.events(tuple(group.ids), kind=k, name=names[0] if names else None, limit=limit)
        except SQLAlchemyError as exc:
            return listing.store_warning(group.where(), said(exc), reached=True)
        return [(group.ids[e["site_id"]], e) for e in found]

    chosen = Selection(spec)
    events = []
    for got in listing.each(read, chosen.groups()):
        if isinstance(got, str):
            chosen.warn(got)
        else:
            events += got
    events = sorted(events, key=lambda se: se[1]["time"])[-limit:]
    many = listing.many_sites(spec, chosen.names)
    headers = (["SITE"] if many else []) + output.EVENT_HEADERS
    rows = [([name] if many else []) + output.event_row(e) for name, e in events]
    if not rows:
        err("No events found.")
    echo(output.table(headers, rows))
    if chosen.code():
        raise typer.Exit(chosen.code())


def describe(
    kind: Annotated[str, typer.Argument(help="apps, jobs or batchjobs (bj).", autocompletion=complete_kinds)],
    name: Annotated[str, typer.Argument(help="The object.", autocompletion=complete_names)],
    site: SiteOpt = None,
) -> None:
    """Show one object in detail: fields, spec, status and its last 20 events."""
    target = one_site(site)
    obj = fetch(target, kind_of(kind), name)
    events = target.store.events((target.site_id,), kind=obj.kind, name=obj.name, limit=20)
    echo(output.describe(obj, events, time.time()))


def logs(
    kind: Annotated[str, typer.Argument(help="job", autocompletion=complete_kinds)],
    name: Annotated[str, typer.Argument(help="The Job.", autocompletion=complete_job_names)],
    attempt: Annotated[int | None, typer.Option("--attempt", min=1, help="Only this attempt.")] = None,
    site: SiteOpt = None,
) -> None:
    """Print a Job's output, every attempt in order (or one with --attempt)."""
    if kind_of(kind) != "Job":
        raise ValueError("only Jobs have logs")
    target = one_site(site)
    job = fetch(target, "Job", name).manifest
    assert isinstance(job, Job)
    try:
        workdir = target.workdir(job.spec.workdir)
    except SiteError as exc:
        if target.local:
            raise
        last = job.status.attempts
        if attempt is not None and attempt != last:
            raise SiteError(f"{exc}; its store keeps the end of the last attempt only (attempt {last})") from None
        err(f"{exc}; the end of its last output (attempt {last}), as kept in the store:")
        echo(job.status.output_tail or "")
        return
    files = attempt_files(workdir)
    if not files:
        raise SiteError(f"job/{name} has no output yet (no job.out in {workdir})")
    if attempt is not None:
        if attempt not in files:
            raise SiteError(f"job/{name} has no output of attempt {attempt} (attempts: {', '.join(map(str, files))})")
        files = {attempt: files[attempt]}
    for number, path in files.items():
        if len(files) > 1:
            typer.echo(f"==> attempt {number} <==")
        with path.open(errors="replace") as stream:
            while chunk := stream.read(1 << 16):
                typer.echo(chunk, nl=False)


def schema(kind: Annotated[str, typer.Argument(help="App, Job or BatchJob.")]) -> None:
    """Print a kind's JSON Schema."""
    typer.echo(json.dumps(KINDS[kind_of(kind)].model_json_schema(by_alias=True), indent=2))


def version() -> None:
    """Print balsamctl's version."""
    typer.echo(f"balsamctl {__version__}")
