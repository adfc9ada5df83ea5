"""The console's relational store: SQLite by default, PostgreSQL by URL.

:func:`open_database` builds the engine for a URL, applies the shipped
Alembic migrations and hands back a :class:`Database` (engine plus session
factory). Other areas (capture, factory) keep their own tables and their own
migration history, so this history uses its own version table.
"""

from asterfleet.db.engine import Database, default_url, normalise_url, open_database
from asterfleet.db.schema import (
    ApiToken,
    Base,
    Event,
    FleetAddress,
    RefreshToken,
    SavedSearch,
    Session,
    User,
)

__all__ = [
    "ApiToken",
    "Base",
    "Database",
    "Event",
    "FleetAddress",
    "RefreshToken",
    "SavedSearch",
    "Session",
    "User",
    "default_url",
    "normalise_url",
    "open_database",
]
