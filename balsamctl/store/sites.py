"""Sites in a store: their identity (name, UUID, owner), what their controllers publish (host, path, scheduler,
platform, settings, job template, heartbeat), and what they hold, counted."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from balsamctl.store.base import StoreBase
from balsamctl.store.engine import AccessDenied, is_postgres, read_tx, write_tx
from balsamctl.store.rows import now
from balsamctl.store.tables import events, launchers, objects, sites

ACTIVE_SEC = 120.0
"""A site whose controller's heartbeat is newer than this is active (Balsam's meaning: two minutes)."""


class SiteTaken(ValueError):
    """A site name this store already gives to another site (another UUID): nothing was written."""


@dataclass(frozen=True)
class SiteRecord:
    """A site as its store knows it."""

    id: int
    name: str
    uuid: str | None
    owner: str | None
    host: str | None
    path: str
    scheduler: str | None
    platform: str | None
    settings: dict[str, Any] | None
    """The settings its controller published (``settings.yml`` as JSON), None until it has."""
    job_template: str | None
    created_at: float
    published_at: float | None
    heartbeat_at: float | None

    def active(self, at: float | None = None) -> bool:
        """Whether its controller's heartbeat is newer than :data:`ACTIVE_SEC`."""
        return self.heartbeat_at is not None and (at if at is not None else now()) - self.heartbeat_at < ACTIVE_SEC

    def where(self) -> str:
        """``host:path`` (the path alone until a host is known)."""
        return f"{self.host}:{self.path}" if self.host else self.path


_RECORD_COLUMNS = (
    sites.c.id,
    sites.c.name,
    sites.c.uuid,
    sites.c.owner,
    sites.c.host,
    sites.c.path,
    sites.c.scheduler,
    sites.c.platform,
    sites.c.settings,
    sites.c.job_template,
    sites.c.created_at,
    sites.c.published_at,
    sites.c.heartbeat_at,
)


def _record(row: Any) -> SiteRecord:
    values = dict(row._mapping)
    values["settings"] = json.loads(values["settings"]) if values["settings"] else None
    return SiteRecord(**values)


def _identity_matches(row: Any, uuid: str | None, path: str) -> bool:
    """Whether the stored site ``row`` is the site of ``uuid`` at ``path``: the same UUID, or, for a site stored
    before UUIDs (or a caller without one), the same path."""
    if uuid is None:
        return bool(row.path == path)
    return row.uuid == uuid or (row.uuid is None and row.path == path)


class SiteStore(StoreBase):
    """Sites: registering them under their identity, publishing, counting what they hold, removing them."""

    def ensure_site(
        self,
        name: str,
        path: str,
        preferred_id: int | None = None,
        *,
        uuid: str | None = None,
        host: str | None = None,
    ) -> int:
        """The id of site ``name`` (the one of ``uuid``), registering it as needed.

        A new site takes ``preferred_id`` when no other site of this store has it (ids unique across stores), and
        is owned by the connecting role (PostgreSQL) or user. A name this store gives to another site (another
        UUID, or another path for a site without one) is :class:`SiteTaken`, naming its owner, host and path:
        nothing is rewritten. A site opened at a new path on its own host (a directory moved) gets that path.
        """
        with read_tx(self.engine) as conn:
            row = conn.execute(self._identity_query(name)).first()
        if row is not None and row.uuid == uuid and row.path == path:
            return int(row.id)
        with write_tx(self.engine) as conn:
            if is_postgres(self.engine):  # one registration at a time, as SQLite's write lock does
                conn.exec_driver_sql("LOCK TABLE sites IN SHARE ROW EXCLUSIVE MODE")
            row = conn.execute(self._identity_query(name)).first()
            if row is None:
                return self._insert_site(conn, name, path, preferred_id, uuid, host)
            if not _identity_matches(row, uuid, path):
                owner = f" of {row.owner}" if row.owner else ""
                where = f"{row.host}:{row.path}" if row.host else row.path
                raise SiteTaken(
                    f"a site named {name!r} already exists in this store{owner}, at {where} "
                    f"(site id {row.id}, uuid {row.uuid or 'none'}): choose another name"
                )
            values: dict[str, Any] = {}
            if uuid is not None and row.uuid is None:
                values["uuid"] = uuid  # a site stored before UUIDs takes its directory's
            if row.path != path and (host is None or row.host in (None, host)):
                values["path"] = path  # moved on its own host (a launcher on a compute node never rewrites it)
            if values:
                conn.execute(update(sites).where(sites.c.id == row.id).values(**values))
            return int(row.id)

    @staticmethod
    def _identity_query(name: str) -> Any:
        return select(sites.c.id, sites.c.path, sites.c.uuid, sites.c.owner, sites.c.host).where(sites.c.name == name)

    def _insert_site(
        self, conn: Connection, name: str, path: str, preferred_id: int | None, uuid: str | None, host: str | None
    ) -> int:
        """Insert the site, with ``preferred_id`` if no site has it. In a shared store a site this role may not see
        can hold the name or the UUID: :class:`SiteTaken`, nothing written."""
        values: dict[str, Any] = {
            "name": name,
            "path": path,
            "uuid": uuid,
            "host": host,
            "owner": _current_role(conn),
            "created_at": now(),
        }
        try:
            return self._insert_site_row(conn, values, preferred_id)
        except IntegrityError as exc:
            if "uuid" in str(exc.orig):
                raise SiteTaken(
                    f"a site with the uuid of site {name!r} ({uuid}) already exists in this store, owned by another "
                    "role: is this directory a copy of that site's?"
                ) from None
            raise SiteTaken(
                f"a site named {name!r} already exists in this store, owned by another role: choose another name"
            ) from None

    def _insert_site_row(self, conn: Connection, values: dict[str, Any], preferred_id: int | None) -> int:
        new_id = None
        if preferred_id is not None:  # a site this role cannot see may hold it: the index says so, not a SELECT
            new_id = conn.execute(
                _dialect_insert(conn)(sites)
                .values(id=preferred_id, **values)
                .on_conflict_do_nothing(index_elements=[sites.c.id])
                .returning(sites.c.id)
            ).scalar()
        if new_id is None:
            return int(conn.execute(insert(sites).values(**values).returning(sites.c.id)).scalar_one())
        if is_postgres(self.engine):  # an explicit id bypasses the sequence: move it past (never back: see above)
            conn.execute(
                text(
                    "SELECT setval(seq, GREATEST(:id, COALESCE(pg_sequence_last_value(seq), 0))) "
                    "FROM (SELECT pg_get_serial_sequence('sites', 'id')::regclass AS seq) AS s"
                ),
                {"id": new_id},
            )
        return int(new_id)

    def site_id(self, name: str) -> int:
        """The id of a site by name; :class:`~balsamctl.store.NotFound` if none."""
        return self.site_record(name).id

    def sites(self) -> list[dict[str, Any]]:
        """Every site in this store: id, name, path."""
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(sites.c.id, sites.c.name, sites.c.path).order_by(sites.c.id)).all()
        return [dict(r._mapping) for r in rows]

    def _site_names(self, conn: Connection) -> dict[int, str]:
        return {r.id: r.name for r in conn.execute(select(sites.c.id, sites.c.name))}

    def site_records(self, ids: Sequence[int] | None = None) -> list[SiteRecord]:
        """The sites of this store this role may see (``ids``: only those), by id."""
        q = select(*_RECORD_COLUMNS).order_by(sites.c.id)
        if ids is not None:
            q = q.where(sites.c.id.in_(ids))
        with read_tx(self.engine) as conn:
            return [_record(r) for r in conn.execute(q)]

    def site_record(self, ref: str | int, *, by_name: bool = False) -> SiteRecord:
        """One site by name or integer id (``by_name``: a name, even one of digits); :class:`~balsamctl.store.
        NotFound` if this store has none (or this role may not see it)."""
        from balsamctl.store.objects import NotFound

        by_id = isinstance(ref, int) or (ref.isdigit() and not by_name)
        q = select(*_RECORD_COLUMNS).where(sites.c.id == int(ref) if by_id else sites.c.name == ref)
        with read_tx(self.engine) as conn:
            row = conn.execute(q).first()
        if row is None:
            raise NotFound(f"no site {ref!r} in this store")
        return _record(row)

    def publish_site(
        self,
        site_id: int,
        *,
        host: str,
        path: str,
        scheduler: str,
        platform: str | None,
        settings: Mapping[str, Any],
        job_template: str | None,
    ) -> None:
        """Record what the site's controller runs with, where, and that it is alive (its heartbeat)."""
        t = now()
        with write_tx(self.engine) as conn:
            conn.execute(
                update(sites)
                .where(sites.c.id == site_id)
                .values(
                    host=host,
                    path=path,
                    scheduler=scheduler,
                    platform=platform,
                    settings=json.dumps(settings, sort_keys=True),
                    job_template=job_template,
                    published_at=t,
                    heartbeat_at=t,
                )
            )

    def site_heartbeat(self, site_id: int) -> None:
        """Record that the site's controller is alive."""
        with write_tx(self.engine) as conn:
            conn.execute(update(sites).where(sites.c.id == site_id).values(heartbeat_at=now()))

    def move_site(self, site_id: int, path: str, host: str) -> None:
        """Record the site's new directory (``site mv``)."""
        with write_tx(self.engine) as conn:
            conn.execute(update(sites).where(sites.c.id == site_id).values(path=path, host=host))

    def object_counts(self, site_ids: Sequence[int]) -> dict[int, dict[str, dict[str, int]]]:
        """``{site id: {kind: {state: count}}}`` of the sites' Jobs and BatchJobs (one query)."""
        q = (
            select(objects.c.site_id, objects.c.kind, objects.c.state, func.count())
            .where(objects.c.site_id.in_(site_ids), objects.c.kind.in_(("Job", "BatchJob")))
            .group_by(objects.c.site_id, objects.c.kind, objects.c.state)
        )
        counts: dict[int, dict[str, dict[str, int]]] = {sid: {"Job": {}, "BatchJob": {}} for sid in site_ids}
        with read_tx(self.engine) as conn:
            for site_id, kind, state, n in conn.execute(q):
                counts[site_id][kind][state or ""] = int(n)
        return counts

    def require_owner(self, site_id: int, verb: str) -> None:
        """:class:`~balsamctl.store.engine.AccessDenied` unless this role owns the site (or bypasses the store's
        row-level security) on a shared PostgreSQL store; any user of a SQLite store owns its sites."""
        if is_postgres(self.engine):
            from balsamctl.store.access import managed

            with read_tx(self.engine) as conn:
                managed(conn, site_id, verb)

    def remove_site(self, site_id: int) -> None:
        """Remove a site and everything it holds from this store: its owner only (a collaborator with a write grant
        may not, :class:`~balsamctl.store.engine.AccessDenied`); nothing is removed unless the site row is."""
        from balsamctl.store.access import managed

        with write_tx(self.engine) as conn:
            if is_postgres(self.engine):
                managed(conn, site_id, "remove it")
            conn.execute(delete(events).where(events.c.site_id == site_id))
            conn.execute(delete(launchers).where(launchers.c.site_id == site_id))
            conn.execute(delete(objects).where(objects.c.site_id == site_id))
            if conn.execute(delete(sites).where(sites.c.id == site_id)).rowcount != 1:
                raise AccessDenied(f"site {site_id} was not removed: this role does not own it")


def _dialect_insert(conn: Connection) -> Callable[..., Any]:
    """The ``insert`` of the connection's dialect (``ON CONFLICT``), imported when needed."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def _current_role(conn: Connection) -> str:
    """Who is writing: the PostgreSQL role of the connection, or this process's user (SQLite)."""
    if conn.dialect.name == "postgresql":
        return str(conn.execute(text("SELECT current_user")).scalar_one())
    return getpass.getuser()
