"""The console store: migrations applied at open, idempotent, own version table."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from asterfleet.console import eventlog
from asterfleet.console.transitions import EventDraft, diff_views
from asterfleet.db import normalise_url, open_database
from asterfleet.errors import UsageError


def test_opening_twice_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "console.db"
    open_database(str(path)).close()
    db = open_database(f"sqlite:///{path}")
    names = set(inspect(db.engine).get_table_names())
    assert {"users", "api_tokens", "sessions", "events", "alembic_version_console"} <= names
    with db.engine.connect() as conn:
        assert (
            conn.execute(text("select version_num from alembic_version_console")).scalar() == "0003"
        )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_urls(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


def test_an_unknown_url_is_refused() -> None:
    with pytest.raises(UsageError, match="not a database URL"):
        normalise_url("mysql://h/db")


def test_events_filter_by_kind_node_actor_and_age(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "c.db"))
    eventlog.record(db, "c1", [EventDraft("joined", "node-1", "node-1 joined")], at=100.0)
    eventlog.record(
        db, "c1", [EventDraft("drained", "node-2", "node-2 drained", "alice@console")], at=200.0
    )
    eventlog.record(db, "other", [EventDraft("joined", "node-1", "elsewhere")], at=200.0)

    def q(**kw: object) -> list[str]:
        rows = eventlog.query(db, "c1", eventlog.EventFilter(**kw), now=250.0)  # type: ignore[arg-type]
        return [r.message for r in rows]

    assert q() == ["node-2 drained", "node-1 joined"]
    assert q(kind="joined") == ["node-1 joined"]
    assert q(node="2") == ["node-2 drained"]
    assert q(actor="alice") == ["node-2 drained"]
    assert q(since="15m") == ["node-2 drained", "node-1 joined"]
    assert q(node="%") == []  # wildcards are matched literally
    with pytest.raises(UsageError, match="since"):
        q(since="2w")


def test_the_members_of_the_fleet_are_read_back_from_the_events(tmp_path: Path) -> None:
    """What a restarted console compares its first view with: joins (one by
    one or in a burst), minus the nodes that left since."""
    db = open_database(str(tmp_path / "c.db"))
    from tests.unit.test_console_transitions import node, view

    burst = diff_views(view([]), view([node(f"n{i}") for i in range(12)]))
    assert len(burst) == 1
    eventlog.record(db, "c1", burst, at=100.0)
    eventlog.record(db, "c1", [EventDraft("left", "n3", "n3 left")], at=110.0)
    eventlog.record(db, "c1", [EventDraft("joined", "x", "x joined")], at=120.0)
    eventlog.record(db, "other", [EventDraft("joined", "y", "y joined")], at=120.0)
    assert eventlog.members(db, "c1") == {f"n{i}" for i in range(12) if i != 3} | {"x"}
    # A burst is one event, and a node filter still finds it.
    assert [r.kind for r in eventlog.query(db, "c1", eventlog.EventFilter(node="n11"))] == [
        "joined"
    ]
