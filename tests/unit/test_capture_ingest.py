"""The ingest path's pure parts and its batching: listen addresses (with
TLS), a batch parsed in a writer process, many datagrams per system call,
and the names and bounds of PostgreSQL's day partitions."""

from __future__ import annotations

import socket
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asterfleet.capture import mmsg
from asterfleet.capture.collector import parse_batch
from asterfleet.capture.listen import Listen, parse_listen
from asterfleet.capture.store import DAY_US, _parse_bound, partition_name
from asterfleet.errors import UsageError
from tests.unit.test_hep_samples import INVITE, OK, hep


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:0.0.0.0:9060", [Listen("udp", "0.0.0.0", 9060)]),
        (
            "tcp:127.0.0.1:9060,tls:[::1]:9061",
            [Listen("tcp", "127.0.0.1", 9060), Listen("tls", "::1", 9061)],
        ),
        ("TLS:h:1", [Listen("tls", "h", 1)]),
    ],
)
def test_listen_addresses(text: str, expected: list[Listen]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["sctp:h:1", "tls:h", "tls::1", "udp:h:70000", ""])
def test_bad_listen_addresses_say_what_to_give(text: str) -> None:
    with pytest.raises(UsageError, match=r"tls:HOST:PORT|port must be|is empty"):
        parse_listen(text)


@pytest.mark.parametrize(
    ("packets", "stored", "rejected"),
    [
        ([hep(INVITE, auth_key="k"), hep(OK, auth_key="k")], ["INVITE", None], {}),
        ([hep(INVITE, auth_key="wrong"), hep(OK, auth_key="k")], [None], {"auth": 1}),
        ([b"HEP3\x00\x09x", hep(INVITE, auth_key="k")[:-1]], [], {"bad_length": 2}),
        (
            [hep(b"not sip at all", auth_key="k"), hep(b"hello", auth_key="k", proto_type=100)],
            [],
            {"not_sip": 2},
        ),
    ],
)
def test_a_writer_parses_its_batch_and_counts_what_it_rejects(
    packets: list[bytes], stored: list[str | None], rejected: dict[str, int]
) -> None:
    rows, reasons = parse_batch(packets, b"k", 0)
    assert [r[9] for r in rows] == stored  # the method column (None: a response)
    assert reasons == Counter(rejected)
    assert len(rows) + sum(reasons.values()) == len(packets)


@pytest.mark.skipif(not mmsg.available(), reason="no recvmmsg/sendmmsg in this C library")
def test_many_datagrams_per_system_call_arrive_whole_and_in_order() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        tx.connect(rx.getsockname())
        packets = [hep(INVITE.replace(b"call-1", f"c{i}".encode())) for i in range(300)]
        packets.append(b"x" * 9000)  # larger than most, smaller than the buffer
        assert mmsg.Sender(tx.fileno(), packets, batch=64).send(0, len(packets)) == 301
        receiver = mmsg.Receiver(rx.fileno(), batch=128, size=16384)
        got: list[bytes] = []
        for _ in range(10):
            chunk = receiver.receive()
            assert len(chunk) <= 128
            got += chunk
        assert got == packets
        assert receiver.receive() == []  # nothing waiting: no block, no error


@pytest.mark.parametrize(
    ("day", "name"),
    [(0, "sip_messages_p19700101"), (20_000, "sip_messages_p20241004")],
)
def test_partition_names_are_utc_days(day: int, name: str) -> None:
    assert partition_name(day) == name


@pytest.mark.parametrize(
    ("bound", "expected"),
    [
        (f"FOR VALUES FROM ('{DAY_US}') TO ('{2 * DAY_US}')", (DAY_US, 2 * DAY_US)),
        ("FOR VALUES FROM (MINVALUE) TO ('86400000000')", (None, DAY_US)),
        ("DEFAULT", (None, None)),
    ],
)
def test_partition_bounds_as_postgresql_prints_them(
    bound: str, expected: tuple[int | None, int | None]
) -> None:
    assert _parse_bound(bound) == expected


def _parse_both(data: bytes) -> tuple[object, object]:
    """parse_hep with the layouts it learnt, and with none (the chunk walk)."""
    from asterfleet.capture import hep as hep_module

    def outcome() -> object:
        try:
            return hep_module.parse_hep(data)
        except hep_module.HepError as exc:
            return exc.reason

    fast = outcome()
    saved = list(hep_module._layouts)
    hep_module._layouts.clear()
    try:
        walked = outcome()
    finally:
        hep_module._layouts[:] = saved
    return fast, walked


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    src=st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str),
    port=st.integers(0, 65535),
    ts=st.integers(0, 2**32 - 1),
    capture_id=st.integers(0, 2**32 - 1),
    name=st.text(max_size=20).filter(lambda t: "\x00" not in t),
    cut=st.integers(0, 200),
    flip=st.integers(0, 255),
)
def test_a_learnt_layout_reads_exactly_what_the_chunk_walk_reads(
    src: str, port: int, ts: int, capture_id: int, name: str, cut: int, flip: int
) -> None:
    from asterfleet.capture.hep import HepPacket, encode_hep

    dst = "::1" if ":" in src else "10.9.8.7"
    packet = encode_hep(
        HepPacket(INVITE, src_ip=src, dst_ip=dst, src_port=port, dst_port=5060, ts_sec=ts,
                  ts_usec=ts % 1_000_000, capture_id=capture_id, capture_host=name.strip())
    )  # fmt: skip
    fast, walked = _parse_both(packet)  # learns this sender's layout
    assert fast == walked and not isinstance(fast, str)
    fast, walked = _parse_both(packet)  # read through it
    assert fast == walked
    # A byte changed anywhere (a header, a length, a value): same answer both ways.
    at = cut % len(packet)
    mutated = packet[:at] + bytes([packet[at] ^ flip]) + packet[at + 1 :]
    assert _parse_both(mutated)[0] == _parse_both(mutated)[1]
