"""The registry's own tables: who owns which namespace, grants, public flags
(``reg_``) and the browsable catalogue (``cat_``).

Users, passwords and tokens are not here: they are the one identity in
:mod:`asterfleet.auth`. These tables live in the factory's store by default
(``ASTERFLEET_FACTORY_DB``) and are created by :func:`create_tables`.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Engine, MetaData, String, Table

metadata = MetaData()

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


def create_tables(engine: Engine) -> Engine:
    """Create the registry's tables where missing; returns ``engine``."""
    metadata.create_all(engine)
    return engine
