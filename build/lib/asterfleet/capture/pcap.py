"""Export captured SIP messages as a classic PCAP file (Wireshark, tshark).

HEP carries addresses, ports and the SIP payload but not the frames, so
Ethernet, IPv4/IPv6 and UDP/TCP headers are synthesised around each
payload, with valid checksums and, for TCP, sequence numbers that continue
per direction so the dissectors reassemble the stream.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

from asterfleet.capture.store import Message

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # linktype Ethernet
_SRC_MAC = b"\x02\x00\x00\x00\x00\x01"
_DST_MAC = b"\x02\x00\x00\x00\x00\x02"
_MAX_PAYLOAD = 65535 - 60 - 20


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _addr(ip: str, v6: bool) -> bytes:
    try:
        if v6:
            return ipaddress.IPv6Address(ip).packed
        return ipaddress.IPv4Address(ip).packed
    except ValueError:
        return bytes(16 if v6 else 4)


def _frame(msg: Message, seqs: dict[tuple[str, int, str, int], int]) -> bytes:
    v6 = ":" in msg.src_ip or ":" in msg.dst_ip
    src, dst = _addr(msg.src_ip, v6), _addr(msg.dst_ip, v6)
    payload = msg.raw[:_MAX_PAYLOAD]
    tcp = msg.transport == "tcp"
    proto = 6 if tcp else 17
    if tcp:
        flow = (msg.src_ip, msg.src_port, msg.dst_ip, msg.dst_port)
        back = (msg.dst_ip, msg.dst_port, msg.src_ip, msg.src_port)
        seq = seqs.get(flow, 1)
        seqs[flow] = (seq + len(payload)) & 0xFFFFFFFF
        ack = seqs.get(back, 1)
        header = struct.pack(
            "!HHIIBBHHH", msg.src_port, msg.dst_port, seq, ack, 5 << 4, 0x18, 65535, 0, 0
        )
    else:
        header = struct.pack("!HHHH", msg.src_port, msg.dst_port, 8 + len(payload), 0)
    segment_len = len(header) + len(payload)
    if v6:
        pseudo = src + dst + struct.pack("!IxxxB", segment_len, proto)
    else:
        pseudo = src + dst + struct.pack("!xBH", proto, segment_len)
    csum = _checksum(pseudo + header + payload) or 0xFFFF
    at = 16 if tcp else 6
    header = header[:at] + struct.pack("!H", csum) + header[at + 2 :]
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, segment_len, proto, 64) + src + dst
        ethertype = 0x86DD
    else:
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + segment_len, 0, 0x4000, 64, proto, 0)
        ip += src + dst
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        ethertype = 0x0800
    return _DST_MAC + _SRC_MAC + struct.pack("!H", ethertype) + ip + header + payload


def build_pcap(msgs: Sequence[Message]) -> bytes:
    """A PCAP file holding ``msgs`` in capture order."""
    out = [_PCAP_HEADER]
    seqs: dict[tuple[str, int, str, int], int] = {}
    for msg in sorted(msgs, key=lambda m: (m.ts_us, m.id)):
        frame = _frame(msg, seqs)
        sec, usec = divmod(msg.ts_us, 1_000_000)
        out.append(struct.pack("<IIII", sec & 0xFFFFFFFF, usec, len(frame), len(frame)))
        out.append(frame)
    return b"".join(out)
