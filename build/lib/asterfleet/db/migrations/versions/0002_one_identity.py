"""One identity: token scopes for the registry, refresh tokens, and the
registry's former users and tokens carried over.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# A console token's scopes before this revision, in the one identity's words
# (what the registry already let them do: read meant pull, write meant all).
SCOPE_MAP = {
    "read": ("read", "pull"),
    "write": ("write", "pull", "push", "delete"),
}


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column(
            "scopes", existing_type=sa.String(128), type_=sa.String(1024), existing_nullable=False
        )
    bind = op.get_bind()
    api_tokens = sa.table("api_tokens", sa.column("id", sa.Integer), sa.column("scopes"))
    for token_id, scopes in bind.execute(sa.select(api_tokens.c.id, api_tokens.c.scopes)).all():
        words: set[str] = set()
        for old in str(scopes).split(","):
            words.update(SCOPE_MAP.get(old.strip(), (old.strip(),)))
        words.discard("")
        bind.execute(
            api_tokens.update()
            .where(api_tokens.c.id == token_id)
            .values(scopes=" ".join(sorted(words)))
        )
    op.create_table(
        "refresh_tokens",
        sa.Column("secret_hash", sa.String(64), primary_key=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "token_id",
            sa.Integer,
            sa.ForeignKey("api_tokens.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("scopes", sa.String(1024), nullable=False, server_default=""),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])
    op.create_index("ix_refresh_tokens_token_id", "refresh_tokens", ["token_id"])

    from asterfleet.db.legacy import carry_over

    # The registry's users and tokens, when they share this database.
    carry_over(bind, bind)


def downgrade() -> None:
    op.drop_table("refresh_tokens")
