"""Indexes for the controller's passes, so they stay fast as Jobs pile up: Jobs of some Apps in one state, and
the (few) objects whose deletion was requested.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELETING = sa.text("deletion_timestamp IS NOT NULL")


def upgrade() -> None:
    """Create ``ix_objects_site_kind_state_app`` and ``ix_objects_deleting``."""
    op.create_index("ix_objects_site_kind_state_app", "objects", ["site_id", "kind", "state", "app", "id"])
    op.create_index(
        "ix_objects_deleting",
        "objects",
        ["site_id", "kind", "id"],
        sqlite_where=DELETING,
        postgresql_where=DELETING,
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_objects_deleting", table_name="objects")
    op.drop_index("ix_objects_site_kind_state_app", table_name="objects")
