"""``get``'s listing of objects, whichever path read the store: pages, the rows or documents printed, the messages
for names not found, no match and a listing cut short. Light: the fast path prints through it without typer,
SQLAlchemy or pydantic, and the typer app through the same code."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from balsamctl.cli import output
from balsamctl.store.fastread import ObjectData

T = TypeVar("T")
PAGE = 1000
"""Rows fetched per query when streaming a listing (keyset pagination)."""
DEFAULT_LIMIT = 500
"""How many rows a table shows unless ``--limit`` says otherwise."""


class Source(Protocol):
    """The objects one store holds for a listing."""

    def fetch(self, after_id: int, size: int) -> Sequence[tuple[int, ObjectData]]:
        """Up to ``size`` objects after ``after_id`` in id order, as ``(id, JSON form)``."""

    def count(self) -> int:
        """How many objects there are in all."""


def pages(fetch: Callable[[int, int], Sequence[tuple[int, T]]], limit: int | None) -> Iterator[list[T]]:
    """The items ``fetch(after_id, size)`` gives as ``(id, item)``, page by page (keyset pagination), at most
    ``limit`` of them (None: all)."""
    after_id = 0
    while limit is None or limit > 0:
        size = PAGE if limit is None else min(PAGE, limit)
        page = fetch(after_id, size)
        if page:
            yield [item for _, item in page]
        if len(page) < size:
            return
        after_id = page[-1][0]
        limit = None if limit is None else limit - len(page)


def parse_labels(selector: str | None) -> tuple[tuple[str, str], ...]:
    """``-l a=b,c==d`` as ``(("a", "b"), ("c", "d"))``; ``ValueError`` for a term that is not ``key=value``."""
    pairs = []
    for term in filter(None, (selector or "").split(",")):
        key, sep, value = term.partition("=")
        if not sep or not key.strip() or key.endswith("!"):
            raise ValueError(f"invalid label selector {term!r}: expected key=value")
        pairs.append((key.strip(), value.removeprefix("=").strip()))
    return tuple(pairs)


def many_sites(spec: str | None, site_names: Sequence[str]) -> bool:
    """Whether ``--site`` chose many sites, so that listings name each row's site (as kubectl's ``-A`` always shows
    NAMESPACE): ``all`` or ``active``, even with one site registered, or more than one site."""
    return spec in ("all", "active") or len(set(site_names)) > 1


def default_limit(fmt: str | None, limit: int | None) -> int:
    """``--limit``, else its default (0: none): a table pages; ``-o name|json|yaml`` returns every match, so that a
    script counting them is never capped at a page without knowing."""
    if limit is not None:
        return limit
    return DEFAULT_LIMIT if fmt in (None, "wide") else 0


def show(
    sources: Sequence[Source],
    kind: str,
    names: Sequence[str],
    fmt: output.Format,
    limit: int,
    *,
    many: bool,
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> int:
    """Print the objects of every source (each store's share of the listing), a page at a time, at most ``limit``
    (0: all); then on stderr the names not found, ``No resources found.`` or how many the limit left out. ``many``:
    each row names its site. ``out`` prints text as it is, ``err`` a line. Returns the exit code."""
    single = len(names) == 1 and not many
    writer = output.writer(kind, fmt, with_site=many, single=single, now=time.time())
    shown, found = 0, set[str]()
    for source in sources:
        if limit and shown >= limit:
            break
        for page in pages(source.fetch, limit - shown if limit else None):
            shown += len(page)
            if names:
                found.update(o["metadata"]["name"] for o in page)
            out(writer.page(page))
    out(writer.end())
    missing = [n for n in dict.fromkeys(names) if n not in found]
    for name in missing:
        err(output.not_found(f"{kind.lower()}/{name}"))
    if missing:
        return 1
    if not shown:
        err("No resources found.")
    elif limit and shown >= limit:
        total = sum(source.count() for source in sources)
        if total > shown:
            err(f"(showing {shown} of {total} {kind.lower()}s: {total - shown} left out; use --limit 0 for all)")
    return 0
