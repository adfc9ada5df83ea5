"""Each RTCP report's RTP clock, decided once by the collector from the
call's SDP answer: the stored MOS, which the "MOS below" filter and the
statistics read, is the call page's figure (opus: 48 kHz, not 8 kHz)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from asterfleet.capture.callstats import read_facts
from asterfleet.capture.collector import packet_to_row, parse_for_store
from asterfleet.capture.hep import HepPacket, encode_hep
from asterfleet.capture.mediaclock import SETTLE_S, MediaClocks, at_clock, decide
from asterfleet.capture.pager import page_calls
from asterfleet.capture.rtcp import estimated_mos
from asterfleet.capture.sdp import AudioCodec, Negotiation, negotiation
from asterfleet.capture.search import MessageQuery
from asterfleet.capture.store import RTCP_COLUMNS, Row, Store
from tests.unit.test_capture_pager import T0
from tests.unit.test_capture_rtcp import block, report, rtcp_packet
from tests.unit.test_capture_sdp import ASTERISK_PCMU, INVITE, OK, OPUS_OFFER, sdp, sip, sip_rows

OPUS_ANSWER = sdp("m=audio 5000 RTP/AVP 111", "a=rtpmap:111 opus/48000/2")
OPUS = AudioCodec(111, "opus", 48000)
#: 2,400 timestamp units of jitter: 50 ms at opus's 48 kHz (MOS 4.35), but
#: 300 ms read at 8 kHz (MOS 1.65): either side of "MOS below 3.5".
JITTER_UNITS = 2400
MOS_48K = estimated_mos(0.0, 50.0, None)
MOS_8K = estimated_mos(0.0, 300.0, None)


def test_the_example_straddles_the_threshold() -> None:
    assert (MOS_8K, MOS_48K) == (1.65, 4.35)


# -- the pure parts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "expect"),
    [
        # offer and answer: answered, the answer's codec
        ([sip(INVITE, OPUS_OFFER), sip(OK, OPUS_ANSWER)], Negotiation(OPUS, True)),
        ([sip(INVITE, OPUS_OFFER), sip(OK, ASTERISK_PCMU)],
         Negotiation(AudioCodec(0, "PCMU", 8000), True)),
        # G.722's RTP clock is 8 kHz (RFC 3551), although it samples 16 kHz
        ([sip(INVITE, OPUS_OFFER), sip(OK, sdp("m=audio 5000 RTP/AVP 9"))],
         Negotiation(AudioCodec(9, "G722", 8000), True)),
        # the offer alone (twice, from two hops): not answered yet, the offer's codec
        ([sip(INVITE, OPUS_OFFER), sip(INVITE, OPUS_OFFER), sip("SIP/2.0 100 Trying")],
         Negotiation(OPUS, False)),
        # answered with a dynamic type the answer does not map: no clock
        ([sip(INVITE, OPUS_OFFER), sip(OK, sdp("m=audio 5000 RTP/AVP 96"))],
         Negotiation(AudioCodec(96, "", None), True)),
        ([sip(INVITE), sip(OK)], Negotiation(None, False)),  # no SDP at all
    ],
)  # fmt: skip
def test_negotiation_says_whether_the_answer_was_seen(
    messages: list[bytes], expect: Negotiation
) -> None:
    assert negotiation(messages) == expect


@pytest.mark.parametrize(
    ("found", "waited_s", "clock"),
    [
        # the answer seen: decided at once, whatever the wait
        (Negotiation(OPUS, True), None, 48000),
        (Negotiation(AudioCodec(9, "G722", 8000), True), None, 8000),
        # answered, but the SDP gives no rate: 0 (8 kHz assumed, as the page says)
        (Negotiation(AudioCodec(96, "", None), True), None, 0),
        (Negotiation(None, True), None, 0),  # an answer without audio, an offer without
        # the offer alone: the answer may still come (it can pick another codec)
        (Negotiation(OPUS, False), None, None),
        (Negotiation(OPUS, False), SETTLE_S - 1, None),
        # ... until the call has waited: then the offer's, as the call page reads it
        (Negotiation(OPUS, False), SETTLE_S, 48000),
        # no SDP captured: waits too, then 8 kHz assumed
        (Negotiation(None, False), None, None),
        (Negotiation(None, False), SETTLE_S + 5, 0),
    ],
)
def test_decide_table(found: Negotiation, waited_s: float | None, clock: int | None) -> None:
    assert decide(found, waited_s) == clock


def rtcp_block(units: int, fraction: int = 0) -> Row:
    ((_tag, (b,)),) = [packet_to_row(rtcp_packet("c", report(block(jitter=units,
                                                                       fraction=fraction))),
                                     None, T0)]  # fmt: skip
    return tuple(b)


@pytest.mark.parametrize(
    ("units", "fraction", "clock", "jitter_ms"),
    [
        (2400, 0, 48000, 50.0),  # opus
        (2400, 0, 8000, 300.0),  # G.711 / G.722
        (480, 0, 16000, 30.0),  # DVI4/16000
        (2400, 0, 0, 300.0),  # 0: the SDP does not tell, 8 kHz assumed, figures kept
        (160, 26, 48000, 20 / 6),  # loss counts the same at any clock
    ],
)
def test_a_block_at_a_clock(units: int, fraction: int, clock: int, jitter_ms: float) -> None:
    stored = rtcp_block(units, fraction)
    assert stored[RTCP_COLUMNS.index("clock_hz")] is None  # as parsed: undecided
    row = dict(zip(RTCP_COLUMNS, at_clock(stored, clock), strict=True))
    assert row["jitter_ms"] == pytest.approx(jitter_ms)
    assert row["mos"] == estimated_mos(fraction / 256, jitter_ms, None)
    assert row["clock_hz"] == clock
    untouched = ("ts_us", "call_id", "ssrc", "source_ssrc", "fraction_lost", "packets_lost")
    assert all(row[k] == stored[RTCP_COLUMNS.index(k)] for k in untouched)


# -- the writer's side, on a real SQLite store ---------------------------------------


def opus_call(call_id: str, answer: str = OPUS_ANSWER) -> list[Row]:
    return sip_rows(call_id, OPUS_OFFER, answer)


def rtcp_rows(call_id: str, units: int = JITTER_UNITS) -> list[Row]:
    return [packet_to_row(rtcp_packet(call_id, report(block(source=0xB2, jitter=units))), None, T0)]


class Gone:
    """A store whose database went away."""

    def messages_of_calls(self, _ids: list[str]) -> list[Any]:
        raise ConnectionError("database went away")


def store_rtcp(store: Store, clocks: MediaClocks | None, rows: list[Row]) -> None:
    """As a writer does: parse, stamp the clocks it knows, insert."""
    if clocks is not None:
        clocks.stamp(store, rows, [i for i, r in enumerate(rows) if r[0] == "rtcp"])
    store.insert_rows(rows)


def views(store: Store, call_id: str, page_clock: int) -> dict[str, Any]:
    """What each reader says of the call's one stream."""
    (stream,) = store.stream_quality(call_id, page_clock)
    below = [c.call_id for c in page_calls(store, MessageQuery(mos_below=3.5), 50, None).calls]
    (facts,) = [f for f in read_facts(store, T0 - 1, T0 + 60_000_000) if f.call_id == call_id]
    return {"page": stream.mos, "below": call_id in below, "stats": facts.mos}


def test_a_report_after_the_answer_is_stored_at_the_codecs_clock(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "c.db"))
    try:
        store.insert_rows(opus_call("o@x") + sip_rows("p@x", ASTERISK_PCMU, ASTERISK_PCMU))
        clocks = MediaClocks()
        store_rtcp(store, clocks, rtcp_rows("o@x") + rtcp_rows("p@x"))
        assert views(store, "o@x", 48000) == {"page": MOS_48K, "below": False, "stats": MOS_48K}
        assert views(store, "p@x", 8000) == {"page": MOS_8K, "below": True, "stats": MOS_8K}
        (stream,) = store.stream_quality("o@x", 8000)  # decided: the stored figure wins
        assert (stream.clock_hz, stream.jitter_ms) == (48000, 50.0)
        # The next report's clock comes from the cache: no store lookup.
        rows = rtcp_rows("o@x")
        clocks.stamp(Gone(), rows, [0])  # type: ignore[arg-type]
        assert rows[0][1][0][RTCP_COLUMNS.index("clock_hz")] == 48000
    finally:
        store.close()


def test_a_report_before_the_answer_is_rewritten_once_it_comes(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "c.db"))
    try:
        clocks = MediaClocks()
        store.insert_rows(sip_rows("o@x", OPUS_OFFER, "")[:1])  # the INVITE only
        store_rtcp(store, clocks, rtcp_rows("o@x"))
        # Undecided: the filter and the statistics read 8 kHz for now.
        assert views(store, "o@x", 48000) == {"page": MOS_48K, "below": True, "stats": MOS_8K}
        assert clocks.settle(store, now=100.0) == 0  # still no answer
        store.insert_rows(opus_call("o@x")[1:])  # the 200 OK, in a later batch
        assert clocks.settle(store, now=101.0) == 1
        assert views(store, "o@x", 48000) == {"page": MOS_48K, "below": False, "stats": MOS_48K}
        assert clocks.settle(store, now=103.0) == 0  # done: nothing left
    finally:
        store.close()


@pytest.mark.parametrize(
    ("sip_of_call", "clock", "mos"),
    [
        # only the offer was captured: its codec, once the call has waited
        (lambda: sip_rows("o@x", OPUS_OFFER, "")[:1], 48000, MOS_48K),
        # no SIP at all: 0, 8 kHz assumed, the figures as stored
        (lambda: [], 0, MOS_8K),
    ],
)
def test_a_call_never_answered_in_the_capture_is_decided_after_a_wait(
    tmp_path: Path, sip_of_call: Any, clock: int, mos: float
) -> None:
    store = Store(str(tmp_path / "c.db"))
    try:
        if rows := sip_of_call():
            store.insert_rows(rows)
        clocks = MediaClocks()
        store_rtcp(store, clocks, rtcp_rows("o@x"))
        assert clocks.settle(store, now=100.0) == 0
        assert clocks.settle(store, now=100.0 + SETTLE_S - 1) == 0
        assert clocks.settle(store, now=100.0 + SETTLE_S) == 1
        with store.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT clock_hz, mos FROM rtcp_reports").one()
        assert tuple(stored) == (clock, mos)
    finally:
        store.close()


def test_a_store_that_does_not_answer_leaves_the_clock_undecided(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "c.db"))
    store.insert_rows(opus_call("o@x"))
    store.close()
    rows = rtcp_rows("o@x")
    MediaClocks().stamp(Gone(), rows, [0])  # type: ignore[arg-type]
    assert rows[0][1][0][RTCP_COLUMNS.index("clock_hz")] is None


def test_the_cache_keeps_the_newest_calls() -> None:
    clocks = MediaClocks(size=2)
    for call_id, clock in (("a", 8000), ("b", 48000), ("c", 0)):
        clocks._remember(call_id, clock)
    assert clocks.known("a") is None
    assert (clocks.known("b"), clocks.known("c")) == (48000, 0)


def test_parsing_a_batch_says_where_its_rtcp_rows_are() -> None:
    sip_packet = encode_hep(HepPacket(payload=sip(INVITE, OPUS_OFFER), capture_host="a"))
    packets = [sip_packet, rtcp_packet("o@x", report(block())), sip_packet]
    parsed = parse_for_store(packets, None, T0, binary=False)
    assert [parsed.rows[i][0] for i in parsed.rtcp_at] == ["rtcp"]


def test_an_old_store_gets_the_column_and_its_reports_their_clock(tmp_path: Path) -> None:
    """A store from before ``clock_hz``: its reports stay readable (8 kHz
    figures, the call page reading them at the SDP's clock), and the
    collector's pass decides their clock from the calls' SDP."""
    path = str(tmp_path / "old.db")
    store = Store(path)
    store.insert_rows(opus_call("o@x") + rtcp_rows("o@x"))
    store.close()
    with sqlite3.connect(path) as db:  # as the previous version left it
        db.execute("DROP INDEX ix_rtcp_reports_unclocked")
        db.execute("ALTER TABLE rtcp_reports DROP COLUMN clock_hz")
    store = Store(path, create=False)
    try:
        assert views(store, "o@x", 48000) == {"page": MOS_48K, "below": True, "stats": MOS_8K}
        assert MediaClocks().settle(store, now=1.0) == 1
        assert views(store, "o@x", 48000) == {"page": MOS_48K, "below": False, "stats": MOS_48K}
    finally:
        store.close()
    read_only = Store(path, create=False)  # the upgraded store opens the quick way
    try:
        assert read_only._driver is not None
    finally:
        read_only.close()


def test_the_pass_says_once_that_the_store_is_away(tmp_path: Path) -> None:
    """Writer 0's pass runs every 2 s; a database that is away is logged
    once, not at every pass, and again after a pass that worked."""
    import threading

    import structlog

    from asterfleet.capture.collector import CollectorSettings, _Database

    db = _Database(CollectorSettings(listen=[], db_url=str(tmp_path)), threading.Event())
    clocks = MediaClocks()
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            clocks._next_pass = 0.0
            db.settle_clocks(clocks)  # a directory is no SQLite database
        db._store = Store(str(tmp_path / "c.db"))
        clocks._next_pass = 0.0
        db.settle_clocks(clocks)
        db._store.close()
        db._store = None  # opened again from the directory: fails again
        clocks._next_pass = 0.0
        db.settle_clocks(clocks)
    assert [e["event"] for e in logs] == ["rtcp_clock_pass_failed"] * 2
