"""Sites publish themselves and have an identity: a UUID, the role that owns them, where they live (host, path),
what they run (scheduler, platform, settings, job template) and a heartbeat; and the grants their owners give.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("uuid", sa.String(36)),
    ("owner", sa.String(128)),
    ("host", sa.String(253)),
    ("scheduler", sa.String(32)),
    ("platform", sa.String(64)),
    ("settings", sa.Text),
    ("job_template", sa.Text),
    ("published_at", sa.Float),
    ("heartbeat_at", sa.Float),
)


def upgrade() -> None:
    """Add the sites' identity and published columns, and ``site_grants``."""
    for name, type_ in _COLUMNS:
        op.add_column("sites", sa.Column(name, type_))
    op.create_index("ux_sites_uuid", "sites", ["uuid"], unique=True)
    op.create_table(
        "site_grants",
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(128), primary_key=True),
        sa.Column("access", sa.String(8), nullable=False),
        sa.Column("granted_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("site_grants")
    op.drop_index("ux_sites_uuid", table_name="sites")
    with op.batch_alter_table("sites") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
