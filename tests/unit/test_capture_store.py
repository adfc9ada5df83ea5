"""The SQLite store, search, call summaries and retention."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from asterfleet.capture.collector import packet_to_row
from asterfleet.capture.pager import page_calls
from asterfleet.capture.search import (
    MessageQuery,
    call_messages,
    parse_time,
    search_messages,
)
from asterfleet.capture.store import Store, parse_duration, parse_size
from asterfleet.errors import UsageError
from tests.unit.test_hep_samples import INVITE, OK, hep


def sip(start: str, call_id: str, cseq: str, frm: str = "alice", to: str = "100") -> bytes:
    return (
        f"{start}\r\nFrom: <sip:{frm}@a>;tag=1\r\nTo: <sip:{to}@b>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq}\r\n\r\n"
    ).encode()


def flow(call_id: str, t0: int, backend: str = "10.0.0.3", final: str = "200 OK") -> list[bytes]:
    """Caller -> balancer -> backend and back, as Kamailio captures it."""
    lb, caller = "10.0.0.2", "10.0.0.1"
    steps = [
        ("INVITE sip:100@b SIP/2.0", "1 INVITE", caller, lb),
        ("INVITE sip:100@b SIP/2.0", "1 INVITE", lb, backend),
        (f"SIP/2.0 {final}", "1 INVITE", backend, lb),
        (f"SIP/2.0 {final}", "1 INVITE", lb, caller),
        ("ACK sip:100@b SIP/2.0", "1 ACK", caller, lb),
        ("BYE sip:100@b SIP/2.0", "2 BYE", caller, lb),
        ("SIP/2.0 200 OK", "2 BYE", lb, caller),
    ]
    out = []
    for i, (start, cseq, src, dst) in enumerate(steps):
        us = t0 + i * 100_000
        out.append(
            hep(
                sip(start, call_id, cseq),
                src_ip=src,
                dst_ip=dst,
                ts_sec=us // 1_000_000,
                ts_usec=us % 1_000_000,
            )
        )
    return out


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "capture.db"))
    yield s  # type: ignore[misc]
    s.close()


def load(store: Store, packets: list[bytes]) -> None:
    store.insert_rows([packet_to_row(p, None, 0) for p in packets])


def test_rows_keep_every_indexed_field(store: Store) -> None:
    load(store, [hep(INVITE, correlation_id="c1", ip_proto=6), hep(OK)])
    first, second = sorted(search_messages(store, MessageQuery()), key=lambda m: m.id)
    assert first.src == "10.0.0.1:5060" and first.dst == "10.0.0.2:5060"
    assert (first.transport, first.capture_id, first.capture_host) == ("tcp", 7, "lb1")
    assert (first.method, first.status, first.cseq) == ("INVITE", None, "1 INVITE")
    assert (first.from_user, first.to_user, first.user_agent) == ("alice", "100", "softphone 1.0")
    assert first.correlation_id == "c1" and first.raw == INVITE
    assert first.ts_us == 1_700_000_000_123_456
    assert (second.status, second.user_agent) == (200, "asterisk")


def test_calls_are_grouped_with_final_status_and_backend(store: Store) -> None:
    t0 = 1_700_000_000_000_000
    load(store, flow("ok-call", t0) + flow("busy-call", t0 + 10_000_000, "10.0.0.4", "486 Busy"))
    calls = {c.call_id: c for c in page_calls(store, MessageQuery()).calls}
    ok, busy = calls["ok-call"], calls["busy-call"]
    assert (ok.final_status, ok.node, ok.messages, ok.method) == (
        200,
        "10.0.0.3:5060",
        7,
        "INVITE",
    )
    assert ok.duration_s == pytest.approx(0.6)
    assert (busy.final_status, busy.node) == (486, "10.0.0.4:5060")
    assert [c.call_id for c in page_calls(store, MessageQuery()).calls] == ["busy-call", "ok-call"]
    assert ok.as_dict()["start"].startswith("2023-11-14T22:13:20")


@pytest.mark.parametrize(
    ("query", "calls"),
    [
        (MessageQuery(call_id="ok-call"), {"ok-call"}),
        (MessageQuery(from_user="ali"), {"ok-call"}),
        (MessageQuery(from_user="bo"), {"bob-call"}),
        (MessageQuery(to_user="1"), {"ok-call", "bob-call"}),
        (MessageQuery(from_user="%"), set()),
        (MessageQuery(status=486), {"bob-call"}),
        (MessageQuery(method="invite"), {"ok-call", "bob-call"}),
        (MessageQuery(since_us=1_700_000_005_000_000), {"bob-call"}),
        (MessageQuery(until_us=1_700_000_005_000_000), {"ok-call"}),
        (MessageQuery(capture_host="lb1"), {"ok-call", "bob-call"}),
        (MessageQuery(capture_host="7"), {"ok-call", "bob-call"}),
        (MessageQuery(capture_host="other"), set()),
    ],
)
def test_search_filters(store: Store, query: MessageQuery, calls: set[str]) -> None:
    t0 = 1_700_000_000_000_000
    bob = [
        hep(
            sip("INVITE sip:100@b SIP/2.0", "bob-call", "1 INVITE", frm="bob"),
            ts_sec=1_700_000_010,
        ),
        hep(sip("SIP/2.0 486 Busy", "bob-call", "1 INVITE", frm="bob"), ts_sec=1_700_000_011),
    ]
    load(store, flow("ok-call", t0) + bob)
    assert {c.call_id for c in page_calls(store, query).calls} == calls


def test_retention_by_age_and_size(store: Store) -> None:
    now = int(time.time())
    old = [
        hep(sip("OPTIONS sip:x SIP/2.0", f"old-{i}", "1 OPTIONS"), ts_sec=now - 3600)
        for i in range(50)
    ]
    new = [
        hep(sip("OPTIONS sip:x SIP/2.0", f"new-{i}", "1 OPTIONS"), ts_sec=now) for i in range(50)
    ]
    load(store, old + new)
    assert store.apply_retention(max_age_s=600, max_bytes=None) == 50
    assert {m.call_id[:3] for m in search_messages(store, MessageQuery(limit=1000))} == {"new"}
    # Size: fill well past a small cap, then trim back under it, oldest first.
    big = [
        hep(sip("OPTIONS sip:x SIP/2.0", f"big-{i}", "1 OPTIONS") + b"x" * 2000, ts_sec=now + i)
        for i in range(400)
    ]
    load(store, big)
    cap = store.size_bytes() // 2
    assert store.apply_retention(max_age_s=None, max_bytes=cap) > 0
    assert store.size_bytes() <= cap
    left = search_messages(store, MessageQuery(limit=10_000))
    assert "big-399" in {m.call_id for m in left} and "new-0" not in {m.call_id for m in left}
    assert call_messages(store, "big-399")[0].raw.endswith(b"x" * 2000)


@pytest.mark.parametrize(
    ("text", "value"), [("10GB", 10 << 30), ("512M", 512 << 20), ("1.5k", 1536), ("100", 100)]
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("7d", 604800), ("12h", 43200), ("90", 90)])
def test_parse_duration(text: str, value: float) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("bad", ["", "ten", "-1d", "5q", "inf", "nan", "1e400"])
def test_bad_sizes_and_durations_name_the_input(bad: str) -> None:
    with pytest.raises(UsageError, match=repr(bad).strip("'") or "size"):
        parse_size(bad)
    with pytest.raises(UsageError):
        parse_duration(bad)


def test_parse_time() -> None:
    now = 1_700_000_000_000_000
    assert parse_time("15m", now) == now - 900_000_000
    assert parse_time("2023-11-14T22:13:20", now) == now
    with pytest.raises(UsageError, match="ISO 8601"):
        parse_time("yesterday", now)


def test_a_database_from_before_the_capture_host_rename_is_read(tmp_path: Path) -> None:
    """Older collectors named the capture host's column ``node``; opening
    such a database renames it and keeps every row."""
    import sqlite3

    db = tmp_path / "old.db"
    Store(str(db)).close()
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE sip_messages RENAME COLUMN capture_host TO node")
    old = Store(str(db), create=False)
    try:
        old.insert_rows([packet_to_row(hep(INVITE), None, 0)])
        (msg,) = search_messages(old, MessageQuery())
        assert msg.capture_host == "lb1"
    finally:
        old.close()
