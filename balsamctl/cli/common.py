"""What the typer commands share: the root group and its error reporting, the common options (with their shell
completion), printing, and finding sites and objects."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from typer.core import TyperGroup

from balsamctl.cli import complete, listing, output
from balsamctl.site.lookup import resolve_sites

if TYPE_CHECKING:
    from balsamctl.site.directory import SiteDirectory
    from balsamctl.site.handle import Site
    from balsamctl.store import ApplyResult, Selector, Store, StoredObject

MAX_ERROR_LINES = 50


def expected_errors() -> tuple[type[Exception], ...]:
    """Errors reported as ``error: ...`` without a traceback (ValueError covers ManifestError and Conflict).
    Imported when one is raised: a verb loads only what it uses."""
    from balsamctl.site.light_settings import SiteError
    from balsamctl.store import NotFound
    from balsamctl.store.migrations import SchemaError

    return (SiteError, NotFound, ValueError, OSError, SchemaError)


@contextmanager
def reported(code: int) -> Iterator[None]:
    """Turn expected errors into ``error: ...`` lines on stderr and exit ``code``."""
    try:
        yield
    except BrokenPipeError:
        raise  # the reader went away (``| head``): typer exits quietly
    except Exception as exc:
        if not isinstance(exc, expected_errors()):
            raise
        lines = str(exc).splitlines() or [type(exc).__name__]
        for line in lines[:MAX_ERROR_LINES]:
            err(f"error: {line}")
        if len(lines) > MAX_ERROR_LINES:
            err(f"error: ... and {len(lines) - MAX_ERROR_LINES} more")
        raise typer.Exit(code) from None


class Root(TyperGroup):
    """The root command: every expected error of every subcommand exits 1 with ``error: ...``."""

    def invoke(self, ctx: Any) -> Any:
        """Run the subcommand, reporting expected errors."""
        with reported(1):
            return super().invoke(ctx)


# ---------------------------------------------------------------- shell completion of the common options


def _site_of(ctx: typer.Context) -> str | None:
    """The ``--site`` given so far (or ``$BALSAM_SITE``)."""
    site = ctx.params.get("site")
    return site if isinstance(site, str) else None


def complete_kinds(ctx: typer.Context, incomplete: str) -> list[str]:
    """The kind words of this verb."""
    return complete.kinds(ctx.info_name or "", incomplete)


def complete_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """The names of the objects of the KIND given, at the sites of ``--site``."""
    kind = ctx.params.get("kind")
    return complete.object_names(kind, _site_of(ctx), incomplete) if isinstance(kind, str) else []


def complete_job_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """The names of the Jobs at the sites of ``--site``."""
    return complete.object_names("jobs", _site_of(ctx), incomplete)


def complete_selector(ctx: typer.Context, incomplete: str) -> list[str]:
    """``-l``: the label keys of the KIND given (``key=``), after the terms already typed."""
    kind = ctx.params.get("kind")
    if not isinstance(kind, str):
        kind = complete.kind_on_line(os.environ)
    return complete.label_terms(kind, _site_of(ctx), incomplete)


def complete_sites(incomplete: str) -> list[str]:
    """``--site``: registered site names, ``all`` and ``this``."""
    return complete.site_names(incomplete)


def complete_registered(incomplete: str) -> list[str]:
    """A registered site's name."""
    return complete.site_names(incomplete, spec=False)


OutputFormat = Literal["wide", "yaml", "json", "name"]
SiteOpt = Annotated[
    str | None,
    typer.Option(
        "--site",
        envvar="BALSAM_SITE",
        help="NAME, ID, a,b, 'all', 'active' (a live controller) or 'this' (default: $BALSAM_SITE, else the site "
        "containing the current directory).",
        autocompletion=complete_sites,
    ),
]
FilesOpt = Annotated[list[str], typer.Option("-f", "--filename", help="A manifest file, a folder, or - for stdin.")]
RecursiveOpt = Annotated[bool, typer.Option("-R", "--recursive", help="Also read the subfolders of -f folders.")]
SelectorOpt = Annotated[
    str | None,
    typer.Option("-l", "--selector", help="Labels: key=value[,key=value...].", autocompletion=complete_selector),
]


# ---------------------------------------------------------------- printing


def echo(text: str) -> None:
    """Print ``text`` as it is (nothing if empty)."""
    if text:
        typer.echo(text, nl=False)


def err(message: str) -> None:
    """Print a line on stderr."""
    typer.echo(message, err=True)


def print_results(results: Iterable[ApplyResult], suffix: str = "", prefix: str = "") -> bool:
    """Print ``job/x created`` style lines (kubectl's message for ``not found``), each after ``prefix`` (a site's
    ``SITE/``); whether all were found."""
    all_found = True
    for r in results:
        if r.action == "not found":
            err(output.not_found(r.ref))
            all_found = False
        else:
            typer.echo(f"{prefix}{r.ref} {r.action}{suffix}")
    return all_found


# ---------------------------------------------------------------- sites and objects


def sites(spec: str | None) -> list[Site]:
    """The sites ``--site`` names, loaded."""
    return resolve_sites(spec, Path.cwd())


def one_site(spec: str | None) -> Site:
    """The one site ``--site`` names; :class:`SiteError` if it names several."""
    return only(sites(spec), spec)


S = TypeVar("S")


def only(found: list[S], spec: str | None) -> S:
    """The one site of ``found``; :class:`SiteError` if ``--site`` named several (or none)."""
    from balsamctl.site.light_settings import SiteError

    if len(found) != 1:
        raise SiteError(f"this command works on exactly one site, but --site {spec} names {len(found)}")
    return found[0]


def local_sites(spec: str | None) -> list[SiteDirectory]:
    """The sites ``--site`` names, each of which must have its directory on this machine (a controller runs there)."""
    from balsamctl.site.directory import SiteDirectory, SiteError

    found = sites(spec)
    for site in found:
        if not isinstance(site, SiteDirectory):
            raise SiteError(f"site {site.name} lives on another machine ({site.path}): run this there")
    return [s for s in found if isinstance(s, SiteDirectory)]


def one_local_site(spec: str | None) -> SiteDirectory:
    """The one site ``--site`` names, with its directory on this machine."""

    return only(local_sites(spec), spec)


def registered_site(name: str) -> Site:
    """The registered site named ``name`` (a reference's ``SITE/`` part: a name, never ``all`` or ``this``)."""
    from balsamctl.site import registry
    from balsamctl.site.directory import SiteError
    from balsamctl.site.lookup import open_entry

    entry = registry.entry(name)
    if entry is None:
        raise SiteError(f"no site named {name!r} is registered")
    return open_entry(entry)


@dataclass
class StoreGroup:
    """Sites of one store, opened: one query per kind lists them all (``--site=all`` over one PostgreSQL store is
    one query)."""

    url: str
    sites: list[Site]

    @property
    def store(self) -> Store:
        """The store."""
        return self.sites[0].store

    @property
    def ids(self) -> dict[int, str]:
        """``{site id: site name}``."""
        return {s.site_id: s.name for s in self.sites}

    def where(self) -> str:
        """The store and its sites, for a warning."""
        from balsamctl.store import redact

        return listing.where(redact(self.url), [s.name for s in self.sites])


class Selection:
    """The sites ``--site`` names. Several named (:func:`balsamctl.cli.listing.partial_ok`), a site or store that
    cannot be opened or read is a warning line on stderr (:meth:`warn`) and the others go on, the exit code then
    :data:`~balsamctl.cli.listing.PARTIAL` (:meth:`code`); one named, it is an error as it is for any verb."""

    def __init__(self, spec: str | None) -> None:
        self.spec = spec
        self.lenient = listing.partial_ok(spec)
        self.complete = True
        self.names: list[str] = []
        """Every site named, whether or not it could be opened."""
        self.sites = resolve_sites(
            "all" if spec == "active" else spec,  # whether a controller is alive is asked store by store, below
            Path.cwd(),
            on_error=self._left_out if self.lenient else None,
        )
        self.names += [s.name for s in self.sites]

    def _left_out(self, name: str, exc: Exception) -> None:
        self.names.append(name)
        self.warn(site_warning(name, exc))

    def warn(self, line: str) -> None:
        """Print a warning line: the listing is partial."""
        err(line)
        self.complete = False

    def code(self, code: int = 0) -> int:
        """The exit code of a listing that gave ``code``: :data:`~balsamctl.cli.listing.PARTIAL` after a warning."""
        return code if self.complete else listing.PARTIAL

    def groups(self, found: Sequence[Site] | None = None) -> list[StoreGroup]:
        """The sites (default: every site named) grouped by store, in order, their stores opened side by side (one
        thread a store): a store that cannot be opened is one warning naming it and its sites. With ``--site
        active``, the sites whose controller is alive."""
        by_url: dict[str, list[Site]] = {}
        for site in self.sites if found is None else found:
            by_url.setdefault(site.store_url, []).append(site)
        opened = listing.each(self._open, list(by_url.items()))
        for _, warnings in opened:
            for line in warnings:
                self.warn(line)
        return [StoreGroup(url, sites) for (url, _), (sites, _) in zip(by_url.items(), opened, strict=True) if sites]

    def _open(self, group: tuple[str, list[Site]]) -> tuple[list[Site], list[str]]:
        """Open one store and find its sites in it (in a thread of its own): the sites opened, the warnings."""
        from sqlalchemy.exc import SQLAlchemyError

        from balsamctl.site.directory import SiteError, said
        from balsamctl.store import redact

        url, sites = group
        caught: tuple[type[Exception], ...] = (*expected_errors(), SQLAlchemyError) if self.lenient else ()
        try:
            sites[0].store  # noqa: B018  (connects, checks the schema)
        except caught as exc:
            for site in sites:
                site.close()
            cause = exc.__context__ if isinstance(exc, SiteError) and isinstance(exc.__context__, Exception) else exc
            place = listing.where(redact(url), [s.name for s in sites])  # a site's error wraps the driver's: say that
            return [], [listing.store_warning(place, said(cause), reached=False)]
        opened, warnings = [], []
        for site in sites:
            try:
                site.site_id  # noqa: B018  (the site as its store knows it)
            except caught as exc:
                site.close()
                warnings.append(site_warning(site.name, exc))
                continue
            opened.append(site)
        if self.spec == "active" and opened:
            try:
                alive = {r.id for r in opened[0].store.site_records([s.site_id for s in opened]) if r.active()}
            except caught as exc:
                place = StoreGroup(url, opened).where()
                return [], [*warnings, listing.store_warning(place, said(exc), reached=True)]
            opened = [s for s in opened if s.site_id in alive]
        return opened, warnings


def site_warning(name: str, exc: Exception) -> str:
    """The warning line of a site that cannot be opened: its name, and the error (which may name it already)."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    named = message.startswith((f"site {name}:", f"site {name} "))
    return f"warning: {message}" if named else f"warning: site {name}: {message}"


def stdin(files: Sequence[str]) -> str | None:
    """Standard input, if ``-f -`` reads it."""
    return sys.stdin.read() if "-" in files else None


def states(kind: str, values: Sequence[str]) -> tuple[str, ...]:
    """``--state`` values (repeatable, comma-separated, any case) as the kind's state names."""
    from balsamctl.schemas import BatchJobState, JobState

    words = [w for v in values for w in v.split(",") if w]
    if not words:
        return ()
    by_kind: dict[str, type[JobState] | type[BatchJobState]] = {"Job": JobState, "BatchJob": BatchJobState}
    if kind not in by_kind:
        raise ValueError(f"--state: {kind}s have no state")
    known = {s.value.lower(): s.value for s in by_kind[kind]}
    unknown = [w for w in words if w.lower() not in known]
    if unknown:
        raise ValueError(f"--state: unknown {kind} state {unknown[0]!r}; expected one of {', '.join(known.values())}")
    return tuple(known[w.lower()] for w in words)


def store_pages(store: Store, sel: Selector, limit: int | None) -> Iterator[list[StoredObject]]:
    """The objects of ``sel`` page by page, at most ``limit`` of them (None: all)."""

    def fetch(after_id: int, size: int) -> list[tuple[int, StoredObject]]:
        return [(o.id, o) for o in store.list_objects(sel, limit=size, after_id=after_id)]

    return listing.pages(fetch, limit)


def fetch(site: Site, kind: str, name: str) -> StoredObject:
    """One object, or kubectl's NotFound message and exit 1."""
    from balsamctl.store import NotFound

    try:
        return site.store.get_object(site.site_id, kind, name)
    except NotFound:
        err(output.not_found(f"{kind.lower()}/{name}"))
        raise typer.Exit(1) from None
