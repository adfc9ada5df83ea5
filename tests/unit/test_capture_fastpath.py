"""The compiled fast path (``capture/_hepfast.pyx``) stores exactly what the
Python path stores.

Every packet the compiled path turns into a row gives the row the Python
path gives (``packet_to_row``), field for field, and the same bytes once
decoded from the binary COPY form; every packet it rejects, the Python path
rejects for the same reason; what it is unsure of it leaves to the Python
path. Random bytes never crash it.
"""

from __future__ import annotations

import socket
import struct
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asterfleet.capture import collector

try:
    from asterfleet.capture import _hepfast
except ImportError:  # every install with a C compiler has it: CI must not skip this
    pytest.fail(
        "the compiled fast path (capture/_hepfast.pyx) is not built: install gcc and "
        "python3-dev, then `.venv/bin/pip install -e '.[dev]'` (or `make deps`)",
        pytrace=False,
    )
from asterfleet.capture.collector import (
    PARSER_IMPL,
    Batch,
    packet_to_row,
    parse_batch,
    parse_for_store,
)
from asterfleet.capture.hep import (
    HepError,
    HepPacket,
    StreamFramer,
    encode_hep,
    frame_end,
    split_frames,
)
from asterfleet.capture.sip_index import SipError
from asterfleet.capture.store import COLUMNS, COPY_SIGNATURE, COPY_TRAILER, COPY_TYPES, DAY_US
from tests.unit.test_hep_samples import INVITE, OK, hep

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "hep_corpus"
NOW = 1_800_000_000_000_000

Outcome = tuple[str, Any]


def decode_copy(data: bytes) -> list[tuple[Any, ...]]:
    """Binary COPY tuples (no signature) → rows, as PostgreSQL reads them."""
    rows = []
    pos = 0
    while pos < len(data):
        (count,) = struct.unpack_from("!h", data, pos)
        pos += 2
        assert count == len(COLUMNS)
        row: list[Any] = []
        for kind in COPY_TYPES:
            (size,) = struct.unpack_from("!i", data, pos)
            pos += 4
            if size < 0:
                row.append(None)
                continue
            body = data[pos : pos + size]
            assert len(body) == size, "a field runs past the buffer"
            pos += size
            if kind in ("int8", "int4"):
                assert size == (8 if kind == "int8" else 4)
                row.append(int.from_bytes(body, "big", signed=True))
            elif kind == "bool":
                assert body in (b"\x00", b"\x01")
                row.append(body == b"\x01")
            elif kind == "bytea":
                row.append(bytes(body))
            else:
                row.append(body.decode("utf-8"))  # PostgreSQL refuses invalid UTF-8
        rows.append(tuple(row))
    return rows


def python_outcome(packet: bytes, auth: bytes | None) -> Outcome:
    try:
        return "row", packet_to_row(packet, auth, NOW)
    except (HepError, SipError) as exc:
        return "reject", exc.reason


def compiled_outcome(packet: bytes, auth: bytes | None) -> Outcome:
    """The compiled path's verdict on one packet, checked in both output forms."""
    copy, rows, stored, days, left, rejected = _hepfast.parse_packets([packet], auth, NOW, False)
    bcopy, brows, bstored, bdays, bleft, brejected = _hepfast.parse_packets(
        [packet], auth, NOW, True
    )
    assert (copy, brows) == (b"", [])
    assert (stored, days, left, rejected) == (bstored, bdays, bleft, brejected)
    assert decode_copy(bcopy) == rows
    if left:
        assert left == [packet] and not rows and not rejected
        return "left", None
    if rejected:
        assert rejected == {next(iter(rejected)): 1} and not rows
        return "reject", next(iter(rejected))
    assert stored == 1 and len(rows) == 1
    assert days == {rows[0][0] // DAY_US}
    return "row", rows[0]


def assert_same(packet: bytes, auth: bytes | None = None) -> str:
    """The compiled verdict agrees with the Python one; returns it."""
    fast = compiled_outcome(packet, auth)
    if fast[0] != "left":
        assert fast == python_outcome(packet, auth)
    return fast[0]


def test_the_collector_runs_the_compiled_parser() -> None:
    assert PARSER_IMPL == "compiled"
    assert COPY_SIGNATURE == _hepfast.SIGNATURE
    assert COPY_TRAILER == _hepfast.TRAILER


def raw_hep(*chunks: tuple[int, bytes]) -> bytes:
    body = b"".join(struct.pack("!HHH", 0, t, 6 + len(v)) + v for t, v in chunks)
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def kamailio_siptrace(payload: bytes) -> bytes:
    """Kamailio siptrace's HEPv3 chunk order (ports 16 bit, capture id 32 bit)."""
    return raw_hep(
        (1, b"\x02"),
        (2, b"\x11"),
        (3, bytes([192, 0, 2, 10])),
        (4, bytes([192, 0, 2, 20])),
        (7, struct.pack("!H", 5060)),
        (8, struct.pack("!H", 5080)),
        (9, struct.pack("!I", 1_764_000_000)),
        (10, struct.pack("!I", 999_999)),
        (11, b"\x01"),
        (12, struct.pack("!I", 2001)),
        (15, payload),
    )


def asterisk_res_hep(payload: bytes) -> bytes:
    """Asterisk res_hep's order: auth key, the call's UUID as correlation id,
    capture name, over TCP and IPv6."""
    return raw_hep(
        (1, b"\x0a"),
        (2, b"\x06"),
        (5, bytes(15) + b"\x01"),
        (6, bytes.fromhex("20010db8000000000000000000000002")),
        (7, struct.pack("!H", 5061)),
        (8, struct.pack("!H", 5060)),
        (9, struct.pack("!I", 1_764_000_001)),
        (10, struct.pack("!I", 5)),
        (11, b"\x01"),
        (12, struct.pack("!I", 42)),
        (14, b"s3cret"),
        (17, b"1764000001.42"),
        (19, b"ast2 \x00"),
        (15, payload),
    )


BYE_COMPACT = (
    b"bye sip:bob@192.0.2.20 SIP/2.0\r\n"
    b"i:  abc@host \r\n"
    b"f: <tel:+4930123;phone-context=x>;tag=1\r\n"
    b"t: Bob <sip:bob:pw@b.example;user=phone>;TAG=9\r\n"
    b"CSeq :\t 2 \t BYE\x1c\r\n"
    b"Server: pbx\r\n\r\n"
)


@pytest.mark.parametrize(
    ("packet", "auth", "verdict"),
    [
        (kamailio_siptrace(INVITE), None, "row"),
        (kamailio_siptrace(OK), None, "row"),
        (kamailio_siptrace(BYE_COMPACT), None, "row"),
        (asterisk_res_hep(INVITE), b"s3cret", "row"),
        (asterisk_res_hep(INVITE), b"other", "reject"),
        (asterisk_res_hep(INVITE), None, "row"),
        (hep(INVITE, src_ip="2001:db8::1", dst_ip="::1", ip_proto=6), None, "row"),
        (hep(INVITE, ts_sec=0, ts_usec=5), None, "row"),  # no time: stamped now
        (hep(INVITE, ip_proto=99), None, "row"),
        (hep(INVITE.replace(b"Call-ID", b"Call\x00-ID")), None, "row"),  # NULs dropped
        (hep(INVITE.replace(b"Call-ID: call-1@test", b"X: y")), None, "reject"),
        (hep(b"GET / HTTP/1.1\r\n\r\n"), None, "reject"),
        (hep(INVITE, proto_type=100), None, "reject"),
        (hep(b""), None, "reject"),
        (raw_hep((1, b"\x02"), (15, OK))[:-3], None, "reject"),
        (hep(INVITE.replace(b"softphone", "téléphone".encode())), None, "left"),
        (raw_hep((11, b"\x01"), (16, zlib.compress(INVITE))), None, "left"),
        (hep(b'{"type":200}', proto_type=5, correlation_id="c1"), None, "left"),
    ],
    ids=[
        "kamailio-invite",
        "kamailio-200",
        "kamailio-compact-bye",
        "asterisk-auth-ok",
        "asterisk-auth-wrong",
        "asterisk-no-auth-asked",
        "ipv6-tcp",
        "no-timestamp",
        "unknown-transport",
        "nul-in-head",
        "no-call-id",
        "not-sip",
        "not-sip-proto-type",
        "empty-payload",
        "truncated",
        "utf8-user-agent",
        "compressed",
        "rtcp",
    ],
)
def test_recorded_shapes_give_the_python_rows(
    packet: bytes, auth: bytes | None, verdict: str
) -> None:
    assert assert_same(packet, auth) == verdict


def test_compact_and_spaced_headers_are_read_like_the_python_path() -> None:
    kind, row = compiled_outcome(kamailio_siptrace(BYE_COMPACT), None)
    assert kind == "row"
    values = dict(zip(COLUMNS, row, strict=True))
    assert values["method"] == "BYE"
    assert values["call_id"] == "abc@host"
    assert values["cseq"] == "2 BYE"
    assert (values["from_user"], values["to_user"]) == ("+4930123", "bob")
    assert values["user_agent"] == "pbx"
    assert values["opens_call"] is False


def test_the_recorded_corpus_gets_the_python_verdicts() -> None:
    for path in sorted(CORPUS.iterdir()):
        assert_same(path.read_bytes())


def test_a_batch_splits_into_copy_tuples_python_rows_and_rejects() -> None:
    rtcp = encode_hep(
        HepPacket(
            payload=(CORPUS / "rtcp_not_sip.hep").read_bytes()[:0] + b"{}",
            proto_type=5,
            correlation_id="c1",
        )
    )
    batch = [hep(INVITE), hep(OK), b"junk", rtcp, hep("ü".encode() + INVITE)]
    parsed = parse_for_store(batch, None, NOW, binary=True)
    rows, rejected = parse_batch(batch, None, NOW)
    assert parsed.copied == 2
    assert decode_copy(parsed.copy) == rows[:2]
    assert Counter(parsed.rejected) == rejected


# -- random packets ----------------------------------------------------------

_WS = st.sampled_from(["", " ", "\t", "  ", " \x1c", "\x0b"])
_NAMES = {
    "call_id": ["Call-ID", "call-id", "CALL-ID", "i", "I"],
    "from": ["From", "from", "f", "F"],
    "to": ["To", "TO", "t"],
    "cseq": ["CSeq", "cseq"],
    "ua": ["User-Agent", "user-agent", "Server", "server"],
}
_ASCII = st.text(alphabet=st.sampled_from(list("abcXYZ019@:;<>.-_+ \t\x1c\x00\"'=")), max_size=30)
#: Mostly ASCII (what the compiled path takes), sometimes not (what it leaves).
_TEXT = (
    _ASCII
    | _ASCII
    | _ASCII
    | st.text(
        alphabet=st.sampled_from([*"ab @:;<> \t", "é", "\x85", "\xa0", "\u2003"]), max_size=10
    )
)


@st.composite
def sip_message(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        method = draw(
            st.sampled_from(["INVITE", "ACK", "bye", "OPTIONS", "REGISTER", "Update", "X1", ""])
        )
        uri = draw(st.sampled_from(["sip:a@b", "sip:a@b SIP/2.0", "", "tel:+1"]))
        version = draw(st.sampled_from(["SIP/2.0", "SIP/2.0", "SIP/3.0", "sip/2.0"]))
        first = f"{method} {uri} {version}"
        if draw(st.integers(0, 3)):
            first = f"{method or 'INVITE'} sip:a@b SIP/2.0"
    else:
        first = "SIP/2.0 " + draw(st.sampled_from(["200 OK", "180", "099 x", "20", "4x4", "486"]))
    lines = [first]
    keys = draw(st.lists(st.sampled_from(sorted(_NAMES)), max_size=6))
    if draw(st.integers(0, 5)):  # mostly with a Call-ID
        keys.insert(draw(st.integers(0, len(keys))), "call_id")
    for key in keys:
        name = draw(st.sampled_from(_NAMES[key]))
        value = draw(
            _TEXT.filter(lambda v, key=key: key != "call_id" or v.strip())
            | st.sampled_from(
                [
                    '"A" <sip:alice@example.com>;tag=1',
                    "<sip:100@h>",
                    "sip:bob@h;x=1",
                    "<tel:+123;p=1>",
                    "1 INVITE",
                    " 22 \t BYE ",
                    "c-1@host",
                    "<sip:u:pw@h>;TaG=x",
                    " T e L :+9",
                ]
            )
        )
        lines.append(f"{name}{draw(_WS)}:{draw(_WS)}{value}")
    lines += draw(st.lists(_TEXT, max_size=2))
    text = "\r\n".join(lines) + draw(st.sampled_from(["\r\n\r\n", "\r\n", "", "\r\n\r\nbody"]))
    return text.encode("utf-8")


@st.composite
def hep_packet(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    v6 = draw(st.booleans())
    pkt = HepPacket(
        payload=draw(sip_message()),
        ip_proto=draw(st.sampled_from([17, 6, 132, 0, 255])),
        src_ip=str(draw(st.ip_addresses(v=6 if v6 else 4))),
        dst_ip=str(draw(st.ip_addresses(v=6 if v6 else 4))),
        src_port=draw(st.integers(0, 65535)),
        dst_port=draw(st.integers(0, 65535)),
        ts_sec=draw(st.sampled_from([0, 1, 1_764_000_000, 2**32 - 1])),
        ts_usec=draw(st.integers(0, 2**32 - 1)),
        proto_type=draw(st.sampled_from([1] * 8 + [5, 34])),
        capture_id=draw(st.integers(0, 2**32 - 1)),
        auth_key=draw(st.sampled_from([None, "k", "k ", "k\x00", "x"])),
        correlation_id=draw(_TEXT),
        capture_host=draw(_TEXT),
    )
    data = encode_hep(pkt)
    mutation = draw(st.sampled_from(["none"] * 5 + ["flip", "cut", "grow"]))
    if mutation == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    elif mutation == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif mutation == "grow":
        data += draw(st.binary(max_size=12))
        data = data[:4] + struct.pack("!H", len(data) & 0xFFFF) + data[6:]
    auth = draw(st.sampled_from([None, None, b"x", b"", (pkt.auth_key or "").encode()]))
    return data, auth


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hep_packet())
def test_random_and_mutated_packets_get_the_python_verdict(
    case: tuple[bytes, bytes | None],
) -> None:
    assert_same(*case)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.none() | st.just(b"k"))
def test_random_bytes_never_crash_the_compiled_parser(data: bytes, auth: bytes | None) -> None:
    # Framed as HEP (magic and length right) half the time, so the walk runs.
    if data and data[0] & 1:
        data = b"HEP3" + struct.pack("!H", len(data) + 6) + data
    assert_same(data, auth)


@st.composite
def plain_packet(draw: st.DrawFn) -> bytes:
    """ASCII everywhere, SIP, uncompressed: nothing for the Python path."""
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "prack", "Info", "NOTIFY"]))
    lines = [
        draw(st.sampled_from([f"{method} sip:x@y SIP/2.0", "SIP/2.0 183 Ringing", "SIP/2.0 600"]))
    ]
    keys = ["call_id", *draw(st.lists(st.sampled_from(sorted(_NAMES)), max_size=6))]
    for key in draw(st.permutations(keys)):
        value = draw(_ASCII | st.sampled_from(['"A" <sip:al@x>;tag=1', "<tel:+1>", " 2  ACK"]))
        lines.append(f"{draw(st.sampled_from(_NAMES[key]))}{draw(_WS)}:{draw(_WS)}{value}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode()
    v = draw(st.sampled_from([4, 6]))
    return encode_hep(
        HepPacket(
            payload=payload,
            src_ip=str(draw(st.ip_addresses(v=v))),
            dst_ip=str(draw(st.ip_addresses(v=v))),
            ip_proto=draw(st.integers(0, 255)),
            ts_sec=draw(st.integers(0, 2**32 - 1)),
            ts_usec=draw(st.integers(0, 2**32 - 1)),
            capture_id=draw(st.integers(0, 2**32 - 1)),
            correlation_id=draw(_ASCII),
            capture_host=draw(_ASCII),
        )
    )


@settings(max_examples=150, deadline=None)
@given(plain_packet())
def test_plain_sip_packets_are_all_decided_by_the_compiled_path(packet: bytes) -> None:
    assert assert_same(packet) != "left"


# -- TCP chunks ----------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.lists(plain_packet() | hep_packet().map(lambda case: case[0]), max_size=8))
def test_a_framed_chunk_parses_as_its_packets_one_by_one(packets: list[bytes]) -> None:
    framer = StreamFramer()
    chunk, count = framer.feed_chunk(b"".join(packets))
    whole = split_frames(chunk)
    one_by_one = _hepfast.parse_packets(whole, None, NOW, True)
    framed = _hepfast.parse_packets([chunk], None, NOW, True, True)
    assert count == len(whole)
    assert framed[0] == one_by_one[0] and framed[2:] == one_by_one[2:]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=4))
def test_the_compiled_framer_cuts_where_the_python_one_does(data: bytes, cuts: list[int]) -> None:
    stream = b"HEP3" + struct.pack("!H", 6 + len(data) // 2) + data
    buf = bytearray(stream)
    assert _hepfast.frame_end(buf) == frame_end(buf)
    # Fed in pieces, the chunks are the packets feed() returns, back to back.
    chunked, listed = StreamFramer(), StreamFramer()
    got, want, count = b"", [], 0
    for lo, hi in zip([0, *sorted(cuts)], [*sorted(cuts), len(stream)], strict=True):
        chunk, n = chunked.feed_chunk(stream[lo:hi])
        got += chunk
        count += n
        want += listed.feed(stream[lo:hi])
    assert got == b"".join(want) and count == len(want)
    assert (chunked.error is None) == (listed.error is None)
    assert chunked.pending == listed.pending


def test_without_the_compiled_module_the_python_path_stores_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An install without a C compiler: same rows, same rejects, TCP chunks included.
    stream = b"".join([hep(INVITE), hep(OK), hep(b"junk"), kamailio_siptrace(BYE_COMPACT)])
    chunk, count = StreamFramer().feed_chunk(stream)
    batch = Batch([chunk, stream[:40]], count + 1, framed=True)
    compiled = parse_for_store(batch, None, NOW, binary=False)
    monkeypatch.setattr(collector, "_hepfast", None)
    python = parse_for_store(batch, None, NOW, binary=False)
    assert python.rows == compiled.rows and len(python.rows) == 3
    assert python.rejected == compiled.rejected == Counter({"not_sip": 1, "bad_length": 1})


def test_datagrams_arrive_as_one_chunk_and_the_odd_ones_apart() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        receiver = _hepfast.DatagramReceiver(rx.fileno(), batch=8)
        assert receiver.receive() == (b"", 0, [])
        sent = [hep(INVITE), b"HEP3\x00\x09short", hep(OK), b"", b"not hep"]
        for datagram in sent:
            tx.sendto(datagram, rx.getsockname())
        got: list[tuple[bytes, int, list[bytes]]] = []
        deadline = time.monotonic() + 5
        while sum(n + len(odd) for _, n, odd in got) < len(sent) and time.monotonic() < deadline:
            got.append(receiver.receive())
    assert b"".join(chunk for chunk, _, _ in got) == hep(INVITE) + hep(OK)
    assert sum(n for _, n, _ in got) == 2
    assert [d for _, _, odd in got for d in odd] == [b"HEP3\x00\x09short", b"", b"not hep"]
