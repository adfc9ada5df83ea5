"""HEP v3 (the Homer Encapsulation Protocol): parse and build packets.

A packet is ``HEP3``, a 16-bit total length, then chunks of
``vendor(16) type(16) length(16, header included) body``. Only the generic
vendor (0) chunks are interpreted; others are skipped. Everything here is
pure: bytes in, a :class:`HepPacket` or :class:`HepError` out, and nothing
else is ever raised (the fuzz tests hold us to that).
"""

from __future__ import annotations

import hmac
import ipaddress
import operator
import socket
import struct
import zlib
from dataclasses import dataclass

from asterfleet.errors import AsterfleetError

MAGIC = b"HEP3"
HEADER_LEN = 6
CHUNK_HEADER_LEN = 6
#: Largest SIP payload accepted once decompressed.
MAX_PAYLOAD = 65535

# Generic chunk types (vendor 0), from the HEP v3 specification.
IP_FAMILY = 1
IP_PROTO = 2
IPV4_SRC = 3
IPV4_DST = 4
IPV6_SRC = 5
IPV6_DST = 6
SRC_PORT = 7
DST_PORT = 8
TS_SEC = 9
TS_USEC = 10
PROTO_TYPE = 11
CAPTURE_ID = 12
KEEPALIVE = 13
AUTH_KEY = 14
PAYLOAD = 15
PAYLOAD_ZIP = 16
CORRELATION_ID = 17
VLAN_ID = 18
CAPTURE_NAME = 19  # "capture node name" in the HEP v3 spec: our capture host

AF_INET = 2
AF_INET6 = 10
PROTO_SIP = 1
TRANSPORTS = {17: "udp", 6: "tcp", 132: "sctp"}

#: Reasons a packet is rejected; also the ``reason`` label of the metric.
REASONS = (
    "bad_magic",
    "truncated",
    "bad_length",
    "bad_chunk",
    "no_payload",
    "oversized",
    "not_sip",
    "bad_sip",
    "auth",
    "bad_rtcp",
    "no_call_id",
)

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_CHUNK = struct.Struct("!HHH")


class HepError(AsterfleetError):
    """A packet that is not valid HEP v3; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(slots=True)
class HepPacket:
    """The fields of one HEP v3 packet that a capture server keeps."""

    payload: bytes
    family: int = AF_INET
    ip_proto: int = 17
    src_ip: str = ""
    dst_ip: str = ""
    src_port: int = 0
    dst_port: int = 0
    ts_sec: int = 0
    ts_usec: int = 0
    proto_type: int = PROTO_SIP
    capture_id: int = 0
    auth_key: str | None = None
    correlation_id: str = ""
    capture_host: str = ""

    @property
    def transport(self) -> str:
        return TRANSPORTS.get(self.ip_proto, str(self.ip_proto))

    @property
    def ts_us(self) -> int:
        return self.ts_sec * 1_000_000 + self.ts_usec


def _text(body: bytes) -> str:
    # Strings go to databases that refuse NUL (PostgreSQL text).
    return body.decode("utf-8", "replace").replace("\x00", "").rstrip()


_INT_CHUNKS = frozenset(
    (IP_FAMILY, IP_PROTO, SRC_PORT, DST_PORT, TS_SEC, TS_USEC, PROTO_TYPE, CAPTURE_ID,
     KEEPALIVE, VLAN_ID)
)  # fmt: skip
_TEXT_CHUNKS = frozenset((AUTH_KEY, CORRELATION_ID, CAPTURE_NAME))


class _Layout:
    """A run of fixed-size chunks at the start of a packet, as one struct."""

    __slots__ = ("end", "headers", "headers_of", "struct", "types", "values_of")

    def __init__(self, chunks: list[tuple[int, int]]) -> None:
        fmt = "!"
        headers: list[int] = []
        header_at: list[int] = []
        value_at: list[int] = []
        for ctype, clen in chunks:
            header_at += [len(headers) + len(value_at) + k for k in range(3)]
            headers += [0, ctype, clen]
            fmt += "HHH" + _FIXED[(ctype, clen)]
            value_at.append(len(headers) + len(value_at))
        self.struct = struct.Struct(fmt)
        self.end = HEADER_LEN + self.struct.size
        self.headers = tuple(headers)
        self.headers_of = operator.itemgetter(*header_at)
        self.values_of = operator.itemgetter(*value_at)
        self.types = tuple(ctype for ctype, _ in chunks)


#: Fixed-size generic chunks (type, length with header) → struct code.
_FIXED = {
    **{(t, 7): "B" for t in (IP_FAMILY, IP_PROTO, PROTO_TYPE, KEEPALIVE, SRC_PORT, DST_PORT,
                             TS_SEC, TS_USEC, CAPTURE_ID, VLAN_ID)},
    **{(t, 8): "H" for t in (IP_FAMILY, IP_PROTO, PROTO_TYPE, KEEPALIVE, SRC_PORT, DST_PORT,
                             TS_SEC, TS_USEC, CAPTURE_ID, VLAN_ID)},
    **{(t, 10): "I" for t in (IP_FAMILY, IP_PROTO, PROTO_TYPE, KEEPALIVE, SRC_PORT, DST_PORT,
                              TS_SEC, TS_USEC, CAPTURE_ID, VLAN_ID)},
    (IPV4_SRC, 10): "4s",
    (IPV4_DST, 10): "4s",
    (IPV6_SRC, 22): "16s",
    (IPV6_DST, 22): "16s",
}  # fmt: skip
#: Layouts kept per process (a collector hears a few kinds of sender).
_MAX_LAYOUTS = 4
_layouts: list[_Layout] = []


def _learn_layout(data: bytes) -> _Layout | None:
    """The leading run of fixed-size generic chunks of ``data`` (at least
    four), or None; only a layout, never a value, is taken from it."""
    chunks: list[tuple[int, int]] = []
    pos, size = HEADER_LEN, len(data)
    while size - pos >= CHUNK_HEADER_LEN:
        vendor, ctype, clen = _CHUNK.unpack_from(data, pos)
        if vendor != 0 or (ctype, clen) not in _FIXED or pos + clen > size:
            break
        chunks.append((ctype, clen))
        pos += clen
    return _Layout(chunks) if len(chunks) >= 4 else None


def _inflate(body: bytes) -> bytes:
    try:
        inflater = zlib.decompressobj(47)  # zlib or gzip header, auto-detected
        out = inflater.decompress(body, MAX_PAYLOAD + 1)
    except zlib.error as exc:
        raise HepError("bad_chunk", f"compressed payload does not inflate: {exc}") from None
    if len(out) > MAX_PAYLOAD or inflater.unconsumed_tail:
        raise HepError("oversized", f"payload inflates past {MAX_PAYLOAD} bytes")
    return out


def parse_hep(data: bytes, auth_key: bytes | None = None) -> HepPacket:
    """Parse exactly one HEP v3 packet (a whole UDP datagram or TCP frame).

    With ``auth_key``, a packet whose auth key chunk differs (compared in
    constant time) is rejected with reason ``auth`` before its payload is
    decompressed: an unauthenticated sender never makes us inflate.
    """
    # The collector's hot path: one pass, locals only, C helpers for numbers
    # and addresses.
    size = len(data)
    if size < HEADER_LEN:
        raise HepError("truncated", f"{size} bytes is shorter than the HEP header")
    if data[:4] != MAGIC:
        raise HepError("bad_magic", "does not start with HEP3")
    total = (data[4] << 8) | data[5]
    if total != size:
        raise HepError("bad_length", f"header says {total} bytes, packet has {size}")
    ints = [0] * 19
    ints[IP_FAMILY] = AF_INET
    ints[IP_PROTO] = 17
    ints[PROTO_TYPE] = PROTO_SIP
    texts: dict[int, str] = {}
    src_ip = dst_ip = ""
    payload: bytes | None = None
    zipped: bytes | None = None
    pos = HEADER_LEN
    # A sender repeats its layout: the run of fixed-size chunks it starts
    # with is read in one struct call when it matches a layout seen before.
    for layout in _layouts:
        if size < layout.end:
            continue
        values = layout.struct.unpack_from(data, HEADER_LEN)
        if layout.headers_of(values) != layout.headers:
            continue
        fields = layout.values_of(values)
        for ctype, value in zip(layout.types, fields, strict=True):
            if ctype == IPV4_SRC:
                src_ip = socket.inet_ntoa(value)
            elif ctype == IPV4_DST:
                dst_ip = socket.inet_ntoa(value)
            elif ctype == IPV6_SRC:
                src_ip = socket.inet_ntop(socket.AF_INET6, value)
            elif ctype == IPV6_DST:
                dst_ip = socket.inet_ntop(socket.AF_INET6, value)
            else:
                ints[ctype] = value
        pos = layout.end
        break
    else:
        if len(_layouts) < _MAX_LAYOUTS:
            learned = _learn_layout(data)
            if learned is not None:
                _layouts.append(learned)
    unpack = _CHUNK.unpack_from
    from_bytes = int.from_bytes
    while pos < size:
        if size - pos < CHUNK_HEADER_LEN:
            raise HepError("truncated", f"chunk header cut at byte {pos}")
        vendor, ctype, clen = unpack(data, pos)
        end = pos + clen
        if clen < CHUNK_HEADER_LEN or end > size:
            raise HepError("bad_length", f"chunk {ctype} at byte {pos} claims {clen} bytes")
        start = pos + CHUNK_HEADER_LEN
        pos = end
        if vendor != 0:
            continue
        if ctype == PAYLOAD:
            payload = data[start:end]
        elif ctype in _INT_CHUNKS:
            if clen - CHUNK_HEADER_LEN not in (1, 2, 4):
                raise HepError("bad_chunk", f"chunk {ctype} has {clen - 6} bytes, not 1, 2 or 4")
            ints[ctype] = from_bytes(data[start:end], "big")
        elif ctype in (IPV4_SRC, IPV4_DST):
            if clen != CHUNK_HEADER_LEN + 4:
                raise HepError("bad_chunk", f"IPv4 address chunk {ctype} has {clen - 6} bytes")
            if ctype == IPV4_SRC:
                src_ip = socket.inet_ntoa(data[start:end])
            else:
                dst_ip = socket.inet_ntoa(data[start:end])
        elif ctype in _TEXT_CHUNKS:
            texts[ctype] = _text(data[start:end])
        elif ctype in (IPV6_SRC, IPV6_DST):
            if clen != CHUNK_HEADER_LEN + 16:
                raise HepError("bad_chunk", f"IPv6 address chunk {ctype} has {clen - 6} bytes")
            if ctype == IPV6_SRC:
                src_ip = socket.inet_ntop(socket.AF_INET6, data[start:end])
            else:
                dst_ip = socket.inet_ntop(socket.AF_INET6, data[start:end])
        elif ctype == PAYLOAD_ZIP:
            zipped = data[start:end]
    if auth_key is not None and not hmac.compare_digest(texts.get(AUTH_KEY, "").encode(), auth_key):
        raise HepError("auth", "wrong or missing auth key")
    if zipped is not None:
        payload = _inflate(zipped)
    if not payload:
        raise HepError("no_payload", "no payload chunk")
    if len(payload) > MAX_PAYLOAD:
        raise HepError("oversized", f"payload of {len(payload)} bytes")
    return HepPacket(
        payload,
        ints[IP_FAMILY],
        ints[IP_PROTO],
        src_ip,
        dst_ip,
        ints[SRC_PORT] & 0xFFFF,
        ints[DST_PORT] & 0xFFFF,
        ints[TS_SEC],
        ints[TS_USEC],
        ints[PROTO_TYPE],
        ints[CAPTURE_ID],
        texts.get(AUTH_KEY),
        texts.get(CORRELATION_ID, ""),
        texts.get(CAPTURE_NAME, ""),
    )


def frame_length(buf: bytes | bytearray | memoryview, pos: int = 0) -> int | None:
    """Length of the HEP packet starting at ``pos`` of a TCP stream buffer,
    or None when its header is not complete yet. HepError when the stream
    is not HEP v3 (framing is lost: the connection must be closed)."""
    if len(buf) - pos < HEADER_LEN:
        return None
    if buf[pos : pos + 4] != MAGIC:
        raise HepError("bad_magic", "TCP stream does not continue with HEP3")
    total = (buf[pos + 4] << 8) | buf[pos + 5]
    if total < HEADER_LEN:
        raise HepError("bad_length", f"HEP header claims {total} bytes")
    return total


def frame_end(buf: bytes | bytearray, start: int = 0) -> tuple[int, int, str | None]:
    """``(end, count, error)``: the ``count`` whole packets of a TCP stream
    buffer from ``start`` on end at ``end``; ``error`` is the reason the
    stream stops being HEP v3 there (None: it does not)."""
    pos, count, size = max(start, 0), 0, len(buf)
    while size - pos >= HEADER_LEN:
        if buf[pos : pos + 4] != MAGIC:
            return pos, count, "bad_magic"
        total = (buf[pos + 4] << 8) | buf[pos + 5]
        if total < HEADER_LEN:
            return pos, count, "bad_length"
        if size - pos < total:
            break
        pos += total
        count += 1
    return pos, count, None


def split_frames(chunk: bytes) -> list[bytes]:
    """The packets of a chunk that :meth:`StreamFramer.feed_chunk` cut."""
    out: list[bytes] = []
    pos, size = 0, len(chunk)
    while size - pos >= HEADER_LEN:
        total = (chunk[pos + 4] << 8) | chunk[pos + 5]
        if total < HEADER_LEN or pos + total > size:
            break
        out.append(chunk[pos : pos + total])
        pos += total
    if pos < size:
        out.append(chunk[pos:])  # not a whole packet: rejected as such
    return out


try:  # the same, compiled (capture/_hepfast.pyx), when it is built
    from asterfleet.capture._hepfast import frame_end as _frame_end
except ImportError:
    _frame_end = frame_end


class StreamFramer:
    """Cuts a TCP byte stream into HEP packets.

    Once the stream stops being HEP v3, :attr:`error` is set and every later
    byte is ignored: there is no way to find the next packet boundary.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.error: HepError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """The complete packets in ``data`` (plus what was buffered before)."""
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_LEN:
            if buf[pos : pos + 4] != MAGIC:
                self.error = HepError("bad_magic", "TCP stream does not continue with HEP3")
            else:
                total = (buf[pos + 4] << 8) | buf[pos + 5]
                if total < HEADER_LEN:
                    self.error = HepError("bad_length", f"HEP header claims {total} bytes")
                elif end - pos >= total:
                    out.append(bytes(buf[pos : pos + total]))
                    pos += total
                    continue
            break
        if self.error is not None:
            del buf[:]
        elif pos:
            del buf[:pos]
        return out

    def feed_chunk(self, data: bytes) -> tuple[bytes, int]:
        """Like :meth:`feed`, but the complete packets come as one chunk
        (consecutive, as sent) with their count: no object per packet, and
        the bytes are copied once."""
        if self.error is not None:
            return b"", 0
        rest = self._buf  # the start of one packet, from earlier reads
        head = b""
        pos = 0
        if rest:
            # Complete the packet under way with just the bytes it lacks.
            if len(rest) < HEADER_LEN:
                pos = HEADER_LEN - len(rest)
                rest += data[:pos]
                if len(rest) < HEADER_LEN:
                    return b"", 0
            end, count, error = _frame_end(rest)
            if error is None:
                total = (rest[4] << 8) | rest[5]
                lacking = total - len(rest)
                if len(data) - pos < lacking:
                    rest += data[pos:]
                    return b"", 0
                rest += data[pos : pos + lacking]
                pos += lacking
                head = bytes(rest)
                rest.clear()
            else:
                return self._fail(error, rest, 0), 0
        end, count, error = _frame_end(data, pos)
        if head:
            count += 1
            chunk = b"".join((head, memoryview(data)[pos:end]))
        else:
            chunk = data if pos == 0 and end == len(data) else data[pos:end]
        if error is not None:
            self._fail(error, data, end)
        else:
            rest += data[end:]
        return chunk, count

    def _fail(self, reason: str, buf: bytes | bytearray, at: int) -> bytes:
        if reason == "bad_magic":
            self.error = HepError("bad_magic", "TCP stream does not continue with HEP3")
        else:
            claimed = (buf[at + 4] << 8) | buf[at + 5]
            self.error = HepError("bad_length", f"HEP header claims {claimed} bytes")
        self._buf.clear()
        return b""

    @property
    def pending(self) -> int:
        """Bytes of an incomplete packet waiting for more data."""
        return len(self._buf)


def _chunk(ctype: int, body: bytes) -> bytes:
    if len(body) > 0xFFFF - CHUNK_HEADER_LEN:
        raise HepError("oversized", f"a chunk of {len(body)} bytes does not fit 64 KiB")
    return _CHUNK.pack(0, ctype, CHUNK_HEADER_LEN + len(body)) + body


def encode_hep(pkt: HepPacket) -> bytes:
    """Build a HEP v3 packet (what Kamailio's siptrace or Asterisk's res_hep send)."""
    v6 = ":" in pkt.src_ip or ":" in pkt.dst_ip
    parts = [
        _chunk(IP_FAMILY, bytes([AF_INET6 if v6 else AF_INET])),
        _chunk(IP_PROTO, bytes([pkt.ip_proto & 0xFF])),
    ]
    if v6:
        parts.append(_chunk(IPV6_SRC, ipaddress.IPv6Address(pkt.src_ip or "::").packed))
        parts.append(_chunk(IPV6_DST, ipaddress.IPv6Address(pkt.dst_ip or "::").packed))
    else:
        parts.append(_chunk(IPV4_SRC, ipaddress.IPv4Address(pkt.src_ip or "0.0.0.0").packed))
        parts.append(_chunk(IPV4_DST, ipaddress.IPv4Address(pkt.dst_ip or "0.0.0.0").packed))
    parts += [
        _chunk(SRC_PORT, _U16.pack(pkt.src_port)),
        _chunk(DST_PORT, _U16.pack(pkt.dst_port)),
        _chunk(TS_SEC, _U32.pack(pkt.ts_sec)),
        _chunk(TS_USEC, _U32.pack(pkt.ts_usec)),
        _chunk(PROTO_TYPE, bytes([pkt.proto_type & 0xFF])),
        _chunk(CAPTURE_ID, _U32.pack(pkt.capture_id)),
    ]
    if pkt.auth_key is not None:
        parts.append(_chunk(AUTH_KEY, pkt.auth_key.encode()))
    if pkt.correlation_id:
        parts.append(_chunk(CORRELATION_ID, pkt.correlation_id.encode()))
    if pkt.capture_host:
        parts.append(_chunk(CAPTURE_NAME, pkt.capture_host.encode()))
    parts.append(_chunk(PAYLOAD, pkt.payload))
    body = b"".join(parts)
    total = HEADER_LEN + len(body)
    if total > 0xFFFF:
        raise HepError("oversized", f"a HEP packet of {total} bytes does not fit 64 KiB")
    return MAGIC + _U16.pack(total) + body
