"""HEP v3 parsing: every field kept, every malformed packet named and counted."""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asterfleet.capture.hep import (
    MAX_PAYLOAD,
    HepError,
    HepPacket,
    StreamFramer,
    encode_hep,
    parse_hep,
)
from tests.unit.test_hep_samples import INVITE, hep

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "hep_corpus"


def test_round_trip_keeps_every_field() -> None:
    pkt = parse_hep(hep(auth_key="k", correlation_id="corr-1", ip_proto=6))
    assert pkt == HepPacket(
        payload=INVITE,
        family=2,
        ip_proto=6,
        src_ip="10.0.0.1",
        dst_ip="10.0.0.2",
        src_port=5060,
        dst_port=5060,
        ts_sec=1_700_000_000,
        ts_usec=123456,
        proto_type=1,
        capture_id=7,
        auth_key="k",
        correlation_id="corr-1",
        capture_host="lb1",
    )
    assert pkt.transport == "tcp"
    assert pkt.ts_us == 1_700_000_000_123_456


def test_ipv6_addresses() -> None:
    pkt = parse_hep(hep(src_ip="2001:db8::1", dst_ip="::1"))
    assert (pkt.family, pkt.src_ip, pkt.dst_ip) == (10, "2001:db8::1", "::1")


def test_compressed_payload_is_inflated() -> None:
    pkt = parse_hep((CORPUS / "compressed.hep").read_bytes())
    assert pkt.payload == INVITE


def test_unknown_vendor_chunks_are_skipped() -> None:
    good = hep()
    extra = struct.pack("!HHH", 0x1234, 1, 9) + b"abc"
    packet = good + extra
    packet = packet[:4] + struct.pack("!H", len(packet)) + packet[6:]
    assert parse_hep(packet).payload == INVITE


def _set_len(packet: bytes) -> bytes:
    return packet[:4] + struct.pack("!H", len(packet)) + packet[6:]


def _bomb() -> bytes:
    body = zlib.compress(b"A" * (MAX_PAYLOAD * 4))
    return _set_len(hep(b"x")[:-7] + struct.pack("!HHH", 0, 16, 6 + len(body)) + body)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"", "truncated"),
        (b"HEP", "truncated"),
        (b"HEP2\x00\x10" + bytes(10), "bad_magic"),
        (b"GET / HTTP/1.1\r\n\r\n", "bad_magic"),
        (hep()[:-3], "bad_length"),  # header length no longer matches
        (_set_len(hep()[:-3]), "bad_length"),  # last chunk claims more than is there
        (_set_len(hep() + b"\x00\x00\x00"), "truncated"),  # half a chunk header
        (_set_len(hep() + struct.pack("!HHH", 0, 7, 2)), "bad_length"),  # chunk shorter than header
        (_set_len(hep() + struct.pack("!HHH", 0, 7, 9) + b"abc"), "bad_chunk"),  # 3-byte port
        (_set_len(hep() + struct.pack("!HHH", 0, 3, 8) + b"ab"), "bad_chunk"),  # 2-byte IPv4
        (_set_len(hep(b"x")[:-7]), "no_payload"),
        (_bomb(), "oversized"),
        (_set_len(hep(b"x")[:-7] + struct.pack("!HHH", 0, 16, 10) + b"nope"), "bad_chunk"),
    ],
)
def test_malformed_packets_are_named(packet: bytes, reason: str) -> None:
    with pytest.raises(HepError) as err:
        parse_hep(packet)
    assert err.value.reason == reason


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(HepError, match="oversized"):
        encode_hep(HepPacket(payload=b"x" * 70000))


def test_stream_framer_cuts_packets_across_reads() -> None:
    a, b = hep(), hep(correlation_id="second")
    stream = a + b
    framer = StreamFramer()
    got: list[bytes] = []
    for i in range(0, len(stream), 7):
        got += framer.feed(stream[i : i + 7])
    assert got == [a, b]
    assert framer.pending == 0 and framer.error is None


def test_stream_framer_stops_at_garbage_but_keeps_what_came_before() -> None:
    framer = StreamFramer()
    assert framer.feed(hep() + b"GARBAGE!") == [hep()]
    assert framer.error is not None and framer.error.reason == "bad_magic"
    assert framer.feed(hep()) == []


@pytest.mark.parametrize("path", sorted(CORPUS.iterdir()), ids=lambda p: p.name)
def test_corpus_files_parse_or_fail_cleanly(path: Path) -> None:
    with contextlib.suppress(HepError):
        parse_hep(path.read_bytes())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_never_crash_the_parser(data: bytes) -> None:
    for candidate in (data, b"HEP3" + struct.pack("!H", len(data) + 6) + data):
        with contextlib.suppress(HepError):
            parse_hep(candidate)
        framer = StreamFramer()
        framer.feed(candidate)


_SEEDS = [p.read_bytes() for p in sorted(CORPUS.iterdir())]


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_SEEDS),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8),
    st.integers(0, 400),
)
def test_fuzz_mutated_corpus_never_crashes_the_parser(
    seed: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    for candidate in (bytes(data), bytes(data[:cut]), _set_len(bytes(data))):
        with contextlib.suppress(HepError):
            parse_hep(candidate)


def test_auth_key_is_checked_before_a_compressed_payload_is_inflated() -> None:
    """An unauthenticated sender never makes the collector decompress: a
    payload that would inflate past the limit is rejected for its key."""
    from asterfleet.capture.hep import CHUNK_HEADER_LEN, PAYLOAD, PAYLOAD_ZIP

    bomb = zlib.compress(b"\0" * 10_000_000, 9)
    packet = encode_hep(HepPacket(payload=b"x", auth_key="wrong"))
    # Swap the plain payload chunk (type 15, 1 byte) for the zipped bomb.
    plain = struct.pack("!HHH", 0, PAYLOAD, CHUNK_HEADER_LEN + 1) + b"x"
    zipped = struct.pack("!HHH", 0, PAYLOAD_ZIP, CHUNK_HEADER_LEN + len(bomb)) + bomb
    body = packet[6:].replace(plain, zipped)
    packet = b"HEP3" + struct.pack("!H", 6 + len(body)) + body
    with pytest.raises(HepError) as wrong:
        parse_hep(packet, b"s3cret")
    assert wrong.value.reason == "auth"
    with pytest.raises(HepError) as right_key_bomb:
        parse_hep(packet.replace(b"wrong", b"right"), b"right")
    assert right_key_bomb.value.reason == "oversized"


@pytest.mark.parametrize(
    ("sent", "expected", "ok"),
    [
        ("s3cret", b"s3cret", True),
        (None, b"s3cret", False),  # no key chunk at all
        ("s3cre", b"s3cret", False),  # a prefix is not the key
        ("s3cret\0", b"s3cret", True),  # C senders may include the NUL
        ("S3CRET", b"s3cret", False),
    ],
)
def test_auth_key_table(sent: str | None, expected: bytes, ok: bool) -> None:
    packet = encode_hep(HepPacket(payload=b"OPTIONS sip:x SIP/2.0\r\n\r\n", auth_key=sent))
    if ok:
        assert parse_hep(packet, expected).auth_key == sent.rstrip("\0")  # type: ignore[union-attr]
    else:
        with pytest.raises(HepError) as err:
            parse_hep(packet, expected)
        assert err.value.reason == "auth"
