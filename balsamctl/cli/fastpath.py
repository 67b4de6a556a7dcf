"""``balsamctl get`` answered without typer, SQLAlchemy or pydantic, for the shapes people type most.

``get KIND [NAME...]`` with ``-l/--selector``, ``--limit``, ``--site`` and ``-o`` (each at most once) over sites
whose settings :mod:`balsamctl.site.light_settings` vouches for and whose SQLite stores
:mod:`balsamctl.store.fastread` reads (one server store through the full one). Anything else (another flag,
``--help``, a value this parser does not take as typer would, a kind word it does not know, a site or store it
cannot vouch for, several server stores, any error) raises :class:`Handoff` before anything is printed, and typer
runs the call: its errors and rare flags stay typer's. One exception: a server store that cannot be opened when
``--site`` names several sites is the warning line the full path would print after the same wait, and the others
are listed (exit :data:`~balsamctl.cli.listing.PARTIAL`). What it prints comes from :mod:`balsamctl.cli.listing`,
as typer's ``get`` prints it, through :func:`write`, which prints as typer's echo does.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, TextIO

from balsamctl.cli import listing, output
from balsamctl.site import light_settings
from balsamctl.site.lookup import site_paths
from balsamctl.store.fastread import ObjectData, Reader, Selector, open_reader, sqlite_file

KIND_WORDS = {
    "app": "App",
    "apps": "App",
    "job": "Job",
    "jobs": "Job",
    "batchjob": "BatchJob",
    "batchjobs": "BatchJob",
    "bj": "BatchJob",
}
"""The kind words the fast paths know, any case (``kind_of`` reads each the same; a test checks)."""
_OPTIONS = {
    "-l": "selector",
    "--selector": "selector",
    "-o": "fmt",
    "--output": "fmt",
    "--limit": "limit",
    "--site": "site",
}
_FORMATS: dict[str, output.Format] = {"wide": "wide", "yaml": "yaml", "json": "json", "name": "name"}
_ANSI = re.compile(r"\033\[[;?0-9]*[a-zA-Z]")
"""What click's echo strips from text written to anything but a terminal."""


class Handoff(Exception):
    """Not the fast path's call to answer (nothing was printed): typer and the full store must."""


def write(stream: TextIO, text: str) -> None:
    """Print ``text`` as typer's echo does: escape sequences stripped unless ``stream`` is a terminal, flushed."""
    if text:
        stream.write(text if stream.isatty() else _ANSI.sub("", text))
        stream.flush()


def kind_of(word: str) -> str:
    """The kind a kind word the fast paths know names; :class:`Handoff` for any other word."""
    kind = KIND_WORDS.get(word.lower())
    if kind is None:
        raise Handoff(f"kind word {word!r}")
    return kind


def parse_get(args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``get``'s arguments as ``(positional, {option: value})`` when they hold only what this parser takes exactly
    as typer does; :class:`Handoff` otherwise."""
    positional: list[str] = []
    options: dict[str, str] = {}
    rest = iter(args)
    for arg in rest:
        if not arg.startswith("-"):
            positional.append(arg)
            continue
        flag, eq, value = arg.partition("=")
        key = _OPTIONS.get(flag)
        if key is None or key in options or (eq and not flag.startswith("--")):
            raise Handoff(f"argument {arg!r}")
        if not eq:
            following = next(rest, None)
            if following is None or following.startswith("-"):
                raise Handoff(f"{arg} without a value")
            value = following
        options[key] = value
    if not positional:
        raise Handoff("no KIND")
    fmt, limit = options.get("fmt"), options.get("limit")
    if (fmt is not None and fmt not in _FORMATS) or (limit is not None and not (limit.isascii() and limit.isdigit())):
        raise Handoff("a value typer checks")
    return positional, options


class _Store(NamedTuple):
    """A store the fast path reads: its reader, ``{site id: name}`` of its share, and its URL."""

    reader: Reader
    ids: dict[int, str]
    url: str


def site_groups(spec: str | None) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The sites ``--site`` names read lightly: their names, and ``{store URL: {site name: directory}}``;
    :class:`Handoff` if any site cannot be vouched for."""
    names, groups = [], dict[str, dict[str, str]]()
    try:
        for found in site_paths(spec, Path.cwd()):
            path = found.resolve()
            checked = light_settings.checked(path)
            if checked is None:
                raise Handoff(f"settings of {path} not vouched for")
            name, configured = checked
            names.append(name)
            groups.setdefault(light_settings.store_url(path, configured), {})[name] = str(path)
    except light_settings.SiteError as exc:
        raise Handoff(str(exc)) from None
    return names, groups


def open_stores(groups: dict[str, dict[str, str]], *, lenient: bool = False) -> tuple[list[_Store], list[str]]:
    """The stores of :func:`site_groups` opened, each with ``{site id: name}`` of its share; ``lenient``, a server
    store that cannot be opened is left out and a warning line given for it, as the full path prints it after the
    same wait. :class:`Handoff` if any store cannot be vouched for (the full store reports it)."""
    stores: list[_Store] = []
    warnings: list[str] = []
    try:
        for url, sites in groups.items():
            try:
                reader = open_reader(url)
            except Exception as exc:
                if sqlite_file(url) is not None or not lenient:
                    raise  # the full path makes or migrates a SQLite store, and reports one site's store
                warnings.append(_unreachable(url, list(sites), exc))
                continue
            stores.append(_Store(reader, {}, url))
            stores[-1] = _Store(reader, reader.site_ids(sites), url)  # the reader is in the list to close if this fails
    except Exception as exc:
        close(stores)
        raise Handoff(f"store: {exc}") from None
    return stores, warnings


def site_stores(spec: str | None) -> tuple[list[str], list[tuple[Reader, dict[int, str]]]]:
    """The sites ``--site`` names read lightly: their names, and the stores that hold them, each with ``{site id:
    name}`` of its share; :class:`Handoff` if any site or store cannot be vouched for."""
    names, groups = site_groups(spec)
    stores, _ = open_stores(groups)
    return names, [(store.reader, store.ids) for store in stores]


def _unreachable(url: str, site_names: list[str], exc: Exception) -> str:
    """The warning line of a server store that could not be opened, as the full path prints it."""
    from balsamctl.site.directory import said
    from balsamctl.store import redact

    return listing.store_warning(listing.where(redact(url), site_names), said(exc), reached=False)


def close(stores: Sequence[tuple[Reader, dict[int, str]] | _Store]) -> None:
    """Close the readers of :func:`site_stores` (or :func:`open_stores`)."""
    for reader, *_ in stores:
        reader.close()


class _ReaderSource:
    """One store's share of a listing, read by a fast reader."""

    def __init__(self, store: _Store, sel: Selector, full: bool) -> None:
        self.store, self.sel, self.full = store, sel, full

    def fetch(self, after_id: int, size: int) -> list[tuple[int, ObjectData]]:
        """A page of objects (see :class:`balsamctl.cli.listing.Source`)."""
        try:
            return self.store.reader.objects(self.sel, after_id, size, full=self.full)
        except sqlite3.Error as exc:
            raise listing.StoreFailed(str(exc)) from None

    def count(self) -> int:
        """How many objects there are in all."""
        try:
            return self.store.reader.count(self.sel)
        except sqlite3.Error as exc:
            raise listing.StoreFailed(str(exc)) from None

    def where(self) -> str:
        """The store and its sites, for a warning."""
        from balsamctl.store import redact

        return listing.where(redact(self.store.url), list(self.store.ids.values()))


def get(args: Sequence[str]) -> int:
    """Run ``balsamctl get ARGS``; its exit code. :class:`Handoff` (nothing printed) when typer must."""
    positional, options = parse_get(args)
    kind, names = kind_of(positional[0]), positional[1:]
    try:
        labels = listing.parse_labels(options.get("selector"))
    except ValueError as exc:
        raise Handoff(str(exc)) from None
    spec = options["site"] if "site" in options else os.environ.get("BALSAM_SITE") or None
    fmt = _FORMATS.get(options.get("fmt", ""))
    limit = int(options["limit"]) if "limit" in options else None
    site_names, groups = site_groups(spec)
    if sum(sqlite_file(url) is None for url in groups) > 1:
        raise Handoff("several server stores: the full path reads them side by side")
    stores, warnings = open_stores(groups, lenient=listing.partial_ok(spec))
    try:
        for line in warnings:
            write(sys.stderr, line + "\n")
        full = fmt in ("json", "yaml") or kind == "BatchJob"  # raw bodies serve the Job and App tables and names
        sources = [_ReaderSource(s, Selector(kind, tuple(s.ids), tuple(names), labels), full) for s in stores]
        code = listing.show(
            sources,
            kind,
            names,
            fmt or "table",
            0 if names else listing.default_limit(fmt, limit),
            many=listing.many_sites(spec, site_names),
            out=lambda text: write(sys.stdout, text),
            err=lambda line: write(sys.stderr, line + "\n"),
        )
        return listing.PARTIAL if warnings else code
    finally:
        close(stores)
