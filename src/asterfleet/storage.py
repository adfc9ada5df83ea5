"""One way to open a store: URL rules, SQLite pragmas and pool defaults.

Every store (the console's, the factory's and registry's, the capture's)
opens its engine here and keeps its own tables and migrations. A bare path
means a SQLite file; ``postgres://`` and ``postgresql://`` mean PostgreSQL
through psycopg 3. SQLite waits up to :data:`BUSY_TIMEOUT_MS` for a lock,
writes through WAL and enforces foreign keys.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

from asterfleet.errors import UsageError

BUSY_TIMEOUT_MS = 30_000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def normalise_url(url: str, option: str = "--db") -> str:
    """A SQLAlchemy URL for ``url``; UsageError naming ``option`` otherwise."""
    url = url.strip()
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("postgresql+psycopg://", "sqlite://")):
        return url
    if "://" not in url and url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    raise UsageError(
        f"{option} {url!r} is not a database URL: use sqlite:///PATH, a file path, "
        "or postgresql://USER:PASSWORD@HOST/DBNAME"
    )


PRAGMAS = ("foreign_keys=ON", "journal_mode=WAL", f"busy_timeout={BUSY_TIMEOUT_MS}")


def open_engine(
    url: str, option: str = "--db", extra_pragmas: tuple[str, ...] = (), **engine_kwargs: Any
) -> Engine:
    """An engine for ``url`` (creating a SQLite file's directory).

    ``extra_pragmas`` are a store's own SQLite tuning (the capture store's
    ``synchronous=NORMAL``), run after the common ones."""
    full = normalise_url(url, option)
    kwargs: dict[str, Any] = {"future": True}
    if full.startswith("sqlite"):
        path = full.removeprefix("sqlite:///")
        if full.startswith("sqlite:///") and path and not path.startswith(":memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {
            "timeout": BUSY_TIMEOUT_MS / 1000,
            "check_same_thread": False,
        }
    else:
        kwargs["pool_pre_ping"] = True
    kwargs.update(engine_kwargs)
    engine = create_engine(full, **kwargs)
    if engine.dialect.name == "sqlite":
        pragmas = PRAGMAS + extra_pragmas

        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            for pragma in pragmas:
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        event.listen(engine, "connect", _on_connect)
    check_opens(engine, option)
    return engine


def check_opens(engine: Engine, option: str = "--db") -> None:
    """Connect once: a directory, a file that is no database or a PostgreSQL that
    refuses becomes one UsageError naming ``option`` (not a driver traceback)."""
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc) else "?"
        engine.dispose()
        raise UsageError(
            f"{option} {shown}: cannot open the database ({reason}): give a SQLite file "
            "path in a writable directory, or a PostgreSQL that runs and accepts this user"
        ) from None


def store_url(variable: str, default: str, legacy: bool = True) -> str:
    """The URL in ``variable``, else the deprecated ``ASTERFLEET_DB`` (with a
    one-line warning; only where it meant this store: ``legacy``), else
    ``default``."""
    value = os.environ.get(variable)
    if value:
        return value
    old = os.environ.get("ASTERFLEET_DB") if legacy else None
    if old:
        print(f"warning: ASTERFLEET_DB is deprecated: set {variable} instead", file=sys.stderr)
        return old
    return default
