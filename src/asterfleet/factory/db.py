"""Opening the factory's store: SQLite by default, PostgreSQL by URL; and
sealing what an older version stored in clear
(:mod:`asterfleet.factory.knot_secrets`)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from asterfleet.factory.knot_secrets import seal_stored_secrets
from asterfleet.factory.schema import metadata
from asterfleet.storage import as_utc, open_engine, store_url, utcnow

DEFAULT_DB = "sqlite:///" + str(Path.home() / ".local/share/asterfleet/factory.db")
ENV = "ASTERFLEET_FACTORY_DB"

__all__ = [
    "DEFAULT_DB",
    "ENV",
    "as_utc",
    "default_url",
    "is_postgres",
    "open_store",
    "utcnow",
]


def default_url(legacy: bool = True) -> str:
    """``ASTERFLEET_FACTORY_DB``, the deprecated ``ASTERFLEET_DB`` (where it
    meant the factory's database: ``legacy``), or the default file."""
    return store_url(ENV, DEFAULT_DB, legacy)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def open_store(url: str | None = None, create: bool = True) -> Engine:
    """An engine for ``url`` with the factory's tables created and any
    secret stored in clear by an older version sealed."""
    engine = open_engine(url or default_url())
    if create:
        metadata.create_all(engine)
        seal_stored_secrets(engine)
    return engine
