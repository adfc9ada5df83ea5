"""The codec a call's SDP negotiated and its RTP clock rate, and the call
view's jitter read at that rate (RTCP jitter is in RTP timestamp units)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asterfleet.capture.collector import packet_to_row
from asterfleet.capture.hep import HepPacket, encode_hep
from asterfleet.capture.rtcp import estimated_mos
from asterfleet.capture.sdp import AudioCodec, audio_codec, negotiated_codec, sdp_body
from asterfleet.capture.store import Row, Store
from tests.unit.test_capture_pager import T0
from tests.unit.test_capture_rtcp import block, report, rtcp_packet


def sdp(m: str, *attrs: str, media: str = "") -> str:
    lines = ["v=0", "o=- 1 2 IN IP4 10.0.0.3", "s=Asterisk", "c=IN IP4 10.0.0.3", "t=0 0", m,
             *attrs, "a=sendrecv", media]  # fmt: skip
    return "\r\n".join(line for line in lines if line) + "\r\n"


#: Asterisk 22's answer (res_pjsip_sdp_rtp), G.711 and RFC 4733 events.
ASTERISK_PCMU = sdp(
    "m=audio 10046 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
)
#: A WebRTC-style offer: opus first (its RTP clock is 48 kHz whatever it samples).
OPUS_OFFER = sdp("m=audio 9 UDP/TLS/RTP/SAVPF 111 9 0 8 126", "a=rtpmap:111 opus/48000/2",
                 "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:9 G722/8000",
                 "a=rtpmap:126 telephone-event/8000")  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (ASTERISK_PCMU, AudioCodec(0, "PCMU", 8000)),
        (OPUS_OFFER, AudioCodec(111, "opus", 48000)),
        # G.722: static type 9, an 8 kHz RTP clock although it samples 16 kHz
        (sdp("m=audio 4000 RTP/AVP 9 101", "a=rtpmap:9 G722/8000"), AudioCodec(9, "G722", 8000)),
        (sdp("m=audio 4000 RTP/AVP 9"), AudioCodec(9, "G722", 8000)),  # no rtpmap: RFC 3551
        (sdp("m=audio 4000 RTP/AVP 8 0"), AudioCodec(8, "PCMA", 8000)),
        (sdp("m=audio 4000 RTP/AVP 6"), AudioCodec(6, "DVI4", 16000)),
        # events or comfort noise listed first: the voice codec after them
        (
            sdp("m=audio 4000 RTP/AVP 101 13 0", "a=rtpmap:101 telephone-event/8000"),
            AudioCodec(0, "PCMU", 8000),
        ),
        # a dynamic type the SDP does not map: codec and clock unknown
        (sdp("m=audio 4000 RTP/AVP 96"), AudioCodec(96, "", None)),
        (sdp("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 L16/huge"), AudioCodec(96, "L16", None)),
        # the rtpmap of a later (video) section does not count
        (
            sdp(
                "m=audio 4000 RTP/AVP 96", media="m=video 4002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000"
            ),
            AudioCodec(96, "", None),
        ),
        (sdp("m=video 4002 RTP/AVP 96", "a=rtpmap:96 VP8/90000"), None),
        (sdp("m=audio 0 RTP/AVP"), None),
        ("", None),
    ],
)
def test_audio_codec_table(text: str, expect: AudioCodec | None) -> None:
    assert audio_codec(text) == expect


def sip(first: str, body: str = "") -> bytes:
    kind = "Content-Type: application/sdp\r\n" if body else ""
    return (f"{first}\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{kind}"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()  # fmt: skip


INVITE = "INVITE sip:100@b SIP/2.0"
OK = "SIP/2.0 200 OK"


@pytest.mark.parametrize(
    ("messages", "expect"),
    [
        # offer opus and G.722; Asterisk answers G.711: PCMU's clock
        ([sip(INVITE, OPUS_OFFER), sip(OK, ASTERISK_PCMU)], AudioCodec(0, "PCMU", 8000)),
        # the offer captured on two hops (one body), then the answer: opus
        (
            [
                sip(INVITE, OPUS_OFFER),
                sip(INVITE, OPUS_OFFER),
                sip("SIP/2.0 100 Trying"),
                sip(OK, sdp("m=audio 5000 RTP/AVP 111", "a=rtpmap:111 opus/48000/2")),
            ],
            AudioCodec(111, "opus", 48000),
        ),
        # the answer seen, the rest not: the answer tells
        ([sip(OK, sdp("m=audio 5000 RTP/AVP 9"))], AudioCodec(9, "G722", 8000)),
        # a later re-INVITE does not change the first answer's reading
        (
            [
                sip(INVITE, ASTERISK_PCMU),
                sip(OK, sdp("m=audio 4000 RTP/AVP 8")),
                sip(INVITE, OPUS_OFFER),
            ],
            AudioCodec(8, "PCMA", 8000),
        ),
        # an answer with no audio: the offer's codec
        (
            [sip(INVITE, OPUS_OFFER), sip(OK, sdp("m=video 4002 RTP/AVP 96"))],
            AudioCodec(111, "opus", 48000),
        ),
        ([sip(INVITE), sip(OK)], None),  # no SDP anywhere
        ([], None),
    ],
)
def test_negotiated_codec_is_the_answers(messages: list[bytes], expect: AudioCodec | None) -> None:
    assert negotiated_codec(messages) == expect


def test_sdp_body_needs_a_media_line() -> None:
    assert sdp_body(sip(INVITE, ASTERISK_PCMU)) == ASTERISK_PCMU
    assert sdp_body(sip(INVITE)) is None
    assert sdp_body(b"INVITE sip:x SIP/2.0\r\nContent-Length: 0") is None  # no blank line


_sdp_lines = st.lists(
    st.sampled_from(["m=audio 4000 RTP/AVP ", "a=rtpmap:", "m=video 1 RTP/AVP ", "c=IN IP4 x"])
    | st.text(max_size=8),
    max_size=6,
).map(lambda parts: "".join(parts))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=120) | _sdp_lines.map(str.encode), max_size=5))
def test_any_message_text_gives_a_codec_or_none(messages: list[bytes]) -> None:
    """Arbitrary bytes never raise; a clock rate, when told, is plausible."""
    got = negotiated_codec(sip(OK, m.decode("utf-8", "replace")) for m in messages)
    assert got is None or got.clock_hz is None or 0 < got.clock_hz <= 1_000_000
    for m in messages:
        codec = audio_codec(m.decode("utf-8", "replace"))
        assert codec is None or 0 <= codec.payload_type <= 999


# -- the call view -------------------------------------------------------------


def sip_rows(call_id: str, offer: str, answer: str) -> list[Row]:
    out = []
    for i, (first, body, src, dst) in enumerate(
        [(INVITE, offer, "10.0.0.1", "10.0.0.3"), (OK, answer, "10.0.0.3", "10.0.0.1")]
    ):
        raw = sip(first, body).replace(b"Call-ID: c1", f"Call-ID: {call_id}".encode())
        at = T0 + i * 20_000
        pkt = HepPacket(
            payload=raw, src_ip=src, dst_ip=dst, src_port=5060, dst_port=5060,
            ts_sec=at // 1_000_000, ts_usec=at % 1_000_000, capture_host="ast1",
        )  # fmt: skip
        out.append(packet_to_row(encode_hep(pkt), None, at))
    return out


@pytest.mark.parametrize(
    ("offer", "answer", "jitter_ms", "note"),
    [
        # 480 units: 60 ms at 8 kHz, 10 ms at opus's 48 kHz clock
        (OPUS_OFFER, sdp("m=audio 5000 RTP/AVP 111", "a=rtpmap:111 opus/48000/2"), 10.0,
         "the opus RTP clock, 48000 Hz (from the SDP)"),
        # G.722 keeps the 8 kHz clock: 60 ms
        (OPUS_OFFER, sdp("m=audio 5000 RTP/AVP 9"), 60.0, "the G722 RTP clock, 8000 Hz"),
        # no SDP: 8 kHz, and the page says it is assumed
        ("", "", 60.0, "8000 Hz, assumed (G.711)"),
    ],
)  # fmt: skip
def test_call_view_reads_jitter_at_the_negotiated_clock(
    tmp_path: Path, offer: str, answer: str, jitter_ms: float, note: str
) -> None:
    from tests.unit.test_console_calls import make_client
    from tests.unit.test_console_web import login

    path = str(tmp_path / "capture.db")
    store = Store(path)
    try:
        store.insert_rows(sip_rows("m@x", offer, answer))
        store.insert_rows(
            [packet_to_row(rtcp_packet("m@x", report(block(source=0xB2, jitter=480))), None, T0)]
        )
    finally:
        store.close()
    mos = estimated_mos(0.0, jitter_ms, None)
    with make_client(tmp_path, path) as client:
        login(client)
        detail = client.get("/api/v1/calls/m@x").json()
        (stream,) = detail["streams"]
        assert stream["jitter_ms"] == pytest.approx(jitter_ms)
        assert stream["mos"] == stream["min_mos"] == mos
        assert detail["media"]["clock_hz"] == stream["clock_hz"]
        assert detail["media"]["from_sdp"] is bool(offer)
        page = client.get("/calls/m@x").text
        assert f"{jitter_ms:.1f} ms" in page and f"{mos:.2f}" in page
        assert note in " ".join(page.split())


def test_stored_jitter_is_read_at_any_clock(tmp_path: Path) -> None:
    """The stored jitter stays at 8 kHz; the store reads it, and its MOS, at any rate."""
    store = Store(str(tmp_path / "c.db"))
    try:
        store.insert_rows(
            [packet_to_row(rtcp_packet("j", report(block(source=1, jitter=480))), None, T0)]
        )
        at8, at48 = store.stream_quality("j"), store.stream_quality("j", 48000)
        assert [(s.jitter_ms, s.clock_hz) for s in at8 + at48] == [(60.0, 8000), (10.0, 48000)]
        assert at48[0].mos > at8[0].mos
    finally:
        store.close()
