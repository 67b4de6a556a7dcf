"""The store's tables. One ``objects`` table holds every kind; Jobs use its indexed placement columns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    event,
)

from balsamctl.schemas.states import RUNNABLE_STATES

metadata = MetaData()
Json = JSON()

sites = Table(
    "sites",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(253), nullable=False, unique=True),
    Column("path", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    # Identity: kept in the site's directory too (.balsam/uuid); the role (PostgreSQL) or user that made it.
    Column("uuid", String(36)),
    Column("owner", String(128)),
    # What the site's controller publishes: where it lives and what it runs, and when it was last alive.
    Column("host", String(253)),
    Column("scheduler", String(32)),
    Column("platform", String(64)),
    Column("settings", Text),
    Column("job_template", Text),
    Column("published_at", Float),
    Column("heartbeat_at", Float),
)
Index("ux_sites_uuid", sites.c.uuid, unique=True)

site_grants = Table(
    "site_grants",
    metadata,
    Column("site_id", Integer, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(128), primary_key=True),
    Column("access", String(8), nullable=False),
    Column("granted_at", Float, nullable=False),
)

objects = Table(
    "objects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("site_id", Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(253), nullable=False),
    Column("uid", String(36), nullable=False),
    Column("state", String(32)),
    Column("generation", Integer, nullable=False, default=1),
    Column("observed_generation", Integer),
    Column("resource_version", Integer, nullable=False, default=1),
    Column("spec", Json, nullable=False),
    Column("labels", Json, nullable=False),
    Column("annotations", Json, nullable=False),
    Column("status", Json, nullable=False),
    Column("source", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("deletion_timestamp", Float),
    # Job columns: what acquisition filters and sorts on, and what launchers write often.
    Column("app", String(253)),
    Column("num_nodes", Integer),
    Column("node_packing_count", Integer),
    Column("wall_time_min", Integer),
    Column("owner", String(128)),
    Column("batch_job", String(253)),
    Column("return_code", Integer),
    Column("attempts", Integer, nullable=False, default=0),
    Column("start_time", Float),
    Column("end_time", Float),
    Column("message", Text),
    Column("output_tail", Text),
    # BatchJob column
    Column("scheduler_id", String(64)),
    UniqueConstraint("site_id", "kind", "name", name="uq_objects_site_kind_name"),
)
Index("ix_objects_site_kind_state_id", objects.c.site_id, objects.c.kind, objects.c.state, objects.c.id)
Index("ix_objects_site_kind_id", objects.c.site_id, objects.c.kind, objects.c.id)
Index("ix_objects_site_kind_app", objects.c.site_id, objects.c.kind, objects.c.app)
# Jobs of some Apps in one state (the controller's hookless moves and retries): lacking statistics, SQLite would
# otherwise pick ix_objects_site_kind_app above and read every Job of those Apps, whatever their state.
Index("ix_objects_site_kind_state_app", objects.c.site_id, objects.c.kind, objects.c.state, objects.c.app, objects.c.id)
Index("ix_objects_source", objects.c.site_id, objects.c.source)
Index("ix_objects_owner", objects.c.owner)
Index("ix_objects_scheduler_id", objects.c.scheduler_id)
#: Jobs a launcher may claim: runnable and unclaimed. The states are written into the SQL, not bound, so that
#: a query with this clause matches the partial index below (SQLite does not match bound parameters).
CLAIMABLE = and_(
    objects.c.owner.is_(None),
    objects.c.state.in_(
        bindparam("claimable", sorted(s.value for s in RUNNABLE_STATES), expanding=True, literal_execute=True)
    ),
)
# Claiming in the small_first order reads the first rows of this index: no scan and sort of every runnable Job.
claimable_index = Index(
    "ix_objects_claimable",
    objects.c.site_id,
    objects.c.kind,
    objects.c.num_nodes,
    objects.c.node_packing_count.desc(),
    objects.c.wall_time_min.desc(),
    objects.c.id,
)


#: Objects whose deletion was requested (few, if any): the controller's purge finds them without reading the rest.
deleting_index = Index("ix_objects_deleting", objects.c.site_id, objects.c.kind, objects.c.id)


@event.listens_for(objects, "before_create")
def _partial_indexes(_table: Table, connection: Connection, **_kw: Any) -> None:
    """The partial indexes' ``WHERE`` in the dialect that creates them: given to ``Index()`` as
    ``postgresql_where``, it would import the PostgreSQL dialect on every start (~40 ms of each CLI call on SQLite)."""
    claimable_index.dialect_options[connection.dialect.name]["where"] = CLAIMABLE
    deleting_index.dialect_options[connection.dialect.name]["where"] = objects.c.deletion_timestamp.is_not(None)


labels = Table(
    "labels",
    metadata,
    Column("object_id", Integer, ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(63), primary_key=True),
    Column("value", String(253), nullable=False),
)
Index("ix_labels_key_value", labels.c.key, labels.c.value, labels.c.object_id)

parents = Table(
    "parents",
    metadata,
    Column("child_id", Integer, ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True),
    Column("parent_id", Integer, ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True),
)
Index("ix_parents_parent", parents.c.parent_id)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("site_id", Integer, nullable=False),
    Column("object_id", Integer),
    Column("kind", String(16), nullable=False),
    Column("name", String(253), nullable=False),
    Column("from_state", String(32)),
    Column("to_state", String(32)),
    Column("time", Float, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("data", Json),
)
Index("ix_events_object", events.c.object_id, events.c.id)
Index("ix_events_site_id", events.c.site_id, events.c.id)

launchers = Table(
    "launchers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("site_id", Integer, nullable=False),
    Column("batch_job", String(253), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("job_mode", String(16), nullable=False),
    Column("host", String(253), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("nodes", Json, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("status", Json, nullable=False),
)
Index("ix_launchers_batch_job", launchers.c.site_id, launchers.c.batch_job)
