"""Just enough SIP to index a captured message.

The start line (method or status), Call-ID, CSeq, the users of From and To,
and User-Agent (or Server, for answers). The raw message is kept as it
came; nothing here rewrites it. Only :class:`SipError` is ever raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asterfleet.errors import AsterfleetError

_SPACED = re.compile(rb"\n([a-z-]+)[ \t]+:[ \t]*")
_MAX_HEAD = 16384
#: ``b"\ncall-id:"`` for ``b"call-id"``: what a header looks like in the lowered head.
_NEEDLES = {
    name: b"\n" + name + b":"
    for name in (b"call-id", b"i", b"to", b"t", b"from", b"f", b"cseq", b"user-agent", b"server")
}
#: Requests that never open a call, tag or no tag (ACK and CANCEL belong to
#: the INVITE they follow).
_IN_DIALOG = frozenset(("ACK", "CANCEL", "BYE", "PRACK", "UPDATE", "INFO"))


class SipError(AsterfleetError):
    """A payload that is not a SIP message we can index; ``reason`` is
    ``not_sip`` (not SIP at all) or ``bad_sip`` (SIP without a Call-ID)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(slots=True, frozen=True)
class SipSummary:
    """The indexed fields of one SIP message."""

    method: str | None
    status: int | None
    call_id: str
    cseq: str
    from_user: str
    to_user: str
    user_agent: str
    #: A request without a To tag: it opens a call (INVITE) or stands alone
    #: (OPTIONS, REGISTER); requests inside a dialog carry the tag.
    opens_call: bool = False

    @property
    def cseq_method(self) -> str:
        return self.cseq.rpartition(" ")[2]

    @property
    def label(self) -> str:
        """``INVITE`` or ``200`` (what a ladder arrow says first)."""
        return self.method if self.method is not None else str(self.status)


def uri_user(value: str) -> str:
    """The user part of the URI in a From/To value (``""`` when none).

    ``"Alice" <sip:alice@example.com>;tag=1`` → ``alice``.
    """
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        uri = value[lt + 1 : gt if gt > 0 else len(value)]
    else:
        uri = value.split(";", 1)[0]
    colon = uri.find(":")
    if colon < 0:
        return ""
    rest = uri[colon + 1 :]
    at = rest.find("@")
    if at < 0:
        # tel:+123 has a user and no host; sip:host has no user.
        return rest.split(";", 1)[0].strip() if uri[:colon].strip().lower() == "tel" else ""
    return rest[:at].split(";", 1)[0].split(":", 1)[0].strip()


def _header(head: bytes, low: bytes, names: tuple[bytes, ...]) -> str:
    """The first value of a header (any of its ``names``), or ``""``."""
    for name in names:
        needle = _NEEDLES[name]
        at = low.find(needle)
        if at >= 0:
            start = at + len(needle)
            break
    else:
        # Rare: whitespace before the colon ("Call-ID : x").
        match = _SPACED.search(low)
        while match is not None and match.group(1) not in names:
            match = _SPACED.search(low, match.end())
        if match is None:
            return ""
        start = match.end()
    end = head.find(b"\n", start)
    value = head[start:] if end < 0 else head[start:end]
    return value.strip().decode("utf-8", "replace")


def parse_sip(payload: bytes) -> SipSummary:
    """Index one SIP message; SipError when it is not SIP or has no Call-ID."""
    return SipSummary(*sip_fields(payload))


def sip_fields(
    payload: bytes,
) -> tuple[str | None, int | None, str, str, str, str, str, bool]:
    """:class:`SipSummary`'s fields as a tuple (the collector's hot path
    skips building the object)."""
    end = payload.find(b"\r\n\r\n", 0, _MAX_HEAD)
    head = payload[:end] if end >= 0 else payload[:_MAX_HEAD]
    if b"\x00" in head:
        head = head.replace(b"\x00", b"")
    nl = head.find(b"\n")
    first = (head if nl < 0 else head[:nl]).rstrip(b"\r")
    method: str | None = None
    status: int | None = None
    if first.startswith(b"SIP/2.0 "):
        code = first[8:11]
        if len(code) != 3 or not code.isdigit() or code[0] == 48:  # "0"
            raise SipError("not_sip", f"bad status line {first[:40]!r}")
        status = int(code)
    else:
        parts = first.split(b" ")
        if len(parts) != 3 or parts[2] != b"SIP/2.0" or not parts[1] or not parts[0].isalpha():
            raise SipError("not_sip", f"not a SIP start line: {first[:40]!r}")
        method = parts[0].upper().decode("ascii")
    low = head.lower()
    call_id = _header(head, low, (b"call-id", b"i"))
    if not call_id:
        raise SipError("bad_sip", "no Call-ID header")
    to = _header(head, low, (b"to", b"t"))
    cseq = " ".join(_header(head, low, (b"cseq",)).split())
    return (
        method,
        status,
        call_id,
        cseq,
        uri_user(_header(head, low, (b"from", b"f"))),
        uri_user(to),
        _header(head, low, (b"user-agent",)) or _header(head, low, (b"server",)),
        method is not None and method not in _IN_DIALOG and ";tag=" not in to.lower(),
    )
