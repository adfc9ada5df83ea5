"""Engine and sessions for the console store, migrated on open."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

from asterfleet.storage import normalise_url, open_engine, store_url

VERSION_TABLE = "alembic_version_console"
SCRIPT_LOCATION = "asterfleet.db:migrations"
ENV = "ASTERFLEET_CONSOLE_DB"

__all__ = ["ENV", "Database", "default_url", "migrate", "normalise_url", "open_database"]


def default_url(legacy: bool = True) -> str:
    """``ASTERFLEET_CONSOLE_DB`` (or the deprecated ``ASTERFLEET_DB`` where it
    meant the console's database: ``legacy``), else a SQLite file under the
    user's state directory."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return store_url(ENV, f"sqlite:///{Path(state) / 'asterfleet' / 'console.db'}", legacy)


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[OrmSession]

    @contextmanager
    def session(self) -> Iterator[OrmSession]:
        """A session committed on success, rolled back on error."""
        with self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision shipped in the package."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("version_table", VERSION_TABLE)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_database(url: str | None = None, *, apply_migrations: bool = True) -> Database:
    """Open (and by default migrate) the store at ``url``."""
    engine = open_engine(url or default_url())
    if apply_migrations:
        migrate(engine)
    return Database(engine, sessionmaker(engine, expire_on_commit=False))
