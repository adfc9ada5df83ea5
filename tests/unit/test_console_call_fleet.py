"""A call's page names its hosts after the fleet, says which node took the
call and in what state, and shows the fleet's events during the call; the
Calls list filters by node, balancer and duration, and keeps saved searches."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asterfleet.db import Database, Event, FleetAddress
from tests.unit.test_console_calls import T0, capture_db, make_client  # noqa: F401
from tests.unit.test_console_web import PASSWORD, login

START = T0 / 1_000_000  # c0@x: 10.0.0.1 → lb (10.0.0.2, capture id 7) → 10.0.0.3, 120 ms


def seed(db: Database, at: float = START) -> None:
    """The fleet's address history and events around ``at`` (c0@x's start)."""
    START = at
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


def ids(client: TestClient, **params: object) -> list[str]:
    r = client.get("/api/v1/calls", params=params)
    assert r.status_code == 200, r.text
    return [c["call_id"] for c in r.json()["calls"]]


@pytest.mark.parametrize(
    ("params", "expected", "why"),
    [
        ({"node": "ast3"}, ["c4@x", "c2@x", "c0@x"], "the calls sent to 10.0.0.3"),
        ({"node": "ast9"}, ["c3/odd id@x", "c1@x"], "10.0.0.4, held by ast9 now"),
        ({"node": "ast4"}, [], "10.0.0.4 was ast9's by the time of these calls"),
        ({"balancer": "lb7"}, ["c4@x", "c3/odd id@x", "c2@x", "c1@x", "c0@x"], "capture id 7"),
        ({"node": "ast3", "balancer": "lb7"}, ["c4@x", "c2@x", "c0@x"], "both must match"),
        ({"min_duration": "0.1"}, ["c4@x", "c2@x", "c0@x"], "answered calls last 120 ms"),
        ({"max_duration": "0.1"}, ["c3/odd id@x", "c1@x"], "failed: 60 ms"),
        ({"min_duration": "0.05", "max_duration": "0.07"}, ["c3/odd id@x", "c1@x"], "a range"),
        ({"min_duration": "1m"}, [], "none lasts a minute"),
        ({"text": "Via: SIP/2.0/UDP 10.0.0.4"}, ["c3/odd id@x", "c1@x"], "text in a header"),
    ],
)
def test_calls_filter_by_node_balancer_duration_and_header_text(
    client: TestClient, params: dict[str, object], expected: list[str], why: str
) -> None:
    assert ids(client, **params) == expected, why


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"node": "nobody"}, "node 'nobody': the fleet has had no node of that name"),
        ({"balancer": "ast3"}, "balancer 'ast3': the fleet has had no balancer of that name"),
        ({"min_duration": "long"}, "min duration 'long': give seconds or a number with s, m or h"),
        ({"min_duration": "2m", "max_duration": "1m"}, "the minimum is above the maximum"),
    ],
)
def test_bad_filters_are_named(client: TestClient, params: dict[str, str], message: str) -> None:
    r = client.get("/api/v1/calls", params=params)
    assert r.status_code == 400 and message in r.json()["detail"], r.text
    page = client.get("/calls", params=params)
    assert page.status_code == 200 and message in html.unescape(page.text)


def test_a_saved_search_is_kept_per_user_and_opens_the_same_list(
    tmp_path: Path,
    capture_db: str,  # noqa: F811
) -> None:
    with make_client(tmp_path, capture_db) as c:
        seed(c.app.state.test_db)  # type: ignore[attr-defined]
        from asterfleet.auth import add_user

        add_user(c.app.state.test_db, "bob", PASSWORD)  # type: ignore[attr-defined]
        csrf = login(c)
        page = c.get("/calls", params={"node": "ast3", "min_duration": "0.1", "junk": "x"})
        query = re.search(r'name="query" value="([^"]*)"', page.text)
        assert query and html.unescape(query.group(1)) == "node=ast3&min_duration=0.1"
        r = c.post(
            "/calls/saved",
            data={"name": "long on ast3", "query": "node=ast3&min_duration=0.1&evil=1",
                  "csrf_token": csrf},
        )  # fmt: skip
        assert r.status_code == 303
        assert r.headers["location"] == "/calls?node=ast3&min_duration=0.1"
        listing = c.get("/calls").text
        link = re.search(r'<a href="([^"]+)" data-saved-id="(\d+)">long on ast3</a>', listing)
        assert link, listing
        opened = c.get(html.unescape(link.group(1))).text
        assert [m for m in re.findall(r'data-call-id="([^"]+)"', opened)] == [
            "c4@x", "c2@x", "c0@x",
        ]  # fmt: skip
        assert c.post("/calls/saved", data={"name": "x", "query": ""}).status_code == 403
        # Another user neither sees nor deletes it.
        c.cookies.clear()
        bob_csrf = login(c, "bob")
        assert "long on ast3" not in c.get("/calls").text
        c.post("/calls/saved/delete", data={"saved_id": link.group(2), "csrf_token": bob_csrf})
        c.cookies.clear()
        csrf = login(c)
        assert "long on ast3" in c.get("/calls").text
        c.post("/calls/saved/delete", data={"saved_id": link.group(2), "csrf_token": csrf})
        assert "long on ast3" not in c.get("/calls").text
        bad = c.post("/calls/saved", data={"name": " ", "query": "", "csrf_token": csrf})
        assert "search name" in c.get(bad.headers["location"]).text


def test_a_reused_address_counts_for_the_box_that_held_it_at_the_time(
    tmp_path: Path,
    capture_db: str,  # noqa: F811
) -> None:
    """ast4 held 10.0.0.4 until ast9 replaced it: a call sent there before
    is ast4's, the calls after are ast9's, as the Calls list names them."""
    from asterfleet.capture.store import Store
    from tests.unit.test_console_calls import call

    store = Store(capture_db)
    try:
        store.insert_rows(call("old@x", T0 - 400_000_000, backend="10.0.0.4"))
    finally:
        store.close()
    with make_client(tmp_path, capture_db) as c:
        seed(c.app.state.test_db)  # type: ignore[attr-defined]
        login(c)
        assert ids(c, node="ast4") == ["old@x"]
        assert ids(c, node="ast9") == ["c3/odd id@x", "c1@x"]
        page = c.get("/calls", params={"node": "ast4"}).text
        named = re.findall(r'<tr data-call-id="([^"]+)".*?<td class="id node"[^>]*>(.*?)</td>',
                           page, re.S)  # fmt: skip
        assert named == [("old@x", "<b>ast4</b>")], named


def test_a_node_that_left_still_lists_its_recent_calls(tmp_path: Path) -> None:
    """ast3 is no longer registered (the fake etcd has no node), but its
    address is on record: its page lists the call it took a minute ago."""
    import time

    from asterfleet.capture.store import Store
    from tests.unit.test_console_calls import call

    now = time.time()
    path = str(tmp_path / "recent.db")
    store = Store(path)
    try:
        store.insert_rows(call("recent@x", int((now - 60) * 1_000_000)))
    finally:
        store.close()
    with make_client(tmp_path, path) as c:
        seed(c.app.state.test_db, at=now - 60)  # type: ignore[attr-defined]
        login(c)
        page = c.get("/fleet/nodes/ast3")
        assert page.status_code == 200
        assert "is not registered in the fleet now" in page.text
        assert 'href="/calls/recent%40x"' in page.text, page.text
        nobody = c.get("/fleet/nodes/ast77").text
        assert "no address on record for it" in nobody


def test_the_calls_list_names_the_node_of_each_call(client: TestClient) -> None:
    page = client.get("/calls").text
    nodes = dict(re.findall(r'<tr data-call-id="([^"]+)".*?<td class="id node"[^>]*>(.*?)</td>',
                            page, re.S))  # fmt: skip
    assert nodes["c0@x"] == "<b>ast3</b>" and nodes["c1@x"] == "<b>ast9</b>"


def test_capture_search_filters_by_duration_on_the_same_path(capture_db: str) -> None:  # noqa: F811
    import json
    import subprocess
    import sys

    def search(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "asterfleet", "capture", "search", "--db", capture_db, *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    long = search("--min-duration", "0.1", "--json")
    assert long.returncode == 0, long.stderr
    assert [c["call_id"] for c in json.loads(long.stdout)] == ["c4@x", "c2@x", "c0@x"]
    bad = search("--max-duration", "soon")
    assert bad.returncode == 2 and "--max-duration 'soon'" in bad.stderr


def test_capture_search_filters_by_node_and_balancer_from_the_consoles_history(
    tmp_path: Path,
    capture_db: str,  # noqa: F811
) -> None:
    """The CLI resolves names through the console's address history (read
    only) and pages through the same search as the Calls page: same answers."""
    import json
    import sqlite3
    import subprocess
    import sys

    from asterfleet.db import open_database

    console_db = tmp_path / "console.db"
    db = open_database(str(console_db))
    seed(db)
    db.close()

    def search(*args: str, db: str = str(console_db)) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "asterfleet", "capture", "search", "--db", capture_db,
             "--console-db", db, "--cluster", "test", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    for args, expected in [
        (("--node", "ast3"), ["c4@x", "c2@x", "c0@x"]),
        (("--node", "ast4"), []),  # 10.0.0.4 was ast9's by then
        (("--node", "ast9"), ["c3/odd id@x", "c1@x"]),
        (("--balancer", "lb7"), ["c4@x", "c3/odd id@x", "c2@x", "c1@x", "c0@x"]),
        (("--node", "ast3", "--balancer", "lb7", "--min-duration", "0.1"),
         ["c4@x", "c2@x", "c0@x"]),
    ]:  # fmt: skip
        done = search(*args, "--json")
        assert done.returncode == 0, done.stderr
        assert [c["call_id"] for c in json.loads(done.stdout)] == expected, args
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    for args, db_arg, message in [
        (("--node", "nobody"), str(console_db), "node 'nobody': the fleet has had no node"),
        (("--balancer", "ast3"), str(console_db), "balancer 'ast3': the fleet has had no"),
        (("--node", "ast3"), str(tmp_path / "none.db"), "console database"),
        (("--node", "ast3"), str(empty), "cannot read the fleet's address history"),
        (("--node", "ast3", "--messages"), str(console_db), "leave out --messages"),
    ]:
        bad = search(*args, db=db_arg)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], bad.stderr
