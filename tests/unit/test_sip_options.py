"""SIP OPTIONS helpers: request building, status parsing, URI parsing, and
probe() against small in-process SIP responders on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

import pytest

from asterfleet.errors import UsageError
from asterfleet.sip.options import (
    ProbeResult,
    SipUri,
    build_options,
    parse_sip_uri,
    parse_status,
    probe,
)

# --------------------------------------------------------------------------
# build_options
# --------------------------------------------------------------------------

BUILD_CASES = [
    pytest.param(
        ("10.0.0.5", 5060, "udp", "10.0.0.9", 40000, "cid-1@x", 1, "z9hG4bKabc", "t1"),
        [
            "OPTIONS sip:10.0.0.5:5060 SIP/2.0",
            "Via: SIP/2.0/UDP 10.0.0.9:40000;branch=z9hG4bKabc;rport",
            "To: <sip:10.0.0.5:5060>",
            "From: <sip:asterfleet-probe@10.0.0.9>;tag=t1",
            "Call-ID: cid-1@x",
            "CSeq: 1 OPTIONS",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ],
        id="udp-ipv4",
    ),
    pytest.param(
        ("box.example", 5080, "TCP", "127.0.0.1", 41000, "c2", 7, "abc", "t2"),
        [
            "OPTIONS sip:box.example:5080;transport=tcp SIP/2.0",
            "Via: SIP/2.0/TCP 127.0.0.1:41000;branch=z9hG4bKabc;rport",
            "CSeq: 7 OPTIONS",
            "Contact: <sip:asterfleet-probe@127.0.0.1:41000;transport=tcp>",
        ],
        id="tcp-hostname-branch-cookie-added",
    ),
    pytest.param(
        ("::1", 5060, "udp", "::1", 50000, "c3", 2, "z9hG4bK1", "t3"),
        [
            "OPTIONS sip:[::1]:5060 SIP/2.0",
            "Via: SIP/2.0/UDP [::1]:50000;branch=z9hG4bK1;rport",
            "From: <sip:asterfleet-probe@[::1]>;tag=t3",
        ],
        id="ipv6-bracketed",
    ),
]


@pytest.mark.parametrize(("args", "expected_lines"), BUILD_CASES)
def test_build_options(
    args: tuple[str, int, str, str, int, str, int, str, str], expected_lines: list[str]
) -> None:
    data = build_options(*args)
    assert data.endswith(b"\r\n\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF everywhere
    lines = data.decode().split("\r\n")
    for line in expected_lines:
        assert line in lines
    assert lines[0] == expected_lines[0]


BUILD_BAD = [
    pytest.param({"transport": "ws"}, "transport", id="bad-transport"),
    pytest.param({"call_id": "a\r\nVia: x"}, "Call-ID", id="crlf-injection"),
    pytest.param({"call_id": ""}, "Call-ID", id="empty-call-id"),
    pytest.param({"from_tag": "a b"}, "From tag", id="space-in-tag"),
    pytest.param({"target_port": 0}, "target port", id="port-zero"),
    pytest.param({"local_port": 70000}, "local port", id="port-too-big"),
    pytest.param({"cseq": -1}, "CSeq", id="negative-cseq"),
]


@pytest.mark.parametrize(("override", "message"), BUILD_BAD)
def test_build_options_rejects_bad_input(override: dict[str, object], message: str) -> None:
    kwargs: dict[str, object] = {
        "target_host": "127.0.0.1",
        "target_port": 5060,
        "transport": "udp",
        "local_host": "127.0.0.1",
        "local_port": 40000,
        "call_id": "c",
        "cseq": 1,
        "branch": "z9hG4bKx",
        "from_tag": "t",
    }
    kwargs.update(override)
    with pytest.raises(UsageError, match=message):
        build_options(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# parse_status
# --------------------------------------------------------------------------

STATUS_CASES = [
    (b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", 200),
    (b"SIP/2.0 503 Service Unavailable\r\n\r\n", 503),
    (b"SIP/2.0 100 Trying\r\n", 100),
    (b"SIP/2.0 404\r\n\r\n", 404),
    (b"SIP/2.0 486 Busy Here\n\n", 486),
    (b"OPTIONS sip:a SIP/2.0\r\n\r\n", None),
    (b"SIP/2.0 99 Odd\r\n", None),
    (b"SIP/2.0 700 Nope\r\n", None),
    (b"SIP/1.0 200 OK\r\n", None),
    (b"HTTP/1.1 200 OK\r\n", None),
    (b"SIP/2.0 2000 OK\r\n", None),
    (b"", None),
    (b"\x00\xff\xfe", None),
]


@pytest.mark.parametrize(("data", "status"), STATUS_CASES)
def test_parse_status(data: bytes, status: int | None) -> None:
    assert parse_status(data) == status


# --------------------------------------------------------------------------
# parse_sip_uri
# --------------------------------------------------------------------------

URI_CASES = [
    ("sip:127.0.0.1", SipUri("127.0.0.1", 5060, "udp")),
    ("sip:127.0.0.1:5080", SipUri("127.0.0.1", 5080, "udp")),
    ("sip:127.0.0.1:5080;transport=tcp", SipUri("127.0.0.1", 5080, "tcp")),
    ("SIP:10.1.2.3:5061;transport=TLS", SipUri("10.1.2.3", 5061, "tls")),
    ("sip:box-1.example.com;transport=udp", SipUri("box-1.example.com", 5060, "udp")),
    ("sip:Box.Example.COM.:5062", SipUri("box.example.com", 5062, "udp")),
    ("sip:[::1]", SipUri("::1", 5060, "udp")),
    ("sip:[::1]:5070;transport=tcp", SipUri("::1", 5070, "tcp")),
    ("sip:[2001:DB8:0:0::1]:5060", SipUri("2001:db8::1", 5060, "udp")),
    ("sip:asterisk@10.0.0.1:5060;lr;transport=sctp", SipUri("10.0.0.1", 5060, "sctp")),
    ("  sip:10.0.0.1:5060  ", SipUri("10.0.0.1", 5060, "udp")),
]


@pytest.mark.parametrize(("uri", "expected"), URI_CASES)
def test_parse_sip_uri(uri: str, expected: SipUri) -> None:
    assert parse_sip_uri(uri) == expected


URI_BAD = [
    ("", "empty"),
    ("10.0.0.1:5060", "does not start with 'sip:'"),
    ("sips:10.0.0.1", "sips"),
    ("http://10.0.0.1", "does not start"),
    ("sip:", "not of the form"),
    ("sip:10.0.0.1:", "port ''"),
    ("sip:10.0.0.1:abc", "not a number"),
    ("sip:10.0.0.1:0", "outside"),
    ("sip:10.0.0.1:65536", "outside"),
    ("sip:10.0.0.1;transport=ws", "transport 'ws'"),
    ("sip:::1:5060", "brackets"),
    ("sip:[::1", "not of the form"),
    ("sip:[not-ipv6]:5060", "not an IPv6"),
    ("sip:[10.0.0.1]:5060", "not an IPv6"),
    ("sip:999.1.1.1", "not a valid host"),
    ("sip:bad_host!:5060", "not a valid host"),
    ("sip:host name", "not of the form"),
]


@pytest.mark.parametrize(("uri", "message"), URI_BAD)
def test_parse_sip_uri_rejects(uri: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_sip_uri(uri)
    text = str(info.value)
    assert message in text
    assert repr(uri) in text  # the message names the input


def test_sip_uri_round_trip() -> None:
    for uri in ("sip:127.0.0.1:5080;transport=tcp", "sip:[::1]:5060;transport=udp"):
        assert str(parse_sip_uri(uri)) == uri
        assert parse_sip_uri(str(parse_sip_uri(uri))) == parse_sip_uri(uri)


# --------------------------------------------------------------------------
# probe() against in-process responders
# --------------------------------------------------------------------------


def _header(request: bytes, name: bytes) -> bytes:
    for line in request.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    raise AssertionError(f"no {name!r} in {request!r}")


def _response(request: bytes, status: str, call_id: bytes | None = None) -> bytes:
    cid = call_id if call_id is not None else _header(request, b"call-id")
    return (
        b"SIP/2.0 " + status.encode() + b"\r\n"
        b"Via: " + _header(request, b"via") + b"\r\n"
        b"i: " + cid + b"\r\n"  # compact form of Call-ID
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )


Reply = Callable[[bytes], list[bytes]]


class _UdpResponder(asyncio.DatagramProtocol):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(data)
        assert self.transport is not None
        for answer in self.reply(data):
            self.transport.sendto(answer, addr)


async def _udp_probe(reply: Reply, timeout: float = 1.0) -> tuple[ProbeResult, list[bytes]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _UdpResponder(reply), local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        result = await probe("127.0.0.1", port, "udp", timeout)
    finally:
        transport.close()
    return result, proto.received


def test_probe_udp_answers_200() -> None:
    result, received = asyncio.run(_udp_probe(lambda req: [_response(req, "200 OK")]))
    assert result.status == 200 and result.error is None and result.ok
    assert result.rtt_ms is not None and 0 <= result.rtt_ms < 1000
    assert received[0].startswith(b"OPTIONS sip:127.0.0.1:")
    assert b"Via: SIP/2.0/UDP 127.0.0.1:" in received[0]


def test_probe_udp_skips_provisional_and_foreign_call_ids() -> None:
    def reply(req: bytes) -> list[bytes]:
        return [
            _response(req, "100 Trying"),
            _response(req, "500 Not Mine", call_id=b"someone-else"),
            b"garbage",
            _response(req, "503 Service Unavailable"),
        ]

    result, _ = asyncio.run(_udp_probe(reply))
    assert result.status == 503 and not result.ok and result.error is None


def test_probe_udp_retransmits_then_times_out() -> None:
    result, received = asyncio.run(_udp_probe(lambda req: [], timeout=1.2))
    assert result.status is None and result.rtt_ms is None
    assert result.error == "no answer within 1.2s"
    assert len(received) >= 2  # timer E: sent at 0 and 0.5 s
    assert len({_header(r, b"call-id") for r in received}) == 1


def test_probe_udp_answered_after_retransmission() -> None:
    def reply(req: bytes) -> list[bytes]:
        reply.count += 1  # type: ignore[attr-defined]
        return [] if reply.count == 1 else [_response(req, "200 OK")]  # type: ignore[attr-defined]

    reply.count = 0  # type: ignore[attr-defined]
    result, received = asyncio.run(_udp_probe(reply, timeout=2.0))
    assert result.status == 200
    assert len(received) == 2
    assert result.rtt_ms is not None and result.rtt_ms >= 400


def _closed_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_probe_refused(transport: str) -> None:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    result = asyncio.run(probe("127.0.0.1", _closed_port(kind), transport, 1.0))
    assert result == ProbeResult(None, None, "connection refused")


def test_probe_unresolvable_and_unsupported() -> None:
    result = asyncio.run(probe("no-such-host.invalid", 5060, "udp", 2.0))
    assert result.status is None and result.error is not None
    assert "resolve" in result.error or "no answer" in result.error
    result = asyncio.run(probe("127.0.0.1", 5060, "tls", 1.0))
    assert result.error == "transport 'tls' is not supported by the probe"


async def _tcp_probe(chunks: Callable[[bytes], list[bytes]], timeout: float = 1.0) -> ProbeResult:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await reader.read(4096)
        for chunk in chunks(data):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)
        await asyncio.sleep(timeout)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        return await probe("127.0.0.1", port, "tcp", timeout)
    finally:
        server.close()


def test_probe_tcp_handles_split_stream_and_bodies() -> None:
    def chunks(req: bytes) -> list[bytes]:
        body = b"v=0\r\n\r\nsomething"
        other = (
            b"SIP/2.0 200 OK\r\nCall-ID: other\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        mine = _response(req, "200 OK")
        stream = other + _response(req, "100 Trying") + mine
        return [stream[i : i + 7] for i in range(0, len(stream), 7)]

    result = asyncio.run(_tcp_probe(chunks))
    assert result.status == 200 and result.error is None


def test_probe_tcp_connection_closed() -> None:
    async def run() -> ProbeResult:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(10)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        try:
            return await probe("127.0.0.1", server.sockets[0].getsockname()[1], "tcp", 1.0)
        finally:
            server.close()

    result = asyncio.run(run())
    assert result.status is None
    assert result.error == "connection closed before a final answer"
