"""Call views: the fleet's address history (names on call ladders) and
saved Calls searches.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_addresses",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("cluster", sa.String(64), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("until", sa.Float, nullable=True),
    )
    op.create_index("ix_fleet_addresses_cluster_address", "fleet_addresses", ["cluster", "address"])
    op.create_table(
        "saved_searches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index(
        "ux_saved_searches_user_name", "saved_searches", ["user_id", "name"], unique=True
    )


def downgrade() -> None:
    op.drop_table("saved_searches")
    op.drop_table("fleet_addresses")
