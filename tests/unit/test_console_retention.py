"""The fleet's history (events, address sightings) ages out like the
captured calls it explains, and trimming never changes what the console
still reads from it: who is in the fleet, a node's state at a call's start,
the names of a kept call's hosts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from asterfleet.console import ConsoleSettings, create_app
from asterfleet.console.addressbook import directory
from asterfleet.console.eventlog import members, node_history, state_at
from asterfleet.console.retention import Trimmed, keep_trimmed, trim_history
from asterfleet.db import Database, Event, FleetAddress, open_database
from tests.unit.console_fakes import FakeEtcd

NOW = 1_800_000_000.0
CUT = NOW - 7 * 86400  # retention 7d


def at(days_before_cut: float) -> float:
    return CUT - days_before_cut * 86400


#: (name, when, kind, node_id, message, kept, why)
EVENTS = [
    ("ast1 joined", at(9), "joined", "ast1", "ast1 joined set 1 at sip:10.0.0.1 (active)", True,
     "ast1 is still in the fleet: members() needs its joined"),
    ("ast1 weight", at(8), "weight", "ast1", "ast1 weight 1 -> 2", False,
     "sets no state"),
    ("ast1 draining", at(7), "draining", "ast1", "ast1 is draining (was active)", False,
     "a later state event before the cut replaces it"),
    ("ast1 drained", at(6), "drained", "ast1", "ast1 is drained (was draining)", True,
     "ast1's state at the cut: a call just after it still shows 'drained'"),
    ("ast1 undrained", at(-1), "undrained", "ast1", "ast1 is undrained (was drained)", True,
     "after the cut"),
    ("ast2 joined", at(9), "joined", "ast2", "ast2 joined set 1 at sip:10.0.0.2 (active)", False,
     "ast2 left before the cut: nothing of it is needed"),
    ("ast2 left", at(8), "left", "ast2", "ast2 left (its lease ended)", False, "ditto"),
    ("burst", at(9), "joined", "", "3 nodes joined: ast3, ast4, ast5", True,
     "ast3 and ast5 are still in the fleet"),
    ("ast4 left", at(8), "left", "ast4", "ast4 left (its lease ended)", True,
     "the kept burst names ast4: its leaving must stay too"),
    ("ast6 joined", at(9), "joined", "ast6", "ast6 joined set 1 at sip:10.0.0.6 (active)", False,
     "ast6 left and came back: its second joined is the one that counts"),
    ("ast6 left", at(8), "left", "ast6", "ast6 left (its lease ended)", False, "ditto"),
    ("ast6 back", at(7), "joined", "ast6", "ast6 joined set 1 at sip:10.0.0.6 (draining)", True,
     "ast6's membership and state at the cut"),
    ("ast7 joined", at(-2), "joined", "ast7", "ast7 joined set 1 at sip:10.0.0.7 (active)", True,
     "after the cut"),
]  # fmt: skip


def seed_events(db: Database) -> dict[str, int]:
    ids: dict[str, int] = {}
    with db.session() as s:
        for name, when, kind, node, message, _kept, _why in EVENTS:
            e = Event(at=when, cluster="c1", kind=kind, node_id=node, actor="agent",
                      message=message)  # fmt: skip
            s.add(e)
            s.flush()
            ids[name] = e.id
        # Another cluster's events are its own console's business.
        s.add(Event(at=at(30), cluster="c2", kind="weight", node_id="x", message="old"))
    return ids


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(str(tmp_path / "console.db"))


def test_old_events_go_but_what_the_console_reads_from_them_stays(db: Database) -> None:
    ids = seed_events(db)
    nodes = [f"ast{i}" for i in range(1, 8)]
    present = members(db, "c1")
    states = {n: state_at(node_history(db, "c1", n, CUT), CUT) for n in nodes}

    done = trim_history(db, "c1", CUT)

    with db.session() as s:
        left = set(s.scalars(select(Event.id).where(Event.cluster == "c1")))
        others = list(s.scalars(select(Event.id).where(Event.cluster == "c2")))
    for name, _when, _kind, _node, _message, kept, why in EVENTS:
        assert (ids[name] in left) == kept, f"{name}: {why}"
    assert done == Trimmed(events=sum(1 for e in EVENTS if not e[5]), addresses=0)
    assert len(others) == 1
    assert members(db, "c1") == present == {"ast1", "ast3", "ast5", "ast6", "ast7"}
    for n in present:  # the state of a node still there is read as before
        assert state_at(node_history(db, "c1", n, CUT), CUT) == states[n], n
    assert states["ast1"] is not None and states["ast1"].state == "drained"
    # Trimming again changes nothing.
    assert trim_history(db, "c1", CUT) == Trimmed(0, 0)


def test_sightings_that_ended_before_the_cut_go_open_ones_stay(db: Database) -> None:
    rows = [
        # (address, name, since, until, kept)
        ("10.0.0.1:5060", "ast1", at(30), None, True),  # held still
        ("10.0.0.2:5060", "ast2", at(30), at(1), False),  # let go before the cut
        ("10.0.0.2:5060", "ast9", at(1), None, True),  # its new holder
        ("10.0.0.3:5060", "ast3", at(30), at(-1), True),  # held into the kept window
        ("capture-id:7", "lb7", at(30), at(2), False),
    ]
    with db.session() as s:
        for address, name, since, until, _kept in rows:
            kind = "balancer" if name.startswith("lb") else "node"
            s.add(FleetAddress(cluster="c1", address=address, kind=kind, name=name,
                               since=since, until=until))  # fmt: skip
    assert trim_history(db, "c1", CUT) == Trimmed(events=0, addresses=2)
    with db.session() as s:
        left = {(a.address, a.name) for a in s.scalars(select(FleetAddress))}
    assert left == {(a, n) for a, n, _s, _u, kept in rows if kept}
    # A call kept by the capture store (after the cut) is named as before.
    book = directory(db, "c1", {"10.0.0.1:5060", "10.0.0.2:5060", "10.0.0.3:5060"})
    kept = ("10.0.0.1:5060", "10.0.0.2:5060", "10.0.0.3:5060")
    assert [book.name(a, CUT + 60) for a in kept] == ["ast1", "ast9", "ast3"]


def test_the_trimming_loop_trims_at_once_and_survives_a_database_error(db: Database) -> None:
    seed_events(db)
    seen: list[Trimmed] = []

    async def run() -> None:
        task = asyncio.create_task(
            keep_trimmed(db, "c1", NOW - CUT, seen.append, interval_s=0.01, clock=lambda: NOW)
        )
        for _ in range(500):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert seen[0].events == sum(1 for e in EVENTS if not e[5]) and seen[1] == Trimmed(0, 0)

    broken = open_database(str(Path(str(db.engine.url.database)).with_name("broken.db")))
    with broken.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE events")
    errors: list[Trimmed] = []

    async def run_broken() -> None:
        task = asyncio.create_task(keep_trimmed(broken, "c1", 60.0, errors.append, interval_s=0.01))
        await asyncio.sleep(0.1)
        assert not task.done()  # logged, and tried again
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_broken())
    assert errors == []


def test_the_console_trims_with_history_retention(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "console.db"))
    with db.session() as s:
        s.add(Event(at=1.0, cluster="test", kind="weight", node_id="a", message="1970"))
        s.add(FleetAddress(cluster="test", address="10.0.0.9:5060", kind="node", name="a",
                           since=1.0, until=2.0))  # fmt: skip
    settings = ConsoleSettings(cluster="test", watch=False, history_retention=86400)
    app = create_app(settings, db=db, etcd_factory=lambda _eps: FakeEtcd())  # type: ignore[arg-type,return-value]

    def count() -> tuple[int, int]:
        with db.session() as s:
            return len(list(s.scalars(select(Event.id)))), len(
                list(s.scalars(select(FleetAddress.id)))
            )

    with TestClient(app):
        for _ in range(200):
            if count() == (0, 0):
                break
            asyncio.run(asyncio.sleep(0.02))
        metrics = app.state.console.metrics
        trimmed = {
            s.labels["table"]: s.value
            for m in metrics.registry.collect()
            if m.name == "asterfleet_console_history_trimmed"
            for s in m.samples
            if s.name.endswith("_total")
        }
    assert count() == (0, 0)
    assert trimmed == {"events": 1.0, "addresses": 1.0}


@pytest.mark.parametrize(
    ("value", "expected", "code"),
    [("7d", "604800.0", 0), ("soon", "--history-retention: duration 'soon'", 2)],
)
def test_history_retention_option(value: str, expected: str, code: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "asterfleet", "console", "--history-retention", value,
         "--show-config"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    assert expected in (done.stdout if code == 0 else done.stderr)
