"""The Calls area over HTTP (TestClient) on a temporary SQLite capture database
filled through the store's own write path (HEP packet → row → insert)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asterfleet.auth import add_user, create_token
from asterfleet.capture.collector import packet_to_row
from asterfleet.capture.hep import HepPacket, encode_hep
from asterfleet.capture.pager import conditions, decode_cursor, page_calls, walk_query
from asterfleet.capture.search import MessageQuery
from asterfleet.capture.store import Row, Store
from asterfleet.console import ConsoleSettings, create_app
from asterfleet.db import open_database
from asterfleet.errors import UsageError
from tests.unit.console_fakes import FakeEtcd
from tests.unit.test_console_web import PASSWORD, login

T0 = 1_700_000_000_000_000  # µs
CALLER, LB = "10.0.0.1", "10.0.0.2"


def call(
    call_id: str,
    t0: int,
    frm: str = "alice",
    to: str = "100",
    backend: str = "10.0.0.3",
    final: str = "200 OK",
    node: str = "lb1",
) -> list[Row]:
    """One call as the balancer captures it: caller → LB → backend and back."""
    steps = [
        ("INVITE sip:{to}@b SIP/2.0", "1 INVITE", CALLER, LB),
        ("INVITE sip:{to}@b SIP/2.0", "1 INVITE", LB, backend),
        (f"SIP/2.0 {final}", "1 INVITE", backend, LB),
        (f"SIP/2.0 {final}", "1 INVITE", LB, CALLER),
    ]
    if final.startswith("200"):
        steps += [
            ("ACK sip:{to}@b SIP/2.0", "1 ACK", CALLER, LB),
            ("BYE sip:{to}@b SIP/2.0", "2 BYE", CALLER, LB),
            ("SIP/2.0 200 OK", "2 BYE", LB, CALLER),
        ]
    rows = []
    for i, (start, cseq, src, dst) in enumerate(steps):
        sip = (
            f"{start.format(to=to)}\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bK{i}\r\n"
            f"From: <sip:{frm}@a>;tag=1\r\nTo: <sip:{to}@b>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        us = t0 + i * 20_000
        pkt = HepPacket(
            payload=sip, src_ip=src, dst_ip=dst, src_port=5060, dst_port=5060,
            ts_sec=us // 1_000_000, ts_usec=us % 1_000_000, capture_id=7, capture_host=node,
        )  # fmt: skip
        rows.append(packet_to_row(encode_hep(pkt), None, us))
    return rows


CALLS = [
    # call_id, start offset (s), from, to, backend, final, node
    ("c0@x", 0, "alice", "100", "10.0.0.3", "200 OK", "lb1"),
    ("c1@x", 10, "alex", "200", "10.0.0.4", "486 Busy Here", "lb1"),
    ("c2@x", 20, "bob", "100", "10.0.0.3", "200 OK", "lb2"),
    ("c3/odd id@x", 30, "alice", "1001", "10.0.0.4", "503 Service Unavailable", "lb2"),
    ("c4@x", 40, "carol", "300", "10.0.0.3", "200 OK", "lb1"),
]


@pytest.fixture
def capture_db(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "capture.db")
    store = Store(path)
    try:
        for cid, offset, frm, to, backend, final, node in CALLS:
            store.insert_rows(call(cid, T0 + offset * 1_000_000, frm, to, backend, final, node))
        yield path
    finally:
        store.close()


def make_client(tmp_path: Path, capture_db: str | None) -> TestClient:
    db = open_database(str(tmp_path / "console.db"))
    add_user(db, "alice", PASSWORD)
    settings = ConsoleSettings(cluster="test", watch=False, capture_db=capture_db)
    app = create_app(settings, db=db, etcd_factory=lambda _eps: FakeEtcd())  # type: ignore[arg-type,return-value]
    app.state.test_db = db
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def client(tmp_path: Path, capture_db: str) -> Iterator[TestClient]:
    with make_client(tmp_path, capture_db) as c:
        login(c)
        yield c


def ids(client: TestClient, **params: object) -> list[str]:
    r = client.get("/api/v1/calls", params=params)
    assert r.status_code == 200, r.text
    return [c["call_id"] for c in r.json()["calls"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["c4@x", "c3/odd id@x", "c2@x", "c1@x", "c0@x"]),
        ({"from_user": "al"}, ["c3/odd id@x", "c1@x", "c0@x"]),
        ({"from_user": "alic"}, ["c3/odd id@x", "c0@x"]),
        ({"to_user": "100"}, ["c3/odd id@x", "c2@x", "c0@x"]),
        ({"call_id": "c2@x"}, ["c2@x"]),
        ({"method": "486"}, ["c1@x"]),
        ({"status": 503}, ["c3/odd id@x"]),
        ({"method": "bye"}, ["c4@x", "c2@x", "c0@x"]),
        ({"capture_host": "lb2"}, ["c3/odd id@x", "c2@x"]),
        ({"capture_host": "7"}, ["c4@x", "c3/odd id@x", "c2@x", "c1@x", "c0@x"]),
        ({"since": "2023-11-14T22:13:35", "until": "2023-11-14T22:13:55"}, ["c3/odd id@x", "c2@x"]),
        ({"from_user": "al", "to_user": "2"}, ["c1@x"]),
        ({"from_user": "nobody"}, []),
    ],
)
def test_search_filters(client: TestClient, params: dict[str, object], expected: list[str]) -> None:
    assert ids(client, **params) == expected


def test_a_call_summary_names_the_node_and_final_status(client: TestClient) -> None:
    calls = {c["call_id"]: c for c in client.get("/api/v1/calls").json()["calls"]}
    busy = calls["c1@x"]
    assert (busy["final_status"], busy["node"], busy["from_user"]) == (
        486,
        "10.0.0.4:5060",
        "alex",
    )
    assert calls["c0@x"]["duration_s"] == pytest.approx(0.12)


def test_pages_walk_every_call_once_newest_first(client: TestClient) -> None:
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        body = client.get("/api/v1/calls", params={"limit": 2, "cursor": cursor}).json()
        seen += [c["call_id"] for c in body["calls"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["c4@x", "c3/odd id@x", "c2@x", "c1@x", "c0@x"]


def test_bad_search_input_is_named(client: TestClient) -> None:
    r = client.get("/api/v1/calls", params={"since": "yesterday"})
    assert r.status_code == 400 and "time 'yesterday'" in r.json()["detail"]
    assert client.get("/api/v1/calls", params={"cursor": "x"}).status_code == 400
    page = client.get("/calls", params={"since": "yesterday"})
    assert page.status_code == 200 and "time &#39;yesterday&#39;" in page.text


def test_overlapping_calls_page_by_their_newest_match(tmp_path: Path) -> None:
    """Interleaved calls (each one's messages span another's) never repeat or vanish."""
    store = Store(str(tmp_path / "c.db"))
    for i in range(30):
        store.insert_rows(call(f"k{i}", T0 + i * 7_000))  # 7 ms apart, each lasts 120 ms
    seen: list[str] = []
    cursor = None
    for _ in range(40):
        page = page_calls(store, MessageQuery(), limit=4, cursor=cursor, scan_limit=10)
        seen += [c.call_id for c in page.calls]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"k{i}" for i in reversed(range(30))]
    assert decode_cursor("") is None
    with pytest.raises(UsageError):
        page_calls(store, MessageQuery(), limit=0)
    store.close()


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (MessageQuery(), "ix_sip_messages_opening_ts"),
        (MessageQuery(since_us=T0), "ix_sip_messages_opening_ts"),
        (MessageQuery(call_id="c1@x"), "ix_sip_messages_call_id"),
        (MessageQuery(from_user="al"), "ix_sip_messages_from_user"),
        (MessageQuery(to_user="10"), "ix_sip_messages_to_user"),
    ],
)
def test_the_walk_uses_an_index(capture_db: str, query: MessageQuery, index: str) -> None:
    store = Store(capture_db)
    try:
        sql = walk_query(conditions(query, "sqlite"), (T0 + 10**9, 10**6), 512)
        compiled = sql.compile(store.engine, compile_kwargs={"literal_binds": True})
        with store.engine.connect() as conn:
            plan = " ".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    finally:
        store.close()
    assert index in plan, plan
    assert "SCAN sip_messages " not in plan + " ", plan  # never a full table scan


def test_a_call_page_has_its_ladder_and_every_message(client: TestClient) -> None:
    r = client.get("/calls/c3%2Fodd%20id%40x")
    assert r.status_code == 200
    html = r.text
    assert html.count('<g class="msg"') == 4 and "<svg" in html
    assert html.count('<details id="msg-') == 4
    assert "SIP/2.0 503 Service Unavailable" in html
    assert "<b>caller</b> 10.0.0.1:5060 → <b>lb2</b> 10.0.0.2:5060" in html
    assert "2023-11-14 22:13:50.000000" in html  # µs
    assert 'href="/calls/c3%2Fodd%20id%40x/pcap"' in html
    assert client.get("/calls/nope").status_code == 404


def test_the_call_api_lists_messages_in_order(client: TestClient) -> None:
    body = client.get("/api/v1/calls/c0@x").json()
    assert [m["method"] or m["status"] for m in body["messages"]] == [
        "INVITE", "INVITE", 200, 200, "ACK", "BYE", 200,
    ]  # fmt: skip
    assert body["messages"][0]["text"].startswith("INVITE sip:100@b SIP/2.0\r\n")
    assert body["call"]["final_status"] == 200
    assert client.get("/api/v1/calls/nope").status_code == 404


def test_pcap_download_is_named_and_typed(client: TestClient) -> None:
    r = client.get("/calls/c0@x/pcap")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.tcpdump.pcap"
    assert 'filename="call-c0_x.pcap"' in r.headers["content-disposition"]
    assert r.content[:4] == b"\xd4\xc3\xb2\xa1"


def test_calls_need_a_login_or_a_token(tmp_path: Path, capture_db: str) -> None:
    with make_client(tmp_path, capture_db) as c:
        for path in ("/calls", "/calls/c0@x", "/calls/c0@x/pcap"):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert c.get("/api/v1/calls").status_code == 401
        assert c.get("/api/v1/calls/c0@x").status_code == 401
        token = create_token(c.app.state.test_db, "alice", "ci", ("read",)).token  # type: ignore[attr-defined]
        r = c.get("/api/v1/calls", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and len(r.json()["calls"]) == 5


def test_the_openapi_document_lists_the_calls_api(client: TestClient) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]
    assert "/api/v1/calls" in paths and "/api/v1/calls/{call_id}" in paths
    assert not any(p.startswith("/calls") for p in paths)


def test_without_a_capture_database_the_page_says_how_to_start_one(tmp_path: Path) -> None:
    with make_client(tmp_path, None) as c:
        login(c)
        r = c.get("/calls")
        assert r.status_code == 200 and "capture not configured" in r.text
        assert "--capture-db URL" in r.text
        r = c.get("/api/v1/calls")
        assert r.status_code == 503 and "capture not configured" in r.json()["detail"]


def test_the_search_page_lists_calls_and_pages_on(client: TestClient) -> None:
    r = client.get("/calls", params={"from_user": "al", "limit": 2})
    assert r.status_code == 200
    assert r.text.count('<td class="id callid">') == 2
    assert 'href="/calls/c3%2Fodd%20id%40x"' in r.text
    assert 'id="older"' in r.text
    link = r.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    r2 = client.get(link)
    assert r2.text.count('<td class="id callid">') == 1 and "c0@x" in r2.text
