"""A partial index of the Jobs a launcher may claim, in claiming order: claims stay fast as Jobs pile up.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIMABLE = sa.text("owner IS NULL AND state IN ('PREPROCESSED', 'RESTART_READY')")


def upgrade() -> None:
    """Create ``ix_objects_claimable``."""
    op.create_index(
        "ix_objects_claimable",
        "objects",
        ["site_id", "kind", "num_nodes", sa.text("node_packing_count DESC"), sa.text("wall_time_min DESC"), "id"],
        sqlite_where=CLAIMABLE,
        postgresql_where=CLAIMABLE,
    )


def downgrade() -> None:
    """Drop ``ix_objects_claimable``."""
    op.drop_index("ix_objects_claimable", table_name="objects")
