"""Access control on a shared PostgreSQL store: row-level security on every table of the store.

A role sees the sites it owns (``sites.owner``) and those granted to it, to a role it is a member of or to PUBLIC
(``site_grants``, read or write), and what they hold; it writes objects (and the events of its changes) only in
the sites it owns or holds a write grant on; only a site's owner changes or removes its row, its launchers and its
events, and manages its grants. The owner of the tables and superusers bypass it (it is not forced). SQLite has no
roles: a no-op there.

Cheap on the hot paths (a site's controller and launchers run as its owner; claims over 100,000 Jobs): the sites
a role owns, and those granted to it (``balsam_granted_sites``), are each read at most once per statement (an
InitPlan, made only when a row needs it), never once per row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The ids of the sites granted to a role (to it, to a role it is a member of, or to PUBLIC) for reading (any grant)
# or for writing (write grants). SECURITY DEFINER: it reads site_grants past its policies. ``who`` is the querying
# role (``current_user`` in the policies: in here, current_user is the function's owner), and a session may ask
# only for a role it can act as. PL/pgSQL: its plan is kept for the session (a SQL function's is made on each call).
_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.balsam_granted_sites(wanted text, who name) RETURNS integer[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(session_user, who, 'MEMBER') THEN
        RETURN '{{}}';
    END IF;
    RETURN ARRAY(
        SELECT g.site_id FROM {schema}.site_grants g
        WHERE (wanted = 'read' OR g.access = 'write')
          AND (g.role = 'public' OR g.role IN (
                SELECT r.rolname FROM pg_roles r WHERE pg_has_role(who, r.oid, 'MEMBER'))));
END
$$
"""


def _site(site_id: str, access: str) -> str:
    """The querying role owns the site, or (``access`` read or write) holds a grant of it for that. Each array is
    an InitPlan: made once per statement, and only once a row needs it (a site's own controller and launchers,
    which run as its owner, never call the function); each row costs an array lookup, and the planner's estimates
    stay those of the query alone (no per-row subquery: no JIT compilation of a small query). ``site_id + 0``: the
    planner cannot know the arrays' sizes, and would otherwise read every object of the site through an index on
    ``site_id`` (a BitmapOr of the two arrays) where the query names its rows by id."""
    column = f"({site_id} + 0)"  # never an index condition: the statement's own conditions choose the index
    owned = f"{column} = ANY(ARRAY(SELECT s.id FROM sites s WHERE s.owner = current_user::text))"
    if access == "own":
        return owned
    return f"{owned} OR {column} = ANY((SELECT balsam_granted_sites('{access}', current_user))::integer[])"


def _object(object_id: str, access: str) -> str:
    """The object is one the querying role may read (objects' own policy, in the subquery) and, to write it,
    in a site it may write."""
    write = f" AND ({_site('o.site_id', 'write')})" if access == "write" else ""
    return f"EXISTS (SELECT 1 FROM objects o WHERE o.id = {object_id}{write})"


_OWNER = "owner = current_user::text"
_GRANTEE = (  # the grantee reads its grants
    "site_grants.role = 'public' OR site_grants.role IN "
    "(SELECT r.rolname FROM pg_roles r WHERE pg_has_role(current_user, r.oid, 'MEMBER'))"
)
_PARENTS = f"({_object('parents.child_id', 'write')}) AND ({_object('parents.parent_id', 'write')})"
# {table: (who reads a row, who inserts one, who updates or deletes one)}: a write grant is for objects (apply,
# rerun, delete, and the events they make); a site's history of events and its launchers stay its owner's.
_POLICIES = {
    "sites": (f"{_OWNER} OR id = ANY((SELECT balsam_granted_sites('read', current_user))::integer[])", _OWNER, _OWNER),
    "site_grants": (f"{_site('site_id', 'own')} OR {_GRANTEE}", _site("site_id", "own"), _site("site_id", "own")),
    "objects": (_site("site_id", "read"), _site("site_id", "write"), _site("site_id", "write")),
    "events": (_site("site_id", "read"), _site("site_id", "write"), _site("site_id", "own")),
    "launchers": (_site("site_id", "read"), _site("site_id", "own"), _site("site_id", "own")),
    "labels": (_object("labels.object_id", "read"), *[_object("labels.object_id", "write")] * 2),
    "parents": (_object("parents.child_id", "read"), _PARENTS, _PARENTS),
}
TABLES = tuple(_POLICIES)
"""The tables under row-level security."""


def upgrade() -> None:
    """Create ``balsam_granted_sites``, enable row-level security and create the policies (PostgreSQL)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = bind.dialect.identifier_preparer.quote_identifier(
        bind.execute(sa.text("SELECT current_schema()")).scalar_one()
    )
    op.execute(_FUNCTION.format(schema=schema))
    for table, (read, insert, change) in _POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY balsam_read ON {table} FOR SELECT USING ({read})")
        op.execute(f"CREATE POLICY balsam_insert ON {table} FOR INSERT WITH CHECK ({insert})")
        op.execute(f"CREATE POLICY balsam_update ON {table} FOR UPDATE USING ({change}) WITH CHECK ({change})")
        op.execute(f"CREATE POLICY balsam_delete ON {table} FOR DELETE USING ({change})")


def downgrade() -> None:
    """Drop them (PostgreSQL)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        for policy in ("read", "insert", "update", "delete"):
            op.execute(f"DROP POLICY balsam_{policy} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute("DROP FUNCTION balsam_granted_sites(text, name)")
