"""SIP OPTIONS probing: the node agent's health check of its box.

Pure helpers (:func:`build_options`, :func:`parse_status`,
:func:`parse_sip_uri`) plus :func:`probe`, which sends one OPTIONS over UDP or
TCP and reports the final status and round-trip time. :func:`probe` never
raises for network trouble: the error text goes in the result, so a probe
loop can record it and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import secrets
import socket
import time
from dataclasses import dataclass

from asterfleet.errors import UsageError

DEFAULT_SIP_PORT = 5060
# Transports a SIP URI may name; probe() itself speaks udp and tcp only.
URI_TRANSPORTS = ("udp", "tcp", "tls", "sctp")
PROBE_TRANSPORTS = ("udp", "tcp")
BRANCH_COOKIE = "z9hG4bK"
USER_AGENT = "asterfleet-probe"

# RFC 3261 timer T1: UDP retransmissions start at 500 ms and double.
_T1 = 0.5
_T2 = 4.0
_MAX_MESSAGE = 65535

_STATUS_LINE = re.compile(rb"^SIP/2\.0 ([1-6][0-9][0-9])(?: [^\r\n]*)?\r?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_URI = re.compile(
    r"^sip:(?:(?P<user>[^@\s]+)@)?"
    r"(?P<host>\[[^\]\s]*\]|[^:;?\s\[\]]+)"
    r"(?::(?P<port>[^;?\s]*))?"
    r"(?P<params>;[^?\s]*)?"
    r"(?P<headers>\?\S*)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SipUri:
    """Where a box listens: host (IPv6 without brackets), port, transport."""

    host: str
    port: int = DEFAULT_SIP_PORT
    transport: str = "udp"

    @property
    def host_for_uri(self) -> str:
        """The host as it is written in a URI (IPv6 literals in brackets)."""
        return _uri_host(self.host)

    def __str__(self) -> str:
        return f"sip:{self.host_for_uri}:{self.port};transport={self.transport}"


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one OPTIONS probe.

    ``status`` is the final SIP status code (None when no final answer came),
    ``rtt_ms`` the time from first send to that answer, ``error`` a short
    human-readable reason when there was no answer.
    """

    status: int | None
    rtt_ms: float | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True when the box answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def _uri_host(host: str) -> str:
    return f"[{host}]" if _is_ipv6(host) else host


def parse_sip_uri(uri: str) -> SipUri:
    """Parse ``sip:host[:port][;transport=udp|tcp|tls|sctp]``.

    The port defaults to 5060 and the transport to udp; IPv6 hosts are written
    in brackets (``sip:[::1]:5060``) and returned without them. A user part
    and other URI parameters are accepted and ignored. Bad input raises
    :class:`UsageError` naming it.
    """
    if not isinstance(uri, str):
        raise UsageError(f"SIP URI must be a string, got {uri!r}")

    def bad(why: str) -> UsageError:
        return UsageError(
            f"bad SIP URI {uri!r}: {why} (expected sip:host[:port][;transport=udp|tcp|tls|sctp])"
        )

    text = uri.strip()
    if not text:
        raise bad("it is empty")
    if text.lower().startswith("sips:"):
        raise bad("sips: URIs are not supported, use sip:...;transport=tls")
    if not text.lower().startswith("sip:"):
        raise bad("it does not start with 'sip:'")
    hostport = text[4:].split(";", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    if not hostport.startswith("[") and hostport.count(":") > 1:
        raise bad("IPv6 addresses must be written in brackets, like sip:[::1]:5060")
    m = _URI.match(text)
    if m is None:
        raise bad("it is not of the form sip:host[:port][;params]")

    raw_host = m.group("host")
    if raw_host.startswith("["):
        inner = raw_host[1:-1]
        if not _is_ipv6(inner):
            raise bad(f"{raw_host} is not an IPv6 address")
        host = str(ipaddress.IPv6Address(inner))
    else:
        try:
            host = str(ipaddress.IPv4Address(raw_host))
        except ValueError:
            if raw_host.replace(".", "").isdigit() or not _HOSTNAME.match(raw_host):
                raise bad(f"{raw_host!r} is not a valid host name or IP address") from None
            host = raw_host.lower().rstrip(".")

    port = DEFAULT_SIP_PORT
    if m.group("port") is not None:
        raw_port = m.group("port")
        if not raw_port.isdigit():
            raise bad(f"port {raw_port!r} is not a number")
        port = int(raw_port)
        if not 1 <= port <= 65535:
            raise bad(f"port {port} is outside 1-65535")

    transport = "udp"
    for param in (m.group("params") or "").split(";"):
        if not param:
            continue
        name, _, value = param.partition("=")
        if name.lower() == "transport":
            transport = value.lower()
            if transport not in URI_TRANSPORTS:
                raise bad(f"transport {value!r} is not one of {', '.join(URI_TRANSPORTS)}")
    return SipUri(host=host, port=port, transport=transport)


def _check_token(name: str, value: str) -> None:
    if not value or any(c in value for c in "\r\n\0 \t"):
        raise UsageError(f"{name} {value!r} must be non-empty without spaces or line breaks")


def build_options(
    target_host: str,
    target_port: int,
    transport: str,
    local_host: str,
    local_port: int,
    call_id: str,
    cseq: int,
    branch: str,
    from_tag: str,
) -> bytes:
    """One OPTIONS request, ready to send (RFC 3261 section 11).

    ``branch`` gets the RFC 3261 magic cookie prepended when it lacks it.
    IPv6 hosts are bracketed. ``transport`` is udp, tcp, tls or sctp.
    """
    transport = transport.lower()
    if transport not in URI_TRANSPORTS:
        raise UsageError(f"transport {transport!r} is not one of {', '.join(URI_TRANSPORTS)}")
    for name, value in (
        ("target host", target_host),
        ("local host", local_host),
        ("Call-ID", call_id),
        ("branch", branch),
        ("From tag", from_tag),
    ):
        _check_token(name, value)
    for name, port in (("target port", target_port), ("local port", local_port)):
        if not 0 < port <= 65535:
            raise UsageError(f"{name} {port} is outside 1-65535")
    if not 0 <= cseq < 2**31:
        raise UsageError(f"CSeq {cseq} is outside 0-2**31")
    if not branch.startswith(BRANCH_COOKIE):
        branch = BRANCH_COOKIE + branch

    target = f"{_uri_host(target_host)}:{target_port}"
    local = f"{_uri_host(local_host)}:{local_port}"
    uri_params = "" if transport == "udp" else f";transport={transport}"
    lines = [
        f"OPTIONS sip:{target}{uri_params} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {local};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{USER_AGENT}@{_uri_host(local_host)}>;tag={from_tag}",
        f"To: <sip:{target}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} OPTIONS",
        f"Contact: <sip:{USER_AGENT}@{local};transport={transport}>",
        "Accept: application/sdp",
        f"User-Agent: {USER_AGENT}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def parse_status(data: bytes) -> int | None:
    """The status code of a SIP response, None if ``data`` is not one."""
    first, _, _ = data.partition(b"\n")
    m = _STATUS_LINE.match(first)
    return int(m.group(1)) if m else None


def _header_value(data: bytes, names: tuple[bytes, ...]) -> bytes | None:
    """The first value of a header (any of ``names``, case-insensitive)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in names:
            return value.strip()
    return None


def _call_id(data: bytes) -> bytes | None:
    return _header_value(data, (b"call-id", b"i"))


def _content_length(head: bytes) -> int:
    value = _header_value(head + b"\r\n\r\n", (b"content-length", b"l"))
    if value is None:
        return 0
    try:
        return max(0, int(value))
    except ValueError:
        return 0


def _new_ids() -> tuple[str, str, str]:
    return (
        f"{secrets.token_hex(12)}@asterfleet",
        BRANCH_COOKIE + "-af-" + secrets.token_hex(8),
        secrets.token_hex(6),
    )


class _ProbeError(Exception):
    """The peer broke the exchange (closed early, oversized answer)."""


class _UdpProbe(asyncio.DatagramProtocol):
    def __init__(self, call_id: bytes) -> None:
        self.call_id = call_id
        self.final: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        status = parse_status(data)
        if status is None or status < 200 or _call_id(data) != self.call_id:
            return
        if not self.final.done():
            self.final.set_result(status)

    def error_received(self, exc: Exception) -> None:
        if not self.final.done():
            self.final.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.final.done():
            self.final.set_exception(exc)


async def _resolve(host: str, port: int, kind: int) -> tuple[int, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=kind)
    if not infos:
        raise OSError(f"no address for {host}")
    family, _, _, _, sockaddr = infos[0]
    return int(family), (str(sockaddr[0]), int(sockaddr[1]))


async def _probe_udp(host: str, port: int) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    family, addr = await _resolve(host, port, socket.SOCK_DGRAM)
    call_id, branch, tag = _new_ids()
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
    # A connected socket on an ephemeral port of the right family: the kernel
    # picks the local address for the Via, and an ICMP "port unreachable"
    # comes back as an error instead of a silent timeout.
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _UdpProbe(call_id.encode()),
        local_addr=(wildcard, 0),
        remote_addr=addr,
        family=family,
    )
    try:
        local_host, local_port = transport.get_extra_info("sockname")[:2]
        message = build_options(
            host, port, "udp", str(local_host), int(local_port), call_id, 1, branch, tag
        )
        started = time.monotonic()
        interval = _T1
        while True:
            transport.sendto(message)
            done, _ = await asyncio.wait({proto.final}, timeout=interval)
            if done:
                status = proto.final.result()
                return status, (time.monotonic() - started) * 1000.0
            interval = min(interval * 2, _T2)
    finally:
        transport.close()


async def _probe_tcp(host: str, port: int) -> tuple[int, float]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        local_host, local_port = writer.get_extra_info("sockname")[:2]
        call_id, branch, tag = _new_ids()
        message = build_options(
            host, port, "tcp", str(local_host), int(local_port), call_id, 1, branch, tag
        )
        started = time.monotonic()
        writer.write(message)
        await writer.drain()
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = await reader.read(4096)
                if not chunk:
                    raise _ProbeError("connection closed before a final answer")
                buffer += chunk
                if len(buffer) > _MAX_MESSAGE:
                    raise _ProbeError("answer too large")
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = _content_length(head)
            while len(rest) < length:
                chunk = await reader.read(4096)
                if not chunk:
                    raise _ProbeError("connection closed inside a message body")
                rest += chunk
            buffer = rest[length:]
            status = parse_status(head)
            if status is not None and status >= 200 and _call_id(head) == call_id.encode():
                return status, (time.monotonic() - started) * 1000.0
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 0.5)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror or exc}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OSError) else text


async def probe(host: str, port: int, transport: str = "udp", timeout: float = 1.0) -> ProbeResult:
    """Send one OPTIONS to ``host:port`` and wait up to ``timeout`` seconds.

    Returns the final status (1xx answers are skipped) and the round-trip
    time in milliseconds; on timeout, refusal, resolution failure or an
    unsupported transport, ``status`` is None and ``error`` says why. UDP
    requests are retransmitted on RFC 3261 timer E while waiting; the answer
    is matched by Call-ID.
    """
    transport = transport.lower()
    if transport not in PROBE_TRANSPORTS:
        return ProbeResult(None, None, f"transport {transport!r} is not supported by the probe")
    try:
        async with asyncio.timeout(timeout):
            if transport == "udp":
                status, rtt = await _probe_udp(host, port)
            else:
                status, rtt = await _probe_tcp(host, port)
    except TimeoutError:
        return ProbeResult(None, None, f"no answer within {timeout:g}s")
    except (OSError, _ProbeError, UsageError, ValueError, UnicodeError) as exc:
        return ProbeResult(None, None, _describe(exc))
    return ProbeResult(status, round(rtt, 3), None)
