"""The Calls list tells the truth: by start, in-progress calls marked,
OPTIONS probes hidden unless asked for, filters on the whole call, and a
live tail of new calls. One search path for the console, the API and the CLI."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.capture.collector import packet_to_row
from asterfleet.capture.hep import HepPacket, encode_hep
from asterfleet.capture.pager import page_calls
from asterfleet.capture.search import MessageQuery
from asterfleet.capture.store import Row, Store
from asterfleet.capture.tail import TailStep, tail_calls, tail_start

T0 = 1_700_000_000_000_000
A, LB, N = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def rows(call_id: str, steps: list[tuple[float, str, str, str, str]], extra: str = "") -> list[Row]:
    """``(seconds after T0, start line, CSeq, src, dst)`` per message; To gets
    a tag once answered, as on the wire."""
    out = []
    answered = False
    for i, (at, start, cseq, src, dst) in enumerate(steps):
        if start.startswith("SIP/2.0 2"):
            answered = True
        tag = ";tag=n1" if answered and not start.startswith(("INVITE", "OPTIONS")) else ""
        sip = (
            f"{start}\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bK{call_id}{i}\r\n"
            f"From: <sip:alice@a>;tag=a1\r\nTo: <sip:100@b>{tag}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq}\r\n{extra}Content-Length: 0\r\n\r\n"
        ).encode()
        us = T0 + int(at * 1_000_000)
        pkt = HepPacket(
            payload=sip, src_ip=src, dst_ip=dst, src_port=5060, dst_port=5060,
            ts_sec=us // 1_000_000, ts_usec=us % 1_000_000, capture_id=1, capture_host="lb1",
        )  # fmt: skip
        out.append(packet_to_row(encode_hep(pkt), None, us))
    return out


def answered(call_id: str, start: float, length: float | None, extra: str = "") -> list[Row]:
    steps = [
        (start, "INVITE sip:100@b SIP/2.0", "1 INVITE", A, LB),
        (start + 0.001, "INVITE sip:100@b SIP/2.0", "1 INVITE", LB, N),
        (start + 0.5, "SIP/2.0 200 OK", "1 INVITE", N, LB),
        (start + 0.501, "SIP/2.0 200 OK", "1 INVITE", LB, A),
        (start + 0.51, "ACK sip:100@b SIP/2.0", "1 ACK", A, LB),
    ]
    if length is not None:
        steps += [
            (start + length, "BYE sip:100@b SIP/2.0", "2 BYE", A, LB),
            (start + length + 0.001, "SIP/2.0 200 OK", "2 BYE", LB, A),
        ]
    return rows(call_id, steps, extra)


def failed(call_id: str, start: float, status: str = "486 Busy Here") -> list[Row]:
    return rows(
        call_id,
        [
            (start, "INVITE sip:100@b SIP/2.0", "1 INVITE", A, LB),
            (start + 0.2, f"SIP/2.0 {status}", "1 INVITE", LB, A),
            (start + 0.21, "ACK sip:100@b SIP/2.0", "1 ACK", A, LB),
        ],
    )


def ringing(call_id: str, start: float) -> list[Row]:
    return rows(
        call_id,
        [
            (start, "INVITE sip:100@b SIP/2.0", "1 INVITE", A, LB),
            (start + 0.1, "SIP/2.0 180 Ringing", "1 INVITE", LB, A),
        ],
    )


def probe(call_id: str, start: float) -> list[Row]:
    return rows(
        call_id,
        [
            (start, "OPTIONS sip:n SIP/2.0", "10 OPTIONS", LB, N),
            (start + 0.001, "SIP/2.0 200 OK", "10 OPTIONS", N, LB),
        ],
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "c.db"))
    # long-call started first and ended last; short-call started later.
    s.insert_rows(answered("long-call", 0, 120, extra="X-Tenant: acme\r\n"))
    s.insert_rows(answered("short-call", 10, 1))
    s.insert_rows(failed("busy-call", 20))
    s.insert_rows(answered("live-call", 30, None))
    s.insert_rows(ringing("ringing-call", 40))
    for i in range(5):
        s.insert_rows(probe(f"probe-{i}", 5 + i * 10))
    try:
        yield s
    finally:
        s.close()


def ids(store: Store, q: MessageQuery = MessageQuery(), limit: int = 50) -> list[str]:
    return [c.call_id for c in page_calls(store, q, limit).calls]


def test_calls_are_listed_by_start_newest_first_without_probes(store: Store) -> None:
    # The long call's BYE is the newest message of all; it still sorts by its start.
    assert ids(store) == ["ringing-call", "live-call", "busy-call", "short-call", "long-call"]


def test_the_pager_is_stable_and_complete(store: Store) -> None:
    seen, cursor = [], None
    for _ in range(10):
        page = page_calls(store, MessageQuery(options=True), 2, cursor)
        seen += [c.call_id for c in page.calls]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 10
    assert seen[:3] == ["probe-4", "ringing-call", "probe-3"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (MessageQuery(options=True), 10),  # the probes, when asked for
        (MessageQuery(method="OPTIONS"), 5),  # or searched for
        (MessageQuery(call_id="probe-2"), 1),  # or named
    ],
)
def test_options_probes_on_request(store: Store, query: MessageQuery, expected: int) -> None:
    assert len(ids(store, query)) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (MessageQuery(status_class="2xx"), ["live-call", "short-call", "long-call"]),
        (MessageQuery(status_class="4xx"), ["busy-call"]),
        (MessageQuery(status_class="none"), ["ringing-call"]),
        (MessageQuery(status_class="5xx"), []),
        (MessageQuery(text="X-Tenant: acme"), ["long-call"]),
        (MessageQuery(text="100%"), []),  # LIKE wildcards are literal
        (MessageQuery(method="BYE"), ["short-call", "long-call"]),
        (MessageQuery(status=486), ["busy-call"]),
        (MessageQuery(since_us=T0 + 15_000_000), ["ringing-call", "live-call", "busy-call"]),
    ],
)
def test_filters_on_the_whole_call(store: Store, query: MessageQuery, expected: list[str]) -> None:
    assert ids(store, query) == expected


def test_calls_in_progress_are_marked(store: Store) -> None:
    calls = {c.call_id: c for c in page_calls(store, MessageQuery(), 50).calls}
    states = {cid: (c.state, c.in_progress) for cid, c in calls.items()}
    assert states == {
        "ringing-call": ("ringing", True),
        "live-call": ("in progress", True),
        "busy-call": ("failed", False),
        "short-call": ("ended", False),
        "long-call": ("ended", False),
    }
    assert calls["live-call"].final_status == 200


def test_the_live_tail_sends_new_calls_once(store: Store) -> None:
    start = tail_start(store)
    assert tail_calls(store, MessageQuery(), start) == TailStep([], start)
    store.insert_rows(answered("new-call", 50, None))
    store.insert_rows(probe("probe-new", 51))
    step = tail_calls(store, MessageQuery(), start)
    # Two openings (caller→lb, lb→node), one call; the probe stays hidden.
    assert [c.call_id for c in step.calls] == ["new-call"]
    assert int(step.position) > int(start)
    assert tail_calls(store, MessageQuery(), step.position) == TailStep([], step.position)


def test_a_live_tail_from_a_position_it_cannot_read_starts_from_now(store: Store) -> None:
    """SQLite's positions are ids; a PostgreSQL one, or garbage, is not."""
    now = tail_start(store)
    for given in ("1700000000:900:850:", "abc", "-5", "12 ", "", "9" * 20):
        step = tail_calls(store, MessageQuery(), given)
        assert step == TailStep([], now, step.restarted)
        assert "not one this console gave" in step.restarted
    # An id above any stored: another store's, or this one emptied since.
    step = tail_calls(store, MessageQuery(), str(int(now) + 1000))
    assert step == TailStep([], now, step.restarted) and "ahead of" in step.restarted


def test_a_database_from_before_openings_were_flagged_is_listed(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    s = Store(str(db))
    s.insert_rows(answered("old-call", 0, 5))
    s.insert_rows(probe("old-probe", 1))
    s.close()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP INDEX ix_sip_messages_opening_ts")
        conn.execute("ALTER TABLE sip_messages DROP COLUMN opens_call")
    old = Store(str(db), create=False)
    try:
        assert ids(old) == ["old-call"]
        assert ids(old, MessageQuery(options=True)) == ["old-probe", "old-call"]
    finally:
        old.close()


def test_a_call_id_lookup_answers_what_the_walk_answers(tmp_path: Path) -> None:
    """A search by Call-ID alone takes a shortcut (the call's messages in one
    query): same summary as the list shows, and a call whose opening was
    never captured is not listed, as in the list."""
    store = Store(str(tmp_path / "c.db"))
    try:
        headless = [r for r in answered("headless", 3.0, 5.0) if not r[-1]]
        store.insert_rows([*answered("a1", 0.0, 5.0), *failed("f1", 1.0), *headless])
        listed = {c.call_id: c for c in page_calls(store, MessageQuery(), 50).calls}
        for call_id in ("a1", "f1"):
            page = page_calls(store, MessageQuery(call_id=call_id), 50)
            assert page.calls == [listed[call_id]] and page.next_cursor is None
        assert "headless" not in listed
        assert page_calls(store, MessageQuery(call_id="headless"), 50).calls == []
        # With another filter the walk runs: still the same answers.
        walked = page_calls(store, MessageQuery(call_id="f1", status_class="4xx"), 50)
        assert walked.calls == [listed["f1"]]
    finally:
        store.close()


DAY = 86_400_000_000


@pytest.mark.parametrize(
    ("q", "cursor", "partitioned", "floor"),
    [
        # SQLite (no partitions): one walk.
        (MessageQuery(), (10 * DAY + 5, 1), False, None),
        # From the cursor's day, or the day before when less than 6 h of it is above.
        (MessageQuery(), (10 * DAY + DAY // 2, 1), True, 10 * DAY),
        (MessageQuery(), (10 * DAY + 3_600_000_000, 1), True, 9 * DAY),
        # The end of a time range is the top; a range within the slice needs none.
        (MessageQuery(until_us=4 * DAY + DAY // 2), (10 * DAY, 1), True, 4 * DAY),
        (MessageQuery(since_us=10 * DAY + 1, until_us=10 * DAY + DAY // 2), None, True, None),
    ],
)
def test_the_first_slice_of_the_walk(
    q: MessageQuery, cursor: tuple[int, int] | None, partitioned: bool, floor: int | None
) -> None:
    from asterfleet.capture.pager import first_slice_floor

    assert first_slice_floor(q, cursor, partitioned) == floor


@pytest.mark.parametrize(
    ("floor", "span", "since", "lower"),
    [
        (10 * DAY, DAY, None, 9 * DAY),
        (9 * DAY, 2 * DAY, None, 7 * DAY),
        (7 * DAY, 8 * DAY, None, -DAY),
        (7 * DAY, 16 * DAY, None, None),  # the rest in one step
        (9 * DAY, 2 * DAY, 8 * DAY, None),  # the range's own start bounds it
        (9 * DAY, 2 * DAY, 6 * DAY, 7 * DAY),
    ],
)
def test_the_next_slice_of_the_walk(
    floor: int, span: int, since: int | None, lower: int | None
) -> None:
    from asterfleet.capture.pager import next_slice_floor

    assert next_slice_floor(floor, span, since) == lower


def test_a_call_id_used_again_hours_later_is_matched_by_each_use(tmp_path: Path) -> None:
    """Filters on the whole call look from an hour before the opening on
    (the skew between capture hosts); a Call-ID used again later (as
    REGISTER refreshes do) is found by the opening of the use that matches."""
    s = Store(str(tmp_path / "c.db"))
    try:
        day = 86_400.0
        s.insert_rows(failed("reused", 0) + answered("reused", day, 1, extra="X-Later: 1\r\n"))
        # Captured by a host whose clock is 10 minutes behind the opening's.
        s.insert_rows(answered("skewed", 2 * day, 1))
        s.insert_rows(rows("skewed", [(2 * day - 600, "SIP/2.0 503 Nope", "1 INVITE", N, LB)]))
        s.insert_rows(answered("unrelated", 3 * day, 1))
        assert ids(s, MessageQuery(status_class="4xx")) == ["reused"]
        assert ids(s, MessageQuery(text="X-Later: 1")) == ["reused"]
        assert ids(s, MessageQuery(status_class="5xx")) == ["skewed"]
        assert ids(s, MessageQuery(status_class="2xx")) == ["unrelated", "skewed", "reused"]
    finally:
        s.close()


@pytest.mark.parametrize(
    ("chunk", "scanned", "found", "limit", "after"),
    [
        (108, 108, 0, 50, 432),  # nothing found yet: four times as much
        (16_384, 50_000, 0, 50, 16_384),  # never more than the largest chunk
        (108, 108, 1, 50, 432),  # one in 108: at most four times the last one
        (432, 540, 10, 50, 1_728),  # 41 more at one in 54: capped at four times
        (1_728, 2_268, 45, 50, 379),  # 6 more at one in 50, a quarter more
        (108, 216, 50, 50, 64),  # one more: the smallest chunk
    ],
)
def test_the_walk_reads_what_the_page_still_needs(
    chunk: int, scanned: int, found: int, limit: int, after: int
) -> None:
    from asterfleet.capture.pager import next_chunk

    assert next_chunk(chunk, scanned, found, limit) == after


S = 1_000_000


@pytest.mark.parametrize(
    ("top", "since", "until", "slices"),
    [
        # Open upwards (the future is newest), then 1 s, 4 s, 16 s... below the top.
        (100 * S, None, None, [(99 * S, None), (95 * S, 99 * S), (79 * S, 95 * S)]),
        # A time range: the first slice ends after `until`, the last starts at `since`.
        (100 * S, 90 * S, 100 * S, [(99 * S, 100 * S + 1), (95 * S, 99 * S), (90 * S, 95 * S)]),
        # `since` within the first slice: one slice.
        (100 * S, 99 * S + 5, None, [(99 * S + 5, None)]),
        (100 * S, 99 * S, None, [(99 * S, None)]),
    ],
)
def test_the_message_search_slices(
    top: int, since: int | None, until: int | None, slices: list[tuple[int | None, int | None]]
) -> None:
    from asterfleet.capture.search import message_slices

    got = message_slices(top, since, until)
    if since is None:
        assert got[: len(slices)] == slices
    else:
        assert got == slices


def test_the_message_slices_cover_everything_once() -> None:
    from asterfleet.capture.search import SLICES_UP_TO, message_slices

    got = message_slices(10**16, None, None)
    assert got[0][1] is None and got[-1][0] is None  # open at both ends
    for (low, _), (_, high) in itertools.pairwise(got):
        assert low == high  # each slice ends where the one above starts
    assert len(got) <= 20
    assert got[-2][1] - got[-2][0] <= SLICES_UP_TO  # type: ignore[operator]
