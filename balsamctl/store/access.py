"""Access control on a shared PostgreSQL store: preparing it for its users (``balsamctl store init``) and the
grants of a site to other roles (``balsamctl site grant``, ``site revoke``).

The database enforces it, whatever client a role uses: row-level security (migration 0005) lets a role see the
sites it owns or is granted, and what they hold, and write only in those it owns or holds a write grant on; only a
site's owner manages its grants. The owner of the tables (who ran ``store init``) and superusers bypass it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy import Connection, Engine, create_engine, delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.pool import NullPool

from balsamctl.store import migrations
from balsamctl.store.base import StoreBase
from balsamctl.store.engine import AccessDenied, make_engine, read_tx, redact, write_tx
from balsamctl.store.objects import NotFound
from balsamctl.store.rows import now
from balsamctl.store.tables import metadata, site_grants, sites

Access = Literal["read", "write"]
ACCESS: tuple[Access, ...] = ("read", "write")
PUBLIC = "public"
"""Every role (PostgreSQL's ``PUBLIC``): the default grantee of ``store init``; a site can be granted to it too."""
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
"""What ``store init`` grants on the store's tables (row-level security narrows it to the rows of a role's
sites). Never TRUNCATE, which row-level security does not see."""


@dataclass(frozen=True)
class Grant:
    """A site granted to a role."""

    site_id: int
    role: str
    access: Access
    granted_at: float


def init_store(url: str, roles: list[str]) -> list[str]:
    """Prepare the PostgreSQL store at ``url`` for ``roles`` (``public``: every role), as the owner of its tables
    (or the role that may create them): migrate it to the newest schema, with its row-level security, and grant the
    roles the use of its schema, tables and sequences. Idempotent; what it did, as lines for people.

    :class:`ValueError` (nothing done) for a SQLite URL or a role the server does not have; :class:`AccessDenied`
    for a role that does not own the store's tables.
    """
    if not url.startswith("postgresql"):
        raise ValueError(
            f"store init prepares a shared PostgreSQL store; {redact(url)} is not one (a SQLite store is a file: its "
            "permissions say who may use it)"
        )
    grantees = _grantees(roles)
    admin = create_engine(url, poolclass=NullPool)
    try:
        with admin.connect() as conn:
            _check_roles(conn, grantees)
            schema = _check_owner(conn)
            before = _revision(conn)
    finally:
        admin.dispose()
    engine = make_engine(url)
    try:
        with write_tx(engine) as conn:
            sequences = _grant_use(conn, schema, grantees)
            secured = _secured(conn)
    finally:
        engine.dispose()
    head = migrations.head_revision()
    to = ", ".join(r.upper() if r == PUBLIC else r for r in grantees)
    tables = [t.name for t in metadata.sorted_tables]
    return [
        f"store {redact(url)}: schema revision {head} "
        + ("(created)" if before is None else "(already)" if before == head else f"(migrated from {before})"),
        f"row-level security on {', '.join(secured) or 'no table (not a shared store)'}",
        f"granted to {to}: USAGE on schema {schema}; {TABLE_PRIVILEGES} on {', '.join(tables)}; SELECT on "
        f"alembic_version; USAGE, SELECT on {', '.join(sequences)} (and UPDATE on {sequences[0]}, for site ids)",
        "each role sees and changes only the sites it owns or is granted: `balsamctl site grant SITE ROLE --read` "
        "or `--write`",
    ]


def _grantees(roles: list[str]) -> list[str]:
    """The roles to grant to, ``public`` for PostgreSQL's PUBLIC (any case), each once."""
    named = [PUBLIC if r.lower() == PUBLIC else r for r in roles] or [PUBLIC]
    return list(dict.fromkeys(named))


def _check_roles(conn: Connection, roles: list[str]) -> None:
    """:class:`ValueError` naming the roles the server does not have."""
    known = set(conn.execute(text("SELECT rolname FROM pg_roles")).scalars())
    missing = [r for r in roles if r != PUBLIC and r not in known]
    if missing:
        raise ValueError(f"no role {', '.join(map(repr, missing))} on this server: create it first (CREATE ROLE)")


def _check_owner(conn: Connection) -> str:
    """The schema the store lives in; :class:`AccessDenied` if this role neither owns its tables nor, for a new
    store, may create them."""
    row = conn.execute(
        text(
            "SELECT current_user AS me, current_schema() AS schema, "
            "has_schema_privilege(current_schema(), 'CREATE') AS can_create, "
            "(SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'sites') AS owner, "
            "(SELECT bool_or(pg_has_role(current_user, tableowner, 'USAGE')) FROM pg_tables "
            " WHERE schemaname = current_schema() AND tablename = 'sites') AS owns"
        )
    ).one()
    if row.owner is not None and not row.owns:
        raise AccessDenied(
            f"store init is for the owner of the store's tables ({row.owner}); role {row.me} is not, and may not "
            "change their schema or grants"
        )
    if row.owner is None and not row.can_create:
        raise AccessDenied(f"role {row.me} may not create the store's tables in schema {row.schema}")
    return str(row.schema)


def _revision(conn: Connection) -> str | None:
    """The store's schema revision, None if it has none yet."""
    if not conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar_one():
        return None
    return cast(str | None, conn.execute(text("SELECT version_num FROM alembic_version")).scalar())


def _grant_use(conn: Connection, schema: str, roles: list[str]) -> list[str]:
    """Grant ``roles`` the use of the store's schema, tables and sequences; the sequences, the sites' first."""
    quote = conn.dialect.identifier_preparer.quote
    to = ", ".join("PUBLIC" if r == PUBLIC else quote(r) for r in roles)
    tables = ", ".join(quote(t.name) for t in metadata.sorted_tables)
    sequences = [
        str(s)
        for t in (sites, *(t for t in metadata.sorted_tables if t is not sites))
        for c in t.primary_key.columns
        if (s := conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": t.name, "c": c.name}).scalar())
    ]
    conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {quote(schema)} TO {to}")
    conn.exec_driver_sql(f"GRANT {TABLE_PRIVILEGES} ON TABLE {tables} TO {to}")
    conn.exec_driver_sql(f"GRANT SELECT ON TABLE alembic_version TO {to}")
    conn.exec_driver_sql(f"GRANT USAGE, SELECT ON SEQUENCE {', '.join(sequences)} TO {to}")
    # a new site may take the id its registry prefers, and then moves the sequence past it (setval)
    conn.exec_driver_sql(f"GRANT UPDATE ON SEQUENCE {sequences[0]} TO {to}")
    return sequences


def _secured(conn: Connection) -> list[str]:
    """The store's tables under row-level security."""
    q = text("SELECT relname FROM pg_class WHERE relrowsecurity AND oid = ANY(:oids) ORDER BY relname")
    oids = [conn.execute(text("SELECT to_regclass(:t)::oid"), {"t": t.name}).scalar() for t in metadata.sorted_tables]
    return list(conn.execute(q, {"oids": oids}).scalars())


# ---------------------------------------------------------------- grants


def grants(store: StoreBase, site_id: int) -> list[Grant]:
    """The grants of a site, by role (those this role may see: all of them for its owner, its own for a grantee;
    none on SQLite, which has no roles)."""
    q = select(site_grants).where(site_grants.c.site_id == site_id).order_by(site_grants.c.role)
    with read_tx(store.engine) as conn:
        return [Grant(r.site_id, r.role, r.access, r.granted_at) for r in conn.execute(q)]


def grant(store: StoreBase, site_id: int, role: str, access: Access) -> str:
    """Let ``role`` (``public``: every role) read, or read and write, the site (what it held before is replaced):
    ``granted``, ``changed from ACCESS`` or ``unchanged``. Only the site's owner may (:class:`AccessDenied`, which
    the database's policies enforce too); :class:`ValueError` for a SQLite store, an unknown access or role, or the
    site's own owner."""
    if access not in ACCESS:
        raise ValueError(f"access must be one of {', '.join(ACCESS)}, not {access!r}")
    role = _role(store.engine, role)
    with write_tx(store.engine) as conn:
        owner, name = managed(conn, site_id, "grant access to it")
        if role == owner:
            raise ValueError(f"role {role} owns site {name}: it may do anything there already")
        _check_roles(conn, [role])
        before = conn.execute(
            select(site_grants.c.access).where(site_grants.c.site_id == site_id, site_grants.c.role == role)
        ).scalar()
        if before == access:
            return "unchanged"
        upsert = insert(site_grants).values(site_id=site_id, role=role, access=access, granted_at=now())
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[site_grants.c.site_id, site_grants.c.role],
                set_={"access": upsert.excluded.access, "granted_at": upsert.excluded.granted_at},
            )
        )
    return "granted" if before is None else f"changed from {before}"


def revoke(store: StoreBase, site_id: int, role: str) -> bool:
    """Take a site's grant from ``role``; whether it had one. Only the site's owner may (:class:`AccessDenied`)."""
    role = _role(store.engine, role)
    with write_tx(store.engine) as conn:
        managed(conn, site_id, "revoke access to it")
        gone = conn.execute(delete(site_grants).where(site_grants.c.site_id == site_id, site_grants.c.role == role))
        return bool(gone.rowcount)


def _role(engine: Engine, role: str) -> str:
    """``role`` as stored (``public`` in any case: ``public``); :class:`ValueError` on SQLite, which has no roles."""
    if engine.dialect.name != "postgresql":
        raise ValueError(
            "grants are for sites in a shared PostgreSQL store; a SQLite store is a file: its permissions say who "
            "may use it"
        )
    return PUBLIC if role.lower() == PUBLIC else role


def require_write(conn: Connection, site_id: int, what: str) -> None:
    """:class:`AccessDenied` unless this role may write the site's objects: it owns the site, holds a write grant
    of it, or bypasses row-level security. For a write the policies filtered to nothing (no error of their own)."""
    may = conn.execute(
        text(
            "SELECT s.owner = current_user::text OR s.id = ANY(balsam_granted_sites('write', current_user)) "
            "OR (SELECT r.rolsuper OR r.rolbypassrls OR pg_has_role(current_user, c.relowner, 'USAGE') "
            "FROM pg_roles r, pg_class c WHERE r.rolname = current_user AND c.oid = 'objects'::regclass) "
            "FROM sites s WHERE s.id = :id"
        ),
        {"id": site_id},
    ).scalar()
    if not may:
        raise AccessDenied(f"this role may not {what} at site {site_id}: it holds no write grant of it")


def managed(conn: Connection, site_id: int, verb: str) -> tuple[str | None, str]:
    """The owner and name of a site whose grants this role manages: it owns the site, or it bypasses the store's
    row-level security (the tables' owner, a superuser). :class:`NotFound` if it cannot see the site,
    :class:`AccessDenied` if it does not manage it."""
    row = conn.execute(
        select(
            sites.c.owner,
            sites.c.name,
            text("current_user AS me"),
            text(
                "(SELECT r.rolsuper OR r.rolbypassrls OR pg_has_role(current_user, c.relowner, 'USAGE') "
                "FROM pg_roles r, pg_class c WHERE r.rolname = current_user AND c.oid = 'site_grants'::regclass) "
                "AS bypass"
            ),
        ).where(sites.c.id == site_id)
    ).first()
    if row is None:
        raise NotFound(f"no site {site_id} in this store (or role {_me(conn)} may not see it)")
    if row.owner != row.me and not row.bypass:
        raise AccessDenied(
            f"only the owner of site {row.name} ({row.owner or 'the owner of the store'}) may {verb}, not role {row.me}"
        )
    return row.owner, row.name


def _me(conn: Connection) -> str:
    return str(conn.execute(text("SELECT current_user")).scalar_one())
