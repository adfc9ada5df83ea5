"""RTCP reports (HEP type 5, JSON as Asterisk's res_hep_rtcp sends them):
the parser, the E-model, storage per call and stream, and the MOS filter."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asterfleet.capture.collector import packet_to_row
from asterfleet.capture.hep import HepError, HepPacket, encode_hep
from asterfleet.capture.pager import page_calls
from asterfleet.capture.rtcp import (
    PROTO_RTCP,
    RtcpError,
    mos_from_r,
    mos_threshold,
    ntp_middle32,
    parse_rtcp,
    r_factor,
    rtt_ms,
)
from asterfleet.capture.search import MessageQuery
from asterfleet.capture.store import Store
from asterfleet.errors import UsageError
from tests.unit.test_capture_pager import T0, answered

# -- the E-model ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("r", "mos"),
    [
        (-5.0, 1.0),
        (0.0, 1.0),
        (50.0, 2.575),  # 1 + 1.75 - 0.175
        (60.0, 3.1),  # the cubic term vanishes
        (80.0, 4.024),  # 1 + 2.8 + 0.224
        (93.2, 4.409),  # G.711, no impairment
        (100.0, 4.5),
        (120.0, 4.5),
    ],
)
def test_mos_from_r_known_points(r: float, mos: float) -> None:
    assert mos_from_r(r) == pytest.approx(mos, abs=0.001)


@pytest.mark.parametrize(
    ("loss_pct", "jitter_ms", "rtt", "r"),
    [
        # d = 10 ms: Id = 0.24, no loss → 92.96
        (0.0, 0.0, None, 92.96),
        # d = 10 + 2*20 + 50 = 100 ms: Id = 2.4
        (0.0, 20.0, 100.0, 90.8),
        # d = 10 + 400/2 = 210 ms: Id = 5.04 + 0.11*32.7 = 8.637
        (0.0, 0.0, 400.0, 84.563),
        # 1 % loss: Ie,eff = 95 * 1 / 5.3 = 17.925
        (1.0, 0.0, None, 75.035),
        # 5 % loss: 95 * 5 / 9.3 = 51.075
        (5.0, 0.0, None, 41.885),
        # 100 % loss: Ie,eff = 95 * 100 / 104.3
        (100.0, 0.0, None, 92.96 - 91.083),
    ],
)
def test_r_factor_table(loss_pct: float, jitter_ms: float, rtt: float | None, r: float) -> None:
    assert r_factor(loss_pct, jitter_ms, rtt) == pytest.approx(r, abs=0.001)


def test_rtt_from_lsr_and_dlsr() -> None:
    arrival = T0 + 500_000
    sent = T0  # our SR left 500 ms before the RR arrived; the far end held it 400 ms
    lsr = ntp_middle32(sent)
    assert rtt_ms(arrival, lsr, 400 * 65536 // 1000) == pytest.approx(100.0, abs=0.1)
    assert rtt_ms(arrival, 0, 0) is None  # no SR received yet
    assert rtt_ms(arrival, lsr, 600 * 65536 // 1000) is None  # negative: another clock


# -- the parser ----------------------------------------------------------------


def report(*blocks: dict[str, Any], rtype: int = 201, ssrc: int = 0x1111) -> dict[str, Any]:
    sender = (
        {"ntp_timestamp_sec": 1, "ntp_timestamp_usec": 2, "rtp_timestamp": 3, "packets": 4,
         "octets": 5}
        if rtype == 200
        else None
    )  # fmt: skip
    return {"ssrc": ssrc, "type": rtype, "report_count": len(blocks),
            "sender_information": sender, "report_blocks": list(blocks)}  # fmt: skip


def block(source: int = 0x2222, fraction: int = 0, lost: int = 0, jitter: int = 0,
          lsr: int | str = "0", dlsr: int = 0) -> dict[str, Any]:  # fmt: skip
    """A report block; ``lsr`` a decimal string, as Asterisk writes it."""
    return {"source_ssrc": source, "fraction_lost": fraction, "packets_lost": lost,
            "highest_seq_no": 70000, "ia_jitter": jitter, "lsr": lsr, "dlsr": dlsr}  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "expect"),
    [
        # clean receiver report, 20 ms jitter (160 units at 8 kHz): d = 50 ms, R = 92.0
        (report(block(jitter=160)), [(0x2222, 0.0, 0, 20.0, None, 4.38)]),
        # sender report, 64/256 = 25 % lost: Ie,eff = 81.06, R = 11.90
        (report(block(fraction=64, lost=250), rtype=200), [(0x2222, 0.25, 250, 0.0, None, 1.06)]),
        # two streams in one report: 1.17 % lost (R = 72.61); 1 ms jitter (R = 92.91)
        (
            report(block(source=1, fraction=3, lost=3), block(source=2, jitter=8)),
            [(1, 3 / 256, 3, 0.0, None, 3.72), (2, 0.0, 0, 1.0, None, 4.4)],
        ),
        # an SR with no report blocks (nothing received yet)
        (report(rtype=200), []),
        # negative SSRC as a signed int: kept as the unsigned 32-bit value
        (report(block(source=-1)), [(0xFFFFFFFF, 0.0, 0, 0.0, None, 4.4)]),
    ],
)
def test_parse_rtcp_table(doc: dict[str, Any], expect: list[tuple[Any, ...]]) -> None:
    """Reports built the way Asterisk writes them (``lsr`` a string)."""
    got = parse_rtcp(json.dumps(doc).encode(), T0)
    read: list[tuple[Any, ...]] = [
        (b.source_ssrc, b.fraction_lost, b.packets_lost, b.jitter_ms, b.rtt_ms, b.mos) for b in got
    ]
    assert read == [(s, pytest.approx(f), lost, pytest.approx(j), r, pytest.approx(m, abs=0.01))
          for s, f, lost, j, r, m in expect]  # fmt: skip
    assert all(b.ssrc == doc["ssrc"] & 0xFFFFFFFF and b.report_type == doc["type"] for b in got)


#: A report as Asterisk 22.10.1's res_hep_rtcp sent it (HEP type 5 payload,
#: verbatim; captured in test_real_asterisk_rtcp.py's setup: SIPp streaming
#: G.711 to the box's Echo()): Asterisk's sender report on SIPp's stream.
REAL_SR = (
    b'{"ssrc":2017236692,"type":200,"report_count":1,"sender_information":'
    b'{"ntp_timestamp_sec":"1796074329","ntp_timestamp_usec":"886422","rtp_timestamp":40800,'
    b'"packets":250,"octets":40000},"report_blocks":[{"source_ssrc":3390111744,'
    b'"fraction_lost":0,"packets_lost":0,"highest_seq_no":249,"ia_jitter":17,"lsr":"0",'
    b'"dlsr":0}]}'
)
REAL_SR_AT = 1796074329 * 1_000_000 + 888209  # its HEP capture time


#: One real call, recorded (Asterisk 22.10.1, test_real_asterisk_rtcp.py:
#: SIPp to Echo(), the RtcpPeer answering the box's SRs with an SR, then an
#: RR): every HEP type 5 payload the box's res_hep_rtcp sent, verbatim, with
#: its HEP capture time and source and destination ports (box RTCP port 12455).
REAL_CALL = [
    # the box's first SR, on SIPp's stream: nothing to answer yet (lsr 0)
    (
        1796085815378278,
        12455,
        55189,
        b'{"ssrc":1647736369,"type":200,"report_count":1,"sender_information":{"ntp_timestamp_'
        b'sec":"1796085815","ntp_timestamp_usec":"377877","rtp_timestamp":47936,"packets":250,'
        b'"octets":40000},"report_blocks":[{"source_ssrc":3390111744,"fraction_lost":0,"packet'
        b's_lost":0,"highest_seq_no":249,"ia_jitter":11,"lsr":"0","dlsr":0}]}',
    ),
    # the peer's SR as the box received it: ssrc is the NTP seconds (third word)
    (
        1796085815379540,
        55189,
        12455,
        b'{"ssrc":4005074615,"type":200,"report_count":1,"sender_information":{"ntp_timestamp_'
        b'sec":"1796085815","ntp_timestamp_usec":"378031","rtp_timestamp":0,"packets":0,"octet'
        b's":0},"report_blocks":[{"source_ssrc":1647736369,"fraction_lost":0,"packets_lost":0,'
        b'"highest_seq_no":1000,"ia_jitter":0,"lsr":"2528600252","dlsr":2}]}',
    ),
    # the box's next SR, answering the peer's: lsr and dlsr in the *peer's* clock
    (
        1796085820378627,
        12455,
        55189,
        b'{"ssrc":1647736369,"type":200,"report_count":1,"sender_information":{"ntp_timestamp_'
        b'sec":"1796085820","ntp_timestamp_usec":"378355","rtp_timestamp":87936,"packets":500,'
        b'"octets":80000},"report_blocks":[{"source_ssrc":3390111744,"fraction_lost":0,"packet'
        b's_lost":0,"highest_seq_no":499,"ia_jitter":16,"lsr":"2528600262","dlsr":327680}]}',
    ),
    # the peer's RR as the box received it: ssrc is its block's source_ssrc
    (
        1796085820381827,
        55189,
        12455,
        b'{"ssrc":1647736369,"type":201,"report_count":1,"sender_information":null,"report_blo'
        b'cks":[{"source_ssrc":1647736369,"fraction_lost":0,"packets_lost":0,"highest_seq_no":'
        b'1000,"ia_jitter":0,"lsr":"2528927963","dlsr":1}]}',
    ),
]


@pytest.mark.parametrize(
    ("index", "received", "rtt"),
    [
        (0, False, None),
        (1, True, 1.633),  # arrival - LSR (the box's SR 1.5 ms before) - DLSR
        # sent: A - LSR - DLSR = 0.595 ms here is the way one, plus the
        # clocks' offset with a phone; it used to be shown as the RTT
        (2, False, None),
        (3, True, 3.464),
    ],
)
def test_a_recorded_real_call_tells_which_way_each_report_went(
    index: int, received: bool, rtt: float | None
) -> None:
    at, src_port, dst_port, payload = REAL_CALL[index]
    assert 12455 in (src_port, dst_port)
    (got,) = parse_rtcp(payload, at)
    assert got.received is received
    assert (src_port == 12455) is not received  # the box's own RTCP port: it sent it
    assert got.rtt_ms == (None if rtt is None else pytest.approx(rtt, abs=0.001))
    assert got.mos == 4.4  # loopback: no loss, under 2 ms of jitter


S_BOX, S_FAR = 0x78_3C_5A_D4, 0xCA_0F_00_00  # the capture host's SSRC, the far end's
HELD = 400 * 65536 // 1000  # DLSR: the answering end held the SR 400 ms


def far_sr(lsr: int | str, dlsr: int, at_unix: int) -> bytes:
    """A sender report the box *received* from a phone, as Asterisk 22 writes
    it: ``ssrc`` is the packet's third word, the SR's NTP seconds
    (res_rtp_asterisk.c ``rtcpheader[position + 2]``), ``ntp_timestamp_sec``
    the same seconds since 1970 (``ntp2timeval``)."""
    doc = report(
        block(source=S_BOX, jitter=8, lsr=lsr, dlsr=dlsr),
        rtype=200,
        ssrc=(at_unix + 2_208_988_800) & 0xFFFFFFFF,
    )
    doc["sender_information"] |= {"ntp_timestamp_sec": str(at_unix), "ntp_timestamp_usec": "0"}
    return json.dumps(doc).encode()  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "at", "expect"),
    [
        # Asterisk's own SR, recorded: no loss, 17 units = 2.125 ms jitter, no
        # SR from SIPp yet (lsr "0"): sent, no RTT; d = 14.25 ms, R = 92.86
        (REAL_SR, REAL_SR_AT, (False, 2017236692, 200, 3390111744, 2.125, None, 4.4)),
        # Asterisk's own SR answering a phone's SR: LSR is the *phone's*
        # clock (sent at T0, held 400 ms, captured 50 ms of transit later);
        # A - LSR - DLSR = 50 ms is one-way transit, not an RTT: none
        (
            json.dumps(
                report(
                    block(source=S_FAR, jitter=8, lsr=str(ntp_middle32(T0)), dlsr=HELD),
                    rtype=200,
                    ssrc=S_BOX,
                )
            ).encode(),
            T0 + 450_000,
            (False, S_BOX, 200, S_FAR, 1.0, None, 4.4),
        ),
        # A phone's RR received, answering our SR sent 500 ms before, held
        # 400 ms: ssrc is its first block's source_ssrc (the third word);
        # RTT 100 ms, our clock; d = 62 ms, R = 91.71. lsr as Asterisk's
        # string, and as an integer
        *(
            (
                json.dumps(
                    report(block(source=S_BOX, lsr=lsr, dlsr=HELD, jitter=8), ssrc=S_BOX)
                ).encode(),
                T0 + 500_000,
                (True, S_BOX, 201, S_BOX, 1.0, 100.0, 4.38),
            )
            for lsr in (str(ntp_middle32(T0)), ntp_middle32(T0))
        ),
        # a phone's SR received, the same answer in its report block: RTT 100 ms
        (
            far_sr(str(ntp_middle32(T0)), HELD, T0 // 1_000_000),
            T0 + 500_000,
            (True, (T0 // 1_000_000 + 2_208_988_800) & 0xFFFFFFFF, 200, S_BOX, 1.0, 100.0, 4.38),
        ),
        # received, but answering no SR of ours yet (lsr 0): no RTT
        (
            json.dumps(report(block(source=S_BOX, jitter=8), ssrc=S_BOX)).encode(),
            T0,
            (True, S_BOX, 201, S_BOX, 1.0, None, 4.4),
        ),
        # received, a clock stepped: 20 s "round trip" is none
        (
            json.dumps(
                report(block(source=S_BOX, lsr=ntp_middle32(T0), jitter=8), ssrc=S_BOX)
            ).encode(),
            T0 + 20_000_000,
            (True, S_BOX, 201, S_BOX, 1.0, None, 4.4),
        ),
    ],
)
def test_parse_rtcp_as_asterisk_writes_it(payload: bytes, at: int, expect: tuple[Any, ...]) -> None:
    """Which way a report went, and an RTT only for one the box received."""
    (got,) = parse_rtcp(payload, at)
    received, ssrc, rtype, source, jitter, rtt, mos = expect
    assert (got.received, got.ssrc, got.report_type, got.source_ssrc) == (
        received,
        ssrc,
        rtype,
        source,
    )
    assert got.jitter_ms == pytest.approx(jitter)
    assert got.rtt_ms == (None if rtt is None else pytest.approx(rtt, abs=0.1))
    assert got.mos == pytest.approx(mos, abs=0.01)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(1_000_000_000, 4_000_000_000),
    st.integers(0, 10 * 65536),
    st.integers(0, 30_000_000),
)
def test_only_received_reports_have_an_rtt(
    box: int, far: int, lsr: int, unix_s: int, dlsr: int, later_us: int
) -> None:
    """Whatever LSR and DLSR, a report the box sent (its own SSRC, on the
    far stream) never gets an RTT; one it received does whenever the
    round trip reads 0..10 s."""
    at = unix_s * 1_000_000 + later_us
    sent = json.dumps(report(block(source=far, lsr=lsr, dlsr=dlsr), rtype=200, ssrc=box))
    if box != far and box != (unix_s + 2_208_988_800) & 0xFFFFFFFF:
        (got,) = parse_rtcp(sent.encode(), at)
        assert not got.received and got.rtt_ms is None
    rr = json.dumps(report(block(source=box, lsr=lsr, dlsr=dlsr), ssrc=box))
    for payload in (rr.encode(), far_sr(lsr, dlsr, unix_s)):
        (got,) = parse_rtcp(payload, at)
        assert got.received
        assert (got.rtt_ms is not None) == (lsr != 0 and rtt_ms(at, lsr, dlsr) is not None)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"ssrc": 1}',
        json.dumps(report(block()) | {"type": 202}).encode(),
        json.dumps(report(block()) | {"report_blocks": {}}).encode(),
        json.dumps(report(block(fraction=256))).encode(),
        json.dumps(report(block() | {"ia_jitter": "5"})).encode(),
        json.dumps(report(block() | {"lsr": True})).encode(),
        json.dumps(report(block(lsr="x"))).encode(),
        json.dumps(report(block(lsr="-1"))).encode(),
        json.dumps(report(block(lsr="4294967296"))).encode(),
        json.dumps(report(block(lsr="\u0661"))).encode(),  # an Arabic-Indic digit one
        json.dumps(report(block(lsr="1" * 400))).encode(),
        json.dumps(report(7)).encode(),  # type: ignore[arg-type]
        b"[" * 100_000,
    ],
)
def test_parse_rtcp_rejects_bad_payloads(payload: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_rtcp(payload, T0)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20,
)  # fmt: skip
_keys = st.sampled_from(
    ["ssrc", "type", "report_blocks", "source_ssrc", "fraction_lost", "packets_lost",
     "ia_jitter", "lsr", "dlsr"]
)  # fmt: skip
_near = st.fixed_dictionaries(
    {"ssrc": st.integers(), "type": st.sampled_from([200, 201, 0, "x"])},
    optional={
        "report_blocks": st.lists(
            st.dictionaries(_keys, st.integers() | st.integers().map(str) | _json, max_size=9),
            max_size=3,
        )
        | _json
    },
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | _json.map(lambda d: json.dumps(d).encode())
       | _near.map(lambda d: json.dumps(d).encode()), st.integers(0, 2**62))  # fmt: skip
def test_parse_rtcp_raises_only_its_own_error(payload: bytes, ts_us: int) -> None:
    try:
        blocks = parse_rtcp(payload, ts_us)
    except RtcpError:
        return
    for b in blocks:
        assert 1.0 <= b.mos <= 4.5
        assert 0.0 <= b.fraction_lost < 1.0
        assert b.rtt_ms is None or 0 <= b.rtt_ms <= 10_000


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=12) | st.integers(-(2**40), 2**40).map(str) | st.integers(-(2**40), 2**40),
    st.integers(0, 2**62),
)
def test_lsr_as_any_string_or_number(lsr: str | int, ts_us: int) -> None:
    """``lsr`` in a well-formed report: read when it is a decimal string of
    0..2**32-1 or an integer of 32 bits, else an RtcpError."""
    if isinstance(lsr, int):
        readable = -(2**31) <= lsr < 2**32
    else:
        text = lsr.strip()
        readable = text.isascii() and text.isdigit() and int(text) < 2**32
    try:
        (got,) = parse_rtcp(json.dumps(report(block(lsr=lsr))).encode(), ts_us)
    except RtcpError:
        assert not readable
        return
    assert readable
    assert got.rtt_ms is None or 0 <= got.rtt_ms <= 10_000
    assert 1.0 <= got.mos <= 4.5


@pytest.mark.parametrize(
    ("value", "expect"), [(None, None), ("", None), ("3.5", 3.5), (4, 4.0), ("5", 5.0)]
)
def test_mos_threshold(value: Any, expect: float | None) -> None:
    assert mos_threshold(value, "--mos-below") == expect


@pytest.mark.parametrize("value", ["x", "0.5", "6", "nan", "inf", -1])
def test_mos_threshold_refuses(value: Any) -> None:
    with pytest.raises(UsageError, match="--mos-below"):
        mos_threshold(value, "--mos-below")


# -- the collector's row, the store, the filter --------------------------------


def rtcp_packet(call_id: str, doc: dict[str, Any], at_us: int = T0 + 2_000_000) -> bytes:
    return encode_hep(
        HepPacket(
            payload=json.dumps(doc).encode(), proto_type=PROTO_RTCP, src_ip="10.0.0.3",
            dst_ip="10.0.0.9", src_port=10001, dst_port=20001, ts_sec=at_us // 1_000_000,
            ts_usec=at_us % 1_000_000, capture_id=2, capture_host="ast1",
            correlation_id=call_id,
        )
    )  # fmt: skip


def test_rtcp_needs_a_call_id_and_json() -> None:
    with pytest.raises(HepError) as err:
        packet_to_row(rtcp_packet("", report(block())), None, T0)
    assert err.value.reason == "no_call_id"
    bad = encode_hep(HepPacket(payload=b"{", proto_type=PROTO_RTCP, correlation_id="c1"))
    with pytest.raises(HepError) as err:
        packet_to_row(bad, None, T0)
    assert err.value.reason == "bad_rtcp"


def test_reports_stored_per_call_and_stream_and_searchable_by_mos(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "c.db"))
    try:
        store.insert_rows(answered("good", 0.0, 30.0) + answered("bad", 1.0, 30.0))
        store.insert_rows(
            [
                packet_to_row(rtcp_packet("good", report(block(source=7, jitter=80))), None, T0),
                packet_to_row(rtcp_packet("bad", report(block(source=8))), None, T0),
                # the same stream later: 12.5 % lost
                packet_to_row(
                    rtcp_packet(
                        "bad", report(block(source=8, fraction=32, lost=40)), T0 + 7_000_000
                    ),
                    None,
                    T0,
                ),
            ]
        )
        good, bad = store.stream_quality("good"), store.stream_quality("bad")
        assert [(s.source_ssrc, s.reports, s.jitter_ms, s.reporter) for s in good] == [
            (7, 1, 10.0, "10.0.0.3:10001")
        ]
        assert [(s.source_ssrc, s.reports, s.fraction_lost, s.packets_lost) for s in bad] == [
            (8, 2, 0.125, 40)
        ]
        assert bad[0].min_mos == bad[0].mos < 3.5 < good[0].mos
        assert store.stream_quality("none") == []

        def ids(**kw: Any) -> list[str]:
            return [c.call_id for c in page_calls(store, MessageQuery(**kw), 50, None).calls]

        assert ids() == ["bad", "good"]
        assert ids(mos_below=3.5) == ["bad"]
        assert ids(mos_below=4.5) == ["bad", "good"]
        assert ids(mos_below=1.0) == []
        assert ids(mos_below=4.5, from_user="nobody") == []
    finally:
        store.close()


def test_console_shows_streams_and_filters_by_mos(tmp_path: Path) -> None:
    """The call page's media table, and ``mos_below`` on the API and the Calls page."""
    from tests.unit.test_console_calls import call, make_client
    from tests.unit.test_console_web import login

    path = str(tmp_path / "capture.db")
    store = Store(path)
    try:
        store.insert_rows(call("ok@x", T0) + call("poor@x", T0 + 10_000_000))
        store.insert_rows(
            [
                packet_to_row(rtcp_packet("poor@x", report(block(source=0xB2, fraction=40,
                                                                 lost=120, jitter=240))),
                              None, T0),
            ]
        )  # fmt: skip
    finally:
        store.close()
    with make_client(tmp_path, path) as client:
        login(client)
        page = client.get("/calls/poor@x").text
        assert 'id="streams"' in page and "0x000000b2" in page
        assert "15.6 %" in page and "30.0 ms" in page and ">120<" in page
        assert "No RTCP reports" in client.get("/calls/ok@x").text
        (stream,) = client.get("/api/v1/calls/poor@x").json()["streams"]
        assert (stream["source_ssrc"], stream["packets_lost"], stream["jitter_ms"]) == (
            0xB2,
            120,
            30.0,
        )
        assert client.get("/api/v1/calls/ok@x").json()["streams"] == []
        r = client.get("/api/v1/calls", params={"mos_below": "3.5"})
        assert [c["call_id"] for c in r.json()["calls"]] == ["poor@x"]
        r = client.get("/api/v1/calls", params={"mos_below": "zero"})
        assert r.status_code == 400 and "MOS below 'zero'" in r.json()["detail"]
        listing = client.get("/calls", params={"mos_below": "3.5"}).text
        assert 'href="/calls/poor%40x"' in listing and 'href="/calls/ok%40x"' not in listing


def test_a_database_from_before_rtcp_gets_its_table(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE rtcp_reports")
    store = Store(path, create=False)
    try:
        store.insert_rows(answered("c1", 0.0, 3.0))
        assert store.stream_quality("c1") == []
        assert [
            c.call_id for c in page_calls(store, MessageQuery(mos_below=4.0), 50, None).calls
        ] == []
    finally:
        store.close()
