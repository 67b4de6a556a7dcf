"""Balsam's Python API (``Job.objects.create``, ``BatchJob.objects.filter(...).update(...)``) over balsamctl's store.

Every write goes through the same validation and transaction as ``balsamctl apply``; reads are lazy,
paginated queries. A call without ``site_id``/``site_name`` targets ``$BALSAM_SITE`` or the site containing the
current directory; a filter without them spans every registered site.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, overload

from balsamctl.schemas import JobState
from balsamctl.schemas.manifest import Document, ManifestError, validate_document
from balsamctl.schemas.objects import API_VERSION, Manifest
from balsamctl.site import registry
from balsamctl.site.apply import apply_documents
from balsamctl.site.directory import SiteError
from balsamctl.site.handle import Site as Site_
from balsamctl.site.lookup import open_entry, resolve_sites, selected
from balsamctl.site.registry import Entry
from balsamctl.store import NotFound, Selector, StoredObject, Transition

M = TypeVar("M", bound="Model")
PAGE = 1000


class MultipleObjectsReturned(LookupError):
    """``get()`` matched more than one object."""


_OPEN: dict[str, Site_] = {}


def _key(found: Entry | Path) -> str:
    """What tells sites apart for the life of the process: a directory, or a remote site's store and name."""
    if isinstance(found, Path):
        return str(found.resolve())
    return str(found.path) if found.path is not None else f"{os.path.expandvars(found.store or '')}#{found.name}"


def _site_key(site: Site_) -> str:
    return str(site.path) if site.local else f"{site.store_url}#{site.name}"


def _kept(site: Site_) -> Site_:
    """The open handle of ``site``'s site: ``site`` itself, or the one opened before (``site`` is closed)."""
    kept = _OPEN.setdefault(_site_key(site), site)
    if kept is not site:
        site.close()
    return kept


def _open(found: Entry | Path) -> Site_:
    """One open site (and store) per site for the life of the process: a registry entry or the directory around
    the current one."""
    key = _key(found)
    if key not in _OPEN:
        _OPEN[key] = open_entry(found)
    return _OPEN[key]


def _site_by_id(site_id: int) -> Site_:
    for site in _open_all():
        if site.site_id == site_id:
            return site
    raise NotFound(f"no registered site has id {site_id}")


def _open_all() -> list[Site_]:
    return [_open(e) for e in registry.entries()]


def _target_site(site_id: int | None = None, site_name: str | None = None) -> Site_:
    """The one site a write goes to."""
    if site_id is not None:
        return _site_by_id(site_id)
    return _filter_sites(None, site_name or "this")[0]


def _filter_sites(site_id: int | Sequence[int] | None, site_name: str | None) -> list[Site_]:
    """The sites a query spans: the named ones (``--site``'s forms), or every registered site."""
    if site_name == "active":
        return [_kept(s) for s in resolve_sites("active", Path.cwd())]
    if site_name is not None:
        return [_open(found) for found in selected(site_name, Path.cwd())]
    sites = _open_all()
    if site_id is None:
        return sites
    ids = {site_id} if isinstance(site_id, int) else set(site_id)
    return [s for s in sites if s.site_id in ids]


class Model:
    """An object of the API: attribute access to its spec, status and metadata."""

    kind: ClassVar[str]
    objects: ClassVar[Manager[Any]]
    name_prefix: ClassVar[str]

    def __init__(self, site_id: int | None = None, site_name: str | None = None, **fields: Any) -> None:
        self._site = _target_site(site_id, site_name)
        self._stored: StoredObject | None = None
        self._fields = fields

    @classmethod
    def _from_stored(cls: type[M], site: Site_, stored: StoredObject) -> M:
        obj = cls.__new__(cls)
        obj._site, obj._stored, obj._fields = site, stored, {}
        return obj

    # --------------------------------------------------------------- attributes
    @property
    def id(self) -> int | None:
        """The object's integer id in its store."""
        return self._stored.id if self._stored else None

    @property
    def site_id(self) -> int:
        """The integer id of the object's site."""
        return self._site.site_id

    @property
    def site_name(self) -> str:
        """The name of the object's site."""
        return self._site.name

    @property
    def manifest(self) -> Manifest:
        """The full object: metadata, spec, status (only once saved)."""
        if self._stored is None:
            raise AttributeError("not saved yet")
        return self._stored.manifest

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        if attr in self._fields:
            return self._fields[attr]
        if self._stored is not None:
            m = self._stored.manifest
            for part in (m.spec, m.status, m.metadata):
                if attr in type(part).model_fields:
                    return getattr(part, attr)
        raise AttributeError(f"{type(self).__name__} has no attribute {attr!r}")

    def __repr__(self) -> str:
        name = self._stored.name if self._stored else self._fields.get("name", "<unsaved>")
        return f"{type(self).__name__}({name!r}, site={self._site.name!r})"

    # --------------------------------------------------------------- writing
    def _spec(self) -> dict[str, Any]:
        return dict(self._fields)

    def _document(self, index: int) -> Document:
        fields = self._spec()
        name = fields.pop("name", None) or f"{self.name_prefix}-{uuid.uuid4().hex[:10]}"
        labels = fields.pop("tags", None) or {}
        metadata = {"name": name, "labels": labels}
        body = {"apiVersion": API_VERSION, "kind": self.kind, "metadata": metadata, "spec": fields}
        doc, problems = validate_document(body, "<python api>", index)
        if doc is None:
            raise ManifestError(problems)
        return doc

    def save(self) -> None:
        """Create the object (all validation of ``balsamctl apply`` applies)."""
        if self._stored is not None:
            raise ValueError(f"{self!r} is already saved; change it with balsamctl apply")
        doc = self._document(1)
        apply_documents(self._site, [doc])
        self._stored = self._site.store.get_object(self._site.site_id, self.kind, doc.manifest.metadata.name)

    def refresh_from_db(self) -> None:
        """Read the object's current state again."""
        if self._stored is None:
            raise ValueError("not saved yet")
        self._stored = self._site.store.get_object(self._site.site_id, self.kind, self._stored.name)


class Site:
    """A registered site: ``id``, ``name``, ``path``."""

    def __init__(self, site: Site_) -> None:
        self._site = site
        self.id = site.site_id
        self.name = site.name
        self.path = site.path

    def __repr__(self) -> str:
        return f"Site({self.name!r}, id={self.id})"

    class _Manager:
        def all(self) -> list[Site]:
            """Every registered site."""
            return [Site(s) for s in resolve_sites("all", Path.cwd())]

        def get(self, *, id: int | None = None, name: str | None = None) -> Site:
            """One site by id or name."""
            if id is not None:
                return Site(_site_by_id(id))
            return Site(_target_site(site_name=name))

    objects: ClassVar[_Manager] = _Manager()


class App(Model):
    """``kind: App``."""

    kind = "App"
    name_prefix = "app"


class Job(Model):
    """``kind: Job``: ``app_id`` names the App (``SimulationX`` finds ``simulationx`` or ``simulation-x``)."""

    kind = "Job"
    name_prefix = "job"

    def _spec(self) -> dict[str, Any]:
        fields = dict(self._fields)
        app = fields.pop("app_id", None) or fields.pop("app", None)
        if app is None:
            raise ValueError("a Job needs app_id")
        fields["app"] = _resolve_app(self._site, app)
        if "parent_ids" in fields:
            fields["parents"] = [str(p) for p in fields.pop("parent_ids")]
        return fields


class BatchJob(Model):
    """``kind: BatchJob``: unset ``queue``/``project``/``wall_time_min`` come from the site's settings."""

    kind = "BatchJob"
    name_prefix = "batchjob"

    def _spec(self) -> dict[str, Any]:
        fields = dict(self._fields)
        settings = self._site.settings
        queue = fields.setdefault("queue", next(iter(settings.allowed_queues), "default"))
        limits = settings.allowed_queues.get(queue)
        fields.setdefault("project", next(iter(settings.allowed_projects), "default"))
        fields.setdefault("num_nodes", 1)
        fields.setdefault("wall_time_min", min(60, limits.max_walltime) if limits else 60)
        return fields


def _camel_to_kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name).lower()


_APPS: dict[tuple[str, str | int], str] = {}


def _resolve_app(site: Site_, app: str | int) -> str:
    """The name of the App meant by ``app_id`` (an id, a name, or a Python-style class name)."""
    key = (_site_key(site), app)
    if key not in _APPS:
        apps = site.store.list_objects(Selector("App", (site.site_id,)))
        for candidate in (str(app), _camel_to_kebab(str(app)), str(app).lower()):
            match = next((a.name for a in apps if a.name == candidate or a.id == app), None)
            if match is not None:
                _APPS[key] = match
                break
        else:
            raise NotFound(f"no App {app!r} at site {site.name}")
    return _APPS[key]


class QuerySet(Generic[M]):
    """A lazy query: iterable, countable, sliceable; nothing runs until it is read."""

    def __init__(self, model: type[M], filters: Mapping[str, Any], start: int = 0, stop: int | None = None) -> None:
        self.model = model
        self.filters = dict(filters)
        self.start, self.stop = start, stop

    def filter(self, **filters: Any) -> QuerySet[M]:
        """A narrower query."""
        return QuerySet(self.model, {**self.filters, **filters}, self.start, self.stop)

    def _selectors(self) -> Iterator[tuple[Site_, Selector]]:
        f = dict(self.filters)
        sites = _filter_sites(f.pop("site_id", None), f.pop("site_name", None))

        def many(key: str) -> tuple[str, ...]:
            value = f.pop(key, None)
            if value is None:
                return ()
            return tuple(str(v) for v in value) if isinstance(value, list | tuple | set) else (str(value),)

        names, states = many("name"), many("state") + many("state__in")
        scheduler_ids = many("scheduler_id")
        apps = many("app_id")
        tags = f.pop("tags", None) or f.pop("filter_tags", None) or {}
        if f:
            raise TypeError(f"unsupported filter(s): {', '.join(f)}")
        for site in sites:
            resolved = tuple(_resolve_app(site, a) for a in apps) if apps else ()
            yield (
                site,
                Selector(
                    self.model.kind,
                    (site.site_id,),
                    names=names,
                    states=states,
                    labels=tuple(sorted(tags.items())),
                    scheduler_ids=scheduler_ids,
                    apps=resolved,
                ),
            )

    def __iter__(self) -> Iterator[M]:
        skip, left = self.start, (None if self.stop is None else self.stop - self.start)
        for site, sel in self._selectors():
            after = 0
            while left is None or left > 0:
                page = site.store.list_objects(sel, limit=PAGE, after_id=after)
                if not page:
                    break
                after = page[-1].id
                for stored in page:
                    if skip:
                        skip -= 1
                        continue
                    if left is not None:
                        if left <= 0:
                            return
                        left -= 1
                    yield self.model._from_stored(site, stored)

    def count(self) -> int:
        """How many objects match (counted in SQL)."""
        total = sum(site.store.count_objects(sel) for site, sel in self._selectors())
        total = max(0, total - self.start)
        return total if self.stop is None else min(total, self.stop - self.start)

    __len__ = count

    @overload
    def __getitem__(self, key: int) -> M: ...

    @overload
    def __getitem__(self, key: slice) -> QuerySet[M]: ...

    def __getitem__(self, key: int | slice) -> M | QuerySet[M]:
        """The match at ``key``, or the matches of a forward slice (a QuerySet: nothing is read yet)."""
        if isinstance(key, int):
            if key < 0:
                raise IndexError("negative indexing is not supported")
            found = list(QuerySet(self.model, self.filters, self.start + key, self.start + key + 1))
            if not found:
                raise IndexError(key)
            return found[0]
        if key.step not in (None, 1) or (key.start or 0) < 0 or (key.stop is not None and key.stop < 0):
            raise ValueError("only forward slices without a step are supported")
        start = self.start + (key.start or 0)
        stop = None if key.stop is None else self.start + key.stop
        if self.stop is not None:
            stop = self.stop if stop is None else min(stop, self.stop)
        return QuerySet(self.model, self.filters, start, stop)

    def first(self) -> M | None:
        """The first match, or None."""
        return next(iter(self[:1]), None)

    def get(self, **filters: Any) -> M:
        """Exactly one match."""
        found = list(self.filter(**filters)[:2])
        if not found:
            raise NotFound(f"no {self.model.kind} matches {self.filters | filters}")
        if len(found) > 1:
            raise MultipleObjectsReturned(f"more than one {self.model.kind} matches {self.filters | filters}")
        return found[0]

    def update(self, **changes: Any) -> int:
        """Change the matching objects; returns how many changed.

        ``BatchJob``: ``state="pending_deletion"`` is a deletion request (the allocation is cancelled).
        ``Job``: ``state=...`` is a state transition, checked against the state machine (e.g. a rerun).
        """
        if set(changes) != {"state"}:
            raise TypeError("only state can be updated through the API")
        state = changes["state"]
        changed = 0
        for site, group in self._by_site():
            if self.model.kind == "BatchJob":
                if state != "pending_deletion":
                    raise ValueError("a BatchJob's state is observed; only state='pending_deletion' may be requested")
                results = site.store.delete(site.site_id, [("BatchJob", o.name) for o in group])
                changed += sum(r.action == "deletion requested" for r in results)
            elif self.model.kind == "Job":
                moves = [
                    Transition(
                        o.id, JobState(str(o.manifest.status.state)), JobState(state), "Updated", "set through the API"
                    )
                    for o in group
                    if o.manifest.status.state != state
                ]
                changed += site.store.transition(site.site_id, moves)
            else:
                raise TypeError(f"{self.model.kind} has no state to update")
            site.poke()
        return changed

    def rerun(self) -> int:
        """Reset the matching FAILED or JOB_FINISHED Jobs to READY for another go; returns how many."""
        if self.model.kind != "Job":
            raise TypeError("only Jobs can be rerun")
        count = 0
        for site, group in self._by_site():
            count += site.store.rerun(site.site_id, [o.id for o in group])
            site.poke()
        return count

    def delete(self) -> int:
        """Delete the matching objects (BatchJobs by a deletion request); returns how many."""
        count = 0
        for site, group in self._by_site():
            count += len(site.store.delete(site.site_id, [(self.model.kind, o.name) for o in group]))
            site.poke()
        return count

    def _by_site(self) -> Iterable[tuple[Site_, list[StoredObject]]]:
        groups: dict[str, tuple[Site_, list[StoredObject]]] = {}
        for obj in self:
            assert obj._stored is not None
            groups.setdefault(_site_key(obj._site), (obj._site, []))[1].append(obj._stored)
        return groups.values()


class Manager(Generic[M]):
    """``Model.objects``: the entry point of queries and creation."""

    def __init__(self, model: type[M]) -> None:
        self.model = model

    def all(self) -> QuerySet[M]:
        """Every object of this kind at every registered site."""
        return QuerySet(self.model, {})

    def filter(self, **filters: Any) -> QuerySet[M]:
        """A lazy query: site_id, site_name, name, state, tags, scheduler_id, app_id."""
        return QuerySet(self.model, filters)

    def get(self, **filters: Any) -> M:
        """Exactly one object."""
        return self.filter(**filters).get()

    def first(self) -> M | None:
        """Any one object, or None."""
        return self.all().first()

    def count(self) -> int:
        """How many objects there are."""
        return self.all().count()

    def create(self, **fields: Any) -> M:
        """Create and return one object."""
        obj = self.model(**fields)
        obj.save()
        return obj

    def bulk_create(self, objs: Sequence[M]) -> list[M]:
        """Create many objects: one transaction per site, all or nothing."""
        by_site: dict[str, list[M]] = {}
        for obj in objs:
            by_site.setdefault(_site_key(obj._site), []).append(obj)
        for group in by_site.values():
            site = group[0]._site
            docs = [obj._document(i) for i, obj in enumerate(group, 1)]
            apply_documents(site, docs)
            for obj, doc in zip(group, docs, strict=True):
                obj._fields["name"] = doc.manifest.metadata.name
        for group in by_site.values():
            site = group[0]._site
            names = tuple(o._fields["name"] for o in group)
            stored = {}
            for start in range(0, len(names), PAGE):
                sel = Selector(self.model.kind, (site.site_id,), names=names[start : start + PAGE])
                stored.update({s.name: s for s in site.store.list_objects(sel)})
            for obj in group:
                obj._stored = stored[obj._fields["name"]]
        return list(objs)


App.objects = Manager(App)
Job.objects = Manager(Job)
BatchJob.objects = Manager(BatchJob)

__all__ = ["App", "BatchJob", "Job", "MultipleObjectsReturned", "QuerySet", "Site", "SiteError"]
