"""Alembic environment: always run with a connection handed in by engine.migrate."""

from __future__ import annotations

from alembic import context

from asterfleet.db.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("asterfleet migrations run through asterfleet.db.engine.migrate")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=context.config.get_main_option("version_table") or "alembic_version_console",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
