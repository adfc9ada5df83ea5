"""One storage opener for every store: URL rules, SQLite pragmas, and the
per-store environment variables (with the old ASTERFLEET_DB still read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterfleet.capture.store import Store
from asterfleet.db import open_database
from asterfleet.errors import UsageError
from asterfleet.factory.db import open_store
from asterfleet.storage import BUSY_TIMEOUT_MS, normalise_url, open_engine, store_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql://u:p@h:5433/db", "postgresql+psycopg://u:p@h:5433/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////var/lib/x.db", "sqlite:////var/lib/x.db"),
        ("sqlite://", "sqlite://"),
        ("/var/lib/asterfleet/x.db", "sqlite:////var/lib/asterfleet/x.db"),  # a bare path
    ],
)
def test_urls(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


def test_a_relative_path_is_a_sqlite_file_where_you_stand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalise_url("x.db") == f"sqlite:///{tmp_path / 'x.db'}"


@pytest.mark.parametrize("url", ["", "mysql://u@h/db", "http://x"])
def test_bad_urls_name_the_option(url: str) -> None:
    with pytest.raises(UsageError, match=r"--factory-db .* is not a database URL"):
        normalise_url(url, "--factory-db")


def pragmas(url: str, extra: tuple[str, ...] = ()) -> dict[str, object]:
    engine = open_engine(url, extra_pragmas=extra)
    with engine.connect() as conn:
        found = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar_one()
            for name in ("busy_timeout", "journal_mode", "foreign_keys", "synchronous")
        }
    engine.dispose()
    return found


def test_every_store_gets_the_same_sqlite_pragmas(tmp_path: Path) -> None:
    common = pragmas(str(tmp_path / "deep" / "dir" / "a.db"))  # the directory is made
    assert common["busy_timeout"] == BUSY_TIMEOUT_MS
    assert common["journal_mode"] == "wal" and common["foreign_keys"] == 1
    assert pragmas(str(tmp_path / "b.db"), ("synchronous=NORMAL",))["synchronous"] == 1
    # The three stores open through it: one busy timeout everywhere.
    console = open_database(str(tmp_path / "console.db"))
    factory = open_store(str(tmp_path / "factory.db"))
    capture = Store(str(tmp_path / "capture.db"))
    for engine in (console.engine, factory, capture.engine):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == BUSY_TIMEOUT_MS
    with capture.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # capture's own
    console.close()
    factory.dispose()
    capture.close()


def test_each_store_has_its_variable_and_the_old_one_warns_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ASTERFLEET_CONSOLE_DB", raising=False)
    monkeypatch.delenv("ASTERFLEET_DB", raising=False)
    assert store_url("ASTERFLEET_CONSOLE_DB", "default") == "default"
    monkeypatch.setenv("ASTERFLEET_DB", "/old.db")
    assert store_url("ASTERFLEET_CONSOLE_DB", "default") == "/old.db"
    err = capsys.readouterr().err
    assert err == "warning: ASTERFLEET_DB is deprecated: set ASTERFLEET_CONSOLE_DB instead\n"
    # Where ASTERFLEET_DB never meant this store, it is not read.
    assert store_url("ASTERFLEET_CONSOLE_DB", "default", legacy=False) == "default"
    monkeypatch.setenv("ASTERFLEET_CONSOLE_DB", "/new.db")
    assert store_url("ASTERFLEET_CONSOLE_DB", "default") == "/new.db"
    assert capsys.readouterr().err == ""
