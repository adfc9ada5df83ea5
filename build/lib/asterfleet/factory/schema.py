"""The factory's and registry's own tables, in their own MetaData.

SQLite is the zero-setup default; PostgreSQL (by URL) is the store that
workers on several machines share. Table names are prefixed (``reg_``,
``cat_``, ``factory_``) so they can live beside the console's tables.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# -- identity (until the lead wires the shared user store) -------------------

reg_users = Table(
    "reg_users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

reg_namespaces = Table(
    "reg_namespaces",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("public", Boolean, nullable=False, default=False),
)

reg_repositories = Table(
    "reg_repositories",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("public", Boolean, nullable=False, default=False),
)

reg_grants = Table(
    "reg_grants",
    metadata,
    Column("namespace", String(128), primary_key=True),
    Column("username", String(64), primary_key=True),
    Column("actions", String(64), nullable=False),  # "pull" or "pull,push"
)

reg_access_tokens = Table(
    "reg_access_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
)

reg_refresh_tokens = Table(
    "reg_refresh_tokens",
    metadata,
    Column("secret_hash", String(64), primary_key=True),
    Column("username", String(64), nullable=False, index=True),
    Column("service", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# -- catalogue -----------------------------------------------------------------

cat_repositories = Table(
    "cat_repositories",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

cat_tags = Table(
    "cat_tags",
    metadata,
    Column("repository", String(255), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("digest", String(80), nullable=False),
    Column("media_type", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created", DateTime(timezone=True), nullable=True),
    Column("platforms", JSON, nullable=False),  # ["linux/amd64", ...]
    Column("layers", JSON, nullable=False),  # [{"digest","size","media_type"}]
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# -- factory -------------------------------------------------------------------

factory_knots = Table(
    "factory_knots",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("next_number", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

factory_builds = Table(
    "factory_builds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("knot", String(64), ForeignKey("factory_knots.name", ondelete="CASCADE")),
    Column("number", Integer, nullable=False),
    Column("ref", String(255), nullable=False),  # refs/heads/main, refs/tags/v1
    Column("sha", String(64), nullable=True),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("triggers", JSON, nullable=False),  # ["webhook:github", "poll:git", ...]
    Column("worker", String(128), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("image", String(512), nullable=True),
    Column("digest", String(80), nullable=True),
    Column("tags", JSON, nullable=False),
    UniqueConstraint("knot", "number", name="uq_factory_builds_knot_number"),
)
Index("ix_factory_builds_state", factory_builds.c.state, factory_builds.c.id)

factory_build_logs = Table(
    "factory_build_logs",
    metadata,
    Column(
        "build_id", Integer, ForeignKey("factory_builds.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("offset", BigInteger, primary_key=True),  # character offset of this chunk
    Column("data", Text, nullable=False),
)

factory_deliveries = Table(
    "factory_deliveries",
    metadata,
    Column("knot", String(64), primary_key=True),
    Column("delivery", String(128), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

factory_poll_state = Table(
    "factory_poll_state",
    metadata,
    Column("knot", String(64), primary_key=True),
    Column("source", String(512), primary_key=True),  # "git" or the polled URL
    Column("etag", Text, nullable=True),
    Column("last_modified", Text, nullable=True),
    Column("content_hash", String(64), nullable=True),
    Column("refs", JSON, nullable=False),  # {"refs/heads/main": sha}
    Column("checked_at", DateTime(timezone=True), nullable=True),
)

# The Dockerfile each build used, shown (highlighted) on the tag it produced.
factory_dockerfiles = Table(
    "factory_dockerfiles",
    metadata,
    Column(
        "build_id", Integer, ForeignKey("factory_builds.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("path", String(512), nullable=False),
    Column("text", Text, nullable=False),
)
