"""RTCP reports (HEP type 5) and the media quality estimated from them.

Asterisk's ``res_hep_rtcp`` sends every RTCP report it sends or receives as a
HEP packet of protocol type 5 whose payload is a JSON object (the Call-ID is
the HEP correlation id)::

    {"ssrc": 1, "type": 200 | 201, "report_count": 1,
     "sender_information": null | {"ntp_timestamp_sec", "ntp_timestamp_usec",
                                   "rtp_timestamp", "packets", "octets"},
     "report_blocks": [{"source_ssrc", "fraction_lost", "packets_lost",
                        "highest_seq_no", "ia_jitter", "lsr", "dlsr"}]}

Asterisk 22 writes ``lsr`` (and the NTP seconds and microseconds) as decimal
*strings* (``"lsr": "0"``: it formats the unsigned 32-bit value with
``%u``), the other fields as JSON integers; ``lsr`` is read as either. A
report Asterisk sent, as its ``res_hep_rtcp`` captured it (recorded from
22.10.1, a call from SIPp)::

    {"ssrc":2017236692,"type":200,"report_count":1,
     "sender_information":{"ntp_timestamp_sec":"1796074329",
        "ntp_timestamp_usec":"886422","rtp_timestamp":40800,"packets":250,
        "octets":40000},
     "report_blocks":[{"source_ssrc":3390111744,"fraction_lost":0,
        "packets_lost":0,"highest_seq_no":249,"ia_jitter":17,"lsr":"0","dlsr":0}]}

Which way a report went (from the capture host's point of view) is not in
the JSON, and the HEP addresses alone cannot tell it: Asterisk's
``res_rtp_asterisk.c`` publishes a report it *sent* with ``from`` = its own
RTCP socket (``rtcp->local_addr_str``) and ``to`` = the far end, one it
*received* with ``from`` = the packet's source and ``to`` = the same
``local_addr_str``, and ``res_hep_rtcp.c`` copies ``from``/``to`` into the HEP
source and destination; the two ends of a session look alike. What tells
them apart is how Asterisk fills ``ssrc``: for a report it sends,
``rtcp_report->ssrc = rtp->ssrc`` (its own); for one it receives, it reads
the *third* word of the packet (``rtcpheader[position + 2]``) -- in a
receiver report the first block's ``source_ssrc``, in a sender report the
NTP seconds, whose Unix value it also writes as ``ntp_timestamp_sec``
(``ntp2timeval``: ``msw - 2208988800``). So a block was *received* when

- ``type`` 201 and ``ssrc == source_ssrc`` of the first block (a sender
  never reports on its own SSRC), or
- ``type`` 200 and ``ssrc == (ntp_timestamp_sec + 2208988800) mod 2**32``;

and *sent* otherwise (a random SSRC meets either by chance once in 2**32).
Asterisk keeps only the first block of a report it receives. A stream is
told by ``source_ssrc`` and the reporter's address (the HEP source), never
by ``ssrc``.

Each report block describes one stream (``source_ssrc``) as its receiver saw
it. Per block we keep:

- loss: ``fraction_lost / 256`` since the previous report, and the
  cumulative ``packets_lost``;
- jitter in ms: ``ia_jitter`` is in RTP timestamp units; the clock rate is
  not in the report, so it is parsed at 8,000 Hz (G.711, the fleet's codec):
  ``jitter_ms = ia_jitter / 8``; the collector then puts it, and the MOS
  (:func:`rescaled`), at the clock rate of the codec the call's SDP answer
  chose (:mod:`asterfleet.capture.mediaclock`);
- round-trip time (RFC 3550 §6.4.1): ``A - LSR - DLSR`` in 1/65536 s, where
  A is the capture time as the middle 32 bits of an NTP timestamp, for a
  block the capture host *received* only: LSR there is the NTP time of the
  capture host's own last SR, so A and LSR are one clock. In a block it
  sent, LSR is the far end's clock and ``A - LSR - DLSR`` is the one-way
  transit plus the clocks' offset: no RTT. Nor when ``lsr == 0`` (no SR
  answered yet) or the value is outside 0..10 s (a clock stepped);
- an estimated MOS from a simplified ITU-T G.107 E-model for G.711
  (after Cole & Rosenbluth, 2001)::

      d      = RTT/2 + 2*jitter + 10 ms      (one-way delay: network, a jitter
                                              buffer of twice the jitter, 10 ms
                                              packetisation)
      Id     = 0.024*d + 0.11*(d - 177.3)*H(d - 177.3)     H: step function
      Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl + Bpl)           Ppl: loss in %
               Ie = 0, Bpl = 4.3 (G.711 without PLC, G.113 Appendix I,
               random loss: BurstR = 1)
      R      = 93.2 - Id - Ie,eff
      MOS    = 1                                   if R <= 0
               4.5                                 if R >= 100
               1 + 0.035 R + 7e-6 R (R - 60)(100 - R)  otherwise

  Without an RTT, d counts only jitter buffer and packetisation.

Pure: bytes in, :class:`RtcpBlock` rows out; :class:`RtcpError` is the only
exception :func:`parse_rtcp` raises.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from asterfleet.errors import UsageError

#: HEP protocol type of an RTCP report (JSON payload).
PROTO_RTCP = 5

#: The RTP clock rate stored jitter assumes (G.711), for jitter in timestamp units.
CLOCK_HZ = 8000
#: E-model constants (see the module docstring).
R0 = 93.2
IE_G711 = 0.0
BPL_G711 = 4.3
PACKETISATION_MS = 10.0
#: An RTT above this is taken as a clock mix-up, not a measurement.
MAX_RTT_S = 10.0

_NTP_UNIX_OFFSET = 2_208_988_800
_U32 = 0xFFFFFFFF


class RtcpError(ValueError):
    """A payload that is not an RTCP report as res_hep_rtcp sends it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = "bad_rtcp"


@dataclass(frozen=True, slots=True)
class RtcpBlock:
    """One report block: one stream's quality, as its receiver reported it."""

    #: SSRC of the reporter (the receiver of the stream), as sent; not the
    #: reporter's in the reports Asterisk received (see the module docstring).
    ssrc: int
    #: 200 (sender report) or 201 (receiver report).
    report_type: int
    #: SSRC of the stream reported on.
    source_ssrc: int
    #: Fraction of packets lost since the previous report, 0..1.
    fraction_lost: float
    #: Packets lost since the stream began (may be negative: duplicates).
    packets_lost: int
    #: Interarrival jitter in ms at :data:`CLOCK_HZ` (see :func:`rescaled`).
    jitter_ms: float
    #: Round-trip time, for a block the capture host received only.
    rtt_ms: float | None
    mos: float
    #: True: the capture host received this report; False: it sent it.
    received: bool


def r_factor(loss_pct: float, jitter_ms: float, rtt_ms: float | None) -> float:
    """The simplified E-model rating R for G.711 (see the module docstring)."""
    d = (rtt_ms or 0.0) / 2 + 2 * jitter_ms + PACKETISATION_MS
    i_d = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    ppl = max(0.0, min(100.0, loss_pct))
    ie_eff = IE_G711 + (95 - IE_G711) * ppl / (ppl + BPL_G711)
    return R0 - i_d - ie_eff


def mos_from_r(r: float) -> float:
    """ITU-T G.107's mapping of R to an estimated MOS (1.0 … 4.5)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)


def estimated_mos(fraction_lost: float, jitter_ms: float, rtt: float | None) -> float:
    """The estimated MOS of one report block, to two decimals."""
    return round(mos_from_r(r_factor(fraction_lost * 100, jitter_ms, rtt)), 2)


def rescaled(
    fraction_lost: float, jitter_ms: float, rtt: float | None, clock_hz: int
) -> tuple[float, float]:
    """A stored block's jitter (at :data:`CLOCK_HZ`) at the stream's real RTP
    clock rate, and the MOS estimated again with it: ``(jitter_ms, mos)``."""
    jitter = jitter_ms * CLOCK_HZ / clock_hz
    return jitter, estimated_mos(fraction_lost, jitter, rtt)


def ntp_middle32(ts_us: int) -> int:
    """A Unix time in µs as the middle 32 bits of its NTP timestamp (LSR's unit)."""
    sec = ts_us // 1_000_000 + _NTP_UNIX_OFFSET
    frac16 = (ts_us % 1_000_000) * 65536 // 1_000_000
    return ((sec & 0xFFFF) << 16) | frac16


def rtt_ms(arrival_us: int, lsr: int, dlsr: int) -> float | None:
    """RFC 3550 round-trip time, or None when it cannot be told (see docstring)."""
    if lsr == 0:
        return None
    rtt = (ntp_middle32(arrival_us) - lsr - dlsr) & 0xFFFFFFFF
    seconds = rtt / 65536
    if seconds > MAX_RTT_S:
        return None
    return seconds * 1000


def mos_threshold(value: float | str | None, name: str) -> float | None:
    """A ``mos_below`` filter value, checked: a number from 1 to 4.5 (or None)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        mos = float(value)
    except ValueError:
        mos = math.nan
    if not 1.0 <= mos <= 5.0:
        raise UsageError(f"{name} {value!r}: give an estimated MOS from 1.0 to 5.0, e.g. 3.5")
    return mos


def _int(obj: dict[str, Any], key: str, low: int, high: int) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RtcpError(f"RTCP report: {key!r} is {value!r}, not an integer")
    if not low <= value <= high:
        raise RtcpError(f"RTCP report: {key!r} = {value} is outside {low}..{high}")
    return value


def received_by_asterisk(
    ssrc: int, report_type: int, ntp_sec: int | None, first_source: int
) -> bool:
    """Whether Asterisk received (not sent) a report, from the ``ssrc`` it
    wrote: the packet's third word when it received it (see the module
    docstring). ``ntp_sec``: the sender information's ``ntp_timestamp_sec``."""
    if report_type == 201:
        return ssrc == first_source
    return ntp_sec is not None and ssrc == (ntp_sec + _NTP_UNIX_OFFSET) & _U32


def _ntp_sec(doc: dict[str, Any]) -> int | None:
    """``sender_information.ntp_timestamp_sec``, or None when absent or unreadable."""
    info = doc.get("sender_information")
    if not isinstance(info, dict):
        return None
    try:
        return _uint32_or_text(info, "ntp_timestamp_sec")
    except RtcpError:
        return None


def _uint32_or_text(obj: dict[str, Any], key: str) -> int:
    """An unsigned 32-bit field given as a JSON integer or a decimal string."""
    value = obj.get(key)
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text.lstrip("0")) > 10:
            raise RtcpError(f"RTCP report: {key!r} is {value!r}, not a decimal number")
        number = int(text)
        if number > 2**32 - 1:
            raise RtcpError(f"RTCP report: {key!r} = {number} is outside 0..4294967295")
        return number
    return _int(obj, key, -(2**31), 2**32 - 1) & 0xFFFFFFFF


def parse_rtcp(payload: bytes, ts_us: int) -> list[RtcpBlock]:
    """The report blocks of one res_hep_rtcp payload captured at ``ts_us``."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise RtcpError(f"RTCP payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RtcpError("RTCP payload is not a JSON object")
    ssrc = _int(doc, "ssrc", -(2**31), 2**32 - 1) & _U32
    report_type = _int(doc, "type", 200, 201)
    blocks = doc.get("report_blocks")
    if not isinstance(blocks, list):
        raise RtcpError("RTCP report: 'report_blocks' is not a list")
    ntp_sec = _ntp_sec(doc)
    out: list[RtcpBlock] = []
    for block in blocks[:31]:  # RC is 5 bits
        if not isinstance(block, dict):
            raise RtcpError("RTCP report: a report block is not an object")
        source = _int(block, "source_ssrc", -(2**31), 2**32 - 1) & _U32
        fraction = _int(block, "fraction_lost", 0, 255) / 256
        lost = _int(block, "packets_lost", -(2**31), 2**32 - 1)
        jitter = _int(block, "ia_jitter", -(2**31), 2**32 - 1) & _U32
        lsr = _uint32_or_text(block, "lsr")
        dlsr = _int(block, "dlsr", -(2**31), 2**32 - 1) & _U32
        received = (
            out[0].received if out else received_by_asterisk(ssrc, report_type, ntp_sec, source)
        )
        jitter_ms = jitter * 1000 / CLOCK_HZ
        rtt = rtt_ms(ts_us, lsr, dlsr) if received else None
        out.append(
            RtcpBlock(
                ssrc=ssrc,
                report_type=report_type,
                source_ssrc=source,
                fraction_lost=fraction,
                packets_lost=lost,
                jitter_ms=jitter_ms,
                rtt_ms=rtt,
                mos=estimated_mos(fraction, jitter_ms, rtt),
                received=received,
            )
        )
    return out
