"""A call's page names its hosts after the fleet, says which node took the
call and in what state, and shows the fleet's events during the call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asterfleet.db import Database, Event, FleetAddress
from tests.unit.test_console_calls import T0, capture_db, make_client  # noqa: F401
from tests.unit.test_console_web import login

START = T0 / 1_000_000  # c0@x: 10.0.0.1 → lb (10.0.0.2, capture id 7) → 10.0.0.3, 120 ms


def seed(db: Database) -> None:
    with db.session() as s:
        for address, kind, name, since, until in [
            ("10.0.0.3:5060", "node", "ast3", START - 600, None),
            ("10.0.0.4:5060", "node", "ast4", START - 600, START - 300),  # gone since
            ("10.0.0.4:5060", "node", "ast9", START - 300, None),  # its replacement
            ("capture-id:7", "balancer", "lb7", START - 600, None),
        ]:
            s.add(FleetAddress(cluster="test", address=address, kind=kind, name=name,
                               since=since, until=until))  # fmt: skip
        for at, kind, node, actor, message in [
            (START - 600, "joined", "ast3", "agent", "ast3 joined set 1 at sip:10.0.0.3 (active)"),
            (START - 60, "draining", "ast4", "bob@cli", "ast4 is draining (was active)"),
            (START + 0.05, "draining", "ast3", "alice@console", "ast3 is draining (was active)"),
            (START + 0.06, "weight", "ast8", "carol@api", "ast8 weight 1 -> 2"),
            (START + 60, "drained", "ast3", "alice@console", "ast3 is drained (was draining)"),
        ]:
            s.add(Event(at=at, cluster="test", kind=kind, node_id=node, actor=actor,
                        message=message))  # fmt: skip


@pytest.fixture
def client(tmp_path: Path, capture_db: str) -> Iterator[TestClient]:  # noqa: F811
    with make_client(tmp_path, capture_db) as c:
        seed(c.app.state.test_db)  # type: ignore[attr-defined]
        login(c)
        yield c


def test_the_call_page_names_hosts_node_state_and_the_drain_during_the_call(
    client: TestClient,
) -> None:
    html = client.get("/calls/c0@x").text
    ladder = html[html.index("<svg") : html.index("</svg>")]
    for name in ("caller", "lb1", "ast3"):  # lb1: the balancer's own HEP capture name
        assert f">{name}</text>" in ladder
    assert 'href="/fleet/nodes/ast3"' in html
    state = html[html.index('id="node-state"') :][:400]
    assert "active" in state and "draining" not in state  # the drain came after the INVITE
    # The drain is drawn across the ladder between the INVITE and the BYE ...
    assert ladder.count('<g class="note"') == 1
    note = ladder.index("ast3 is draining (was active) (by alice@console)")
    assert ladder.index(">INVITE<") < note < ladder.index(">BYE<")
    # ... and every fleet event during the call is listed, the call's own highlighted.
    events = html[html.index('id="fleet-events"') :]
    assert 'class="mine" data-kind="draining"' in events
    assert 'class="muted" data-kind="weight"' in events
    assert "is drained" not in events  # after the call


def test_the_call_api_gives_the_fleet_around_the_call(client: TestClient) -> None:
    body = client.get("/api/v1/calls/c1@x").json()["fleet"]  # c1@x went to 10.0.0.4
    assert body["node_name"] == "ast9"  # the holder of the address at the call's time
    assert body["node_state"] is None  # ast9 has no recorded events
    assert body["names"]["10.0.0.4:5060"] == "ast9"
    assert body["events"] == []
    c0 = client.get("/api/v1/calls/c0@x").json()["fleet"]
    assert c0["node_state"] == {
        "state": "active", "since": START - 600, "by": "agent", "event": "joined",
    }  # fmt: skip
    assert [e["kind"] for e in c0["events"]] == ["draining", "weight"]


def test_a_balancer_known_only_by_its_capture_id_is_named(tmp_path: Path) -> None:
    """Kamailio sends no capture name: its capture id names the balancer."""
    from asterfleet.capture.store import Store
    from tests.unit.test_console_calls import call

    path = str(tmp_path / "capture.db")
    store = Store(path)
    try:
        store.insert_rows(call("k1@x", T0, node=""))  # capture host: "7"
    finally:
        store.close()
    with make_client(tmp_path, path) as c:
        seed(c.app.state.test_db)  # type: ignore[attr-defined]
        login(c)
        names = c.get("/api/v1/calls/k1@x").json()["fleet"]["names"]
    assert names == {"10.0.0.1:5060": "caller", "10.0.0.2:5060": "lb7", "10.0.0.3:5060": "ast3"}
