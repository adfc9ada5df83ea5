"""The audio codec a call's SDP negotiated, and its RTP clock rate.

RTCP gives interarrival jitter in RTP timestamp units; turning it into
milliseconds needs the payload's RTP clock rate, which only the SDP tells:
``a=rtpmap:<pt> <name>/<rate>[/<channels>]`` for a dynamic payload type, or
RFC 3551's table for a static one. The rate is the *RTP clock*, not the
sampling rate: opus is ``opus/48000/2`` whatever it samples, and G.722
(static type 9) runs an 8,000 Hz clock although it samples at 16 kHz (RFC
3551 §4.5.2, kept for compatibility with an error in RFC 1890).

The codec a call uses is the first payload type of the first ``m=audio``
line of the SDP *answer* (RFC 3264 §6.1: the answerer's preferred, which
both ends then send). In the call's captured messages the answer is the
second distinct SDP body (the first is the offer; copies of one message
captured on several hops are one body); with a single SDP, that one.

Pure: text in, :class:`AudioCodec` (and :class:`Negotiation`) out; never
raises on any input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: RFC 3551 table 4: the static audio payload types and their RTP clock rates.
STATIC_AUDIO: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    5: ("DVI4", 8000),
    6: ("DVI4", 16000),
    7: ("LPC", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    10: ("L16", 44100),
    11: ("L16", 44100),
    12: ("QCELP", 8000),
    13: ("CN", 8000),
    14: ("MPA", 90000),
    15: ("G728", 8000),
    16: ("DVI4", 11025),
    17: ("DVI4", 22050),
    18: ("G729", 8000),
}
#: Payload formats that are not the call's voice (skipped when listed first).
_NOT_VOICE = frozenset({"telephone-event", "cn", "red", "ulpfec"})
_MAX_RATE = 1_000_000


@dataclass(frozen=True, slots=True)
class AudioCodec:
    """The voice codec of an ``m=audio`` line."""

    payload_type: int
    #: Its encoding name (``PCMU``, ``opus``, ``G722``); "" when the SDP
    #: names no dynamic type's encoding.
    name: str
    #: Its RTP clock rate in Hz; None when the SDP does not give it.
    clock_hz: int | None


def sdp_body(message: bytes) -> str | None:
    """The SDP in a SIP message's body, or None (no body, or no ``m=`` line).

    A multipart body is searched as text: its SDP part's lines are the only
    ones starting ``v=``/``m=``/``a=``."""
    text = message.decode("utf-8", "replace")
    for sep in ("\r\n\r\n", "\n\n"):
        _, found, body = text.partition(sep)
        if found:
            break
    else:
        return None
    return body if "\nm=" in "\n" + body else None


def audio_codec(sdp: str) -> AudioCodec | None:
    """The voice codec of the first ``m=audio`` line (see the module docstring),
    or None when the SDP has no audio or lists no payload type."""
    lines = [line.strip() for line in sdp.splitlines()]
    media: list[int] | None = None
    rtpmap: dict[int, tuple[str, int | None]] = {}
    for line in lines:
        if line.startswith("m="):
            if media is not None:
                break  # the next media section: the audio one is complete
            fields = line[2:].split()
            if fields[:1] == ["audio"]:
                media = [int(f) for f in fields[3:] if f.isascii() and f.isdigit() and len(f) < 4]
        elif media is not None and line.startswith("a=rtpmap:"):
            pt_text, _, encoding = line[len("a=rtpmap:") :].partition(" ")
            if pt_text.isascii() and pt_text.isdigit() and len(pt_text) < 4:
                name, _, rest = encoding.strip().partition("/")
                rate = rest.partition("/")[0]
                ok = (
                    rate.isascii()
                    and rate.isdigit()
                    and len(rate) <= 7
                    and 0 < int(rate) <= _MAX_RATE
                )
                rtpmap[int(pt_text)] = (name, int(rate) if ok else None)
    if not media:
        return None
    codecs = [_codec(pt, rtpmap) for pt in media]
    voice = [c for c in codecs if c.name.lower() not in _NOT_VOICE]
    return (voice or codecs)[0]


def _codec(pt: int, rtpmap: dict[int, tuple[str, int | None]]) -> AudioCodec:
    if pt in rtpmap:
        name, rate = rtpmap[pt]
        if rate is None and pt in STATIC_AUDIO:
            rate = STATIC_AUDIO[pt][1]
        return AudioCodec(pt, name, rate)
    if pt in STATIC_AUDIO:
        name, rate = STATIC_AUDIO[pt]
        return AudioCodec(pt, name, rate)
    return AudioCodec(pt, "", None)


@dataclass(frozen=True, slots=True)
class Negotiation:
    """What a call's captured SDP tells of its voice codec."""

    #: The answer's codec (else the offer's); None when no SDP names one.
    codec: AudioCodec | None
    #: True once the answer was captured (a second distinct SDP body): the
    #: codec can no longer change. False: the offer alone, or no SDP yet.
    answered: bool

    @property
    def clock_hz(self) -> int | None:
        """The codec's RTP clock rate; None when the SDP does not give it."""
        return self.codec.clock_hz if self.codec is not None else None


def negotiation(messages: Iterable[bytes]) -> Negotiation:
    """The codec of a call from its SIP messages in capture order (see the
    module docstring), and whether the answer was among them."""
    bodies: list[str] = []
    for raw in messages:
        body = sdp_body(raw)
        if body is not None and body not in bodies:
            bodies.append(body)
            if len(bodies) == 2:
                break
    for body in reversed(bodies):  # the answer first, else the offer
        codec = audio_codec(body)
        if codec is not None:
            return Negotiation(codec, len(bodies) == 2)
    return Negotiation(None, len(bodies) == 2)


def negotiated_codec(messages: Iterable[bytes]) -> AudioCodec | None:
    """The voice codec of a call from its SIP messages in capture order: the
    answer's (see the module docstring), or None when no SDP tells it."""
    return negotiation(messages).codec
