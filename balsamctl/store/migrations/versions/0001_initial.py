"""The initial schema: sites, objects (every kind), labels, parents, events, launchers.

Revision ID: 0001
Revises:
Create Date: 2025-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create every table and index."""
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(253), nullable=False, unique=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "objects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("state", sa.String(32)),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("observed_generation", sa.Integer),
        sa.Column("resource_version", sa.Integer, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("annotations", sa.JSON, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("deletion_timestamp", sa.Float),
        sa.Column("app", sa.String(253)),
        sa.Column("num_nodes", sa.Integer),
        sa.Column("node_packing_count", sa.Integer),
        sa.Column("wall_time_min", sa.Integer),
        sa.Column("owner", sa.String(128)),
        sa.Column("batch_job", sa.String(253)),
        sa.Column("return_code", sa.Integer),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("start_time", sa.Float),
        sa.Column("end_time", sa.Float),
        sa.Column("message", sa.Text),
        sa.Column("output_tail", sa.Text),
        sa.Column("scheduler_id", sa.String(64)),
        sa.UniqueConstraint("site_id", "kind", "name", name="uq_objects_site_kind_name"),
    )
    op.create_index("ix_objects_site_kind_state_id", "objects", ["site_id", "kind", "state", "id"])
    op.create_index("ix_objects_site_kind_id", "objects", ["site_id", "kind", "id"])
    op.create_index("ix_objects_site_kind_app", "objects", ["site_id", "kind", "app"])
    op.create_index("ix_objects_source", "objects", ["site_id", "source"])
    op.create_index("ix_objects_owner", "objects", ["owner"])
    op.create_index("ix_objects_scheduler_id", "objects", ["scheduler_id"])
    op.create_table(
        "labels",
        sa.Column("object_id", sa.Integer, sa.ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(63), primary_key=True),
        sa.Column("value", sa.String(253), nullable=False),
    )
    op.create_index("ix_labels_key_value", "labels", ["key", "value", "object_id"])
    op.create_table(
        "parents",
        sa.Column("child_id", sa.Integer, sa.ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_parents_parent", "parents", ["parent_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("object_id", sa.Integer),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32)),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_events_object", "events", ["object_id", "id"])
    op.create_index("ix_events_site_id", "events", ["site_id", "id"])
    op.create_table(
        "launchers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("batch_job", sa.String(253), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("job_mode", sa.String(16), nullable=False),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("nodes", sa.JSON, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
        sa.Column("status", sa.JSON, nullable=False),
    )
    op.create_index("ix_launchers_batch_job", "launchers", ["site_id", "batch_job"])


def downgrade() -> None:
    """Drop every table."""
    for table in ("launchers", "events", "parents", "labels", "objects", "sites"):
        op.drop_table(table)
