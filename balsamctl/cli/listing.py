"""``get``'s listing of objects, whichever path read the store: pages, the rows or documents printed, the messages
for names not found, no match, a listing cut short and a store that could not be read; several stores read side by
side. Light: the fast path prints through it without typer, SQLAlchemy or pydantic, and the typer app through the
same code."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, TypeVar, cast

from balsamctl.cli import output
from balsamctl.store.fastread import ObjectData

S = TypeVar("S")
T = TypeVar("T")
PARTIAL = 3
"""The exit code of a listing that printed what it could, but not every site it was asked for (a warning line names
each store or site left out)."""
AT_ONCE = 8
"""How many stores are read side by side at most."""
AHEAD = 2
"""How many pages a store read side by side fetches before the listing reaches it."""
PAGE = 1000
"""Rows fetched per query when streaming a listing (keyset pagination)."""
DEFAULT_LIMIT = 500
"""How many rows a table shows unless ``--limit`` says otherwise."""


class StoreFailed(Exception):
    """A store failed while it was read (what its driver said): the listing goes on without it."""


class Source(Protocol):
    """The objects one store holds for a listing."""

    def fetch(self, after_id: int, size: int) -> Sequence[tuple[int, ObjectData]]:
        """Up to ``size`` objects after ``after_id`` in id order, as ``(id, JSON form)``; :class:`StoreFailed`."""

    def count(self) -> int:
        """How many objects there are in all; :class:`StoreFailed`."""

    def where(self) -> str:
        """The store and its sites, for a warning (see :func:`where`)."""


def where(url: str, site_names: Sequence[str]) -> str:
    """``store URL (sites a, b)``: a store in a warning, its URL redacted by the caller."""
    sites = f"site {site_names[0]}" if len(site_names) == 1 else f"sites {', '.join(site_names)}"
    return f"store {url} ({sites})"


def store_warning(place: str, reason: str, *, reached: bool) -> str:
    """The one warning line of a store (:func:`where`) left out of a listing: it could not be reached (opened), or
    (``reached``) it failed while it was read."""
    return f"warning: {place} {'cannot be read' if reached else 'cannot be reached'}: {reason}"


def partial_ok(spec: str | None) -> bool:
    """Whether ``--site`` names several sites (``all``, ``active``, ``a,b``): a site or store that cannot be read is
    then a warning line, the others are listed and the exit code is :data:`PARTIAL`; one site named is an error."""
    return spec in ("all", "active") or "," in (spec or "")


def each(work: Callable[[S], T], items: Sequence[S], *, side_by_side: bool = True) -> list[T]:
    """``[work(item) for item in items]``, side by side in threads (at most :data:`AT_ONCE`) when there are several;
    the first exception, in order, is raised once all are done."""
    if not side_by_side or len(items) < 2:
        return [work(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(AT_ONCE, len(items))) as pool:
        return list(pool.map(work, items))


@contextmanager
def read_ahead(streams: Sequence[Callable[[], Iterable[T]]], *, side_by_side: bool) -> Iterator[Iterator[Iterator[T]]]:
    """The streams' items, stream after stream, as an iterator per stream. ``side_by_side``, the streams after the
    first are read in threads (at most :data:`AT_ONCE` at a time, in order) up to :data:`AHEAD` items ahead of the
    reader, and a stream's exception is raised where it happened; leaving the block stops them."""
    if not side_by_side or len(streams) < 2:
        yield (iter(stream()) for stream in streams)
        return
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()
    queues: list[queue.Queue[tuple[bool, object]]] = [queue.Queue(AHEAD) for _ in streams]

    def put(q: queue.Queue[tuple[bool, object]], more: bool, value: object) -> bool:
        while not stop.is_set():
            try:
                q.put((more, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce(stream: Callable[[], Iterable[T]], q: queue.Queue[tuple[bool, object]]) -> None:
        try:
            for item in stream():
                if not put(q, True, item):
                    return
        except Exception as exc:
            put(q, False, exc)
        else:
            put(q, False, None)

    def consume(q: queue.Queue[tuple[bool, object]]) -> Iterator[T]:
        while True:
            more, value = q.get()
            if more:
                yield cast(T, value)
            elif isinstance(value, Exception):
                raise value
            else:
                return

    pool = ThreadPoolExecutor(min(AT_ONCE, len(streams)))
    try:
        for stream, q in zip(streams, queues, strict=True):
            pool.submit(produce, stream, q)  # in order: the stream read next has always started
        yield (consume(q) for q in queues)
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


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
    side_by_side: bool = False,
) -> int:
    """Print the objects of every source (each store's share of the listing), a page at a time, at most ``limit``
    (0: all); then on stderr the names not found, ``No resources found.`` or how many the limit left out. ``many``:
    each row names its site. ``out`` prints text as it is, ``err`` a line. ``side_by_side``: the sources are read in
    threads (see :func:`read_ahead`), printed in their order all the same. A source that fails is a warning line and
    the others are printed. Returns the exit code: :data:`PARTIAL` if a source failed, else 1 if a name was not
    found, else 0."""
    single = len(names) == 1 and not many
    writer = output.writer(kind, fmt, with_site=many, single=single, now=time.time())
    shown, found, failed = 0, set[str](), set[int]()

    def stream(source: Source) -> Callable[[], Iterator[list[ObjectData]]]:
        if side_by_side:  # read ahead: each as much as the limit lets one source show
            return lambda: pages(source.fetch, limit or None)
        return lambda: pages(source.fetch, limit - shown if limit else None)

    with read_ahead([stream(source) for source in sources], side_by_side=side_by_side) as streams:
        for number, (source, listed) in enumerate(zip(sources, streams, strict=False)):
            if limit and shown >= limit:
                break
            try:
                for page in listed:
                    page = page[: limit - shown] if limit else page
                    shown += len(page)
                    if names:
                        found.update(o["metadata"]["name"] for o in page)
                    out(writer.page(page))
                    if limit and shown >= limit:
                        break
            except StoreFailed as exc:
                failed.add(number)
                err(store_warning(source.where(), str(exc), reached=True))
    out(writer.end())
    missing = [n for n in dict.fromkeys(names) if n not in found]
    for name in missing:
        err(output.not_found(f"{kind.lower()}/{name}"))
    if not shown and not missing:
        err("No resources found.")
    elif limit and shown >= limit and not missing:
        unread = _say_left_out(shown, kind, {n: s for n, s in enumerate(sources) if n not in failed}, err, side_by_side)
        failed.update(unread)
    return PARTIAL if failed else (1 if missing else 0)


def _say_left_out(
    shown: int, kind: str, sources: dict[int, Source], err: Callable[[str], None], side_by_side: bool
) -> list[int]:
    """Say how many objects a listing cut short at ``shown`` left out, counting its stores (side by side); the
    numbers of the sources whose count failed (a warning line each)."""
    counts = dict(zip(sources, each(_count, list(sources.values()), side_by_side=side_by_side), strict=True))
    for number, counted in counts.items():
        if isinstance(counted, StoreFailed):
            err(store_warning(sources[number].where(), str(counted), reached=True))
    total = sum(n for n in counts.values() if isinstance(n, int))
    if total > shown:
        err(f"(showing {shown} of {total} {kind.lower()}s: {total - shown} left out; use --limit 0 for all)")
    return [number for number, counted in counts.items() if isinstance(counted, StoreFailed)]


def _count(source: Source) -> int | StoreFailed:
    """How many objects ``source`` holds in all, or how it failed."""
    try:
        return source.count()
    except StoreFailed as exc:
        return exc
