"""Engine and sessions for the console store, migrated on open."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

from asterfleet.errors import UsageError

VERSION_TABLE = "alembic_version_console"
SCRIPT_LOCATION = "asterfleet.db:migrations"


def default_url() -> str:
    """A SQLite file under the user's state directory."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return f"sqlite:///{Path(state) / 'asterfleet' / 'console.db'}"


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and a bare file path; UsageError on anything else."""
    url = url.strip()
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("postgresql+psycopg://", "sqlite://")):
        return url
    if "://" not in url and url:
        return f"sqlite:///{Path(url).resolve()}"
    raise UsageError(
        f"--db {url!r} is not a database URL: use sqlite:///PATH, a file path, "
        "or postgresql://USER:PASSWORD@HOST/DBNAME"
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


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
    full = normalise_url(url or default_url())
    kwargs: dict[str, Any] = {"future": True}
    if full.startswith("sqlite"):
        db_path = full.removeprefix("sqlite:///")
        if db_path and db_path != ":memory:" and not full.startswith("sqlite:///:memory:"):
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(full, **kwargs)
    if full.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    if apply_migrations:
        migrate(engine)
    return Database(engine, sessionmaker(engine, expire_on_commit=False))
