"""Just enough SIP to index a captured message.

The start line (method or status), Call-ID, CSeq, the users of From and To,
and User-Agent (or Server, for answers). The raw message is kept as it
came; nothing here rewrites it. Only :class:`SipError` is ever raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from asterfleet.errors import AsterfleetError

# Header names we index, with their compact forms (RFC 3261 section 7.3.3).
_WANTED = {
    "call-id": "call-id",
    "i": "call-id",
    "cseq": "cseq",
    "from": "from",
    "f": "from",
    "to": "to",
    "t": "to",
    "user-agent": "user-agent",
    "server": "server",
}
_MAX_HEAD = 16384


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


def parse_sip(payload: bytes) -> SipSummary:
    """Index one SIP message; SipError when it is not SIP or has no Call-ID."""
    end = payload.find(b"\r\n\r\n", 0, _MAX_HEAD)
    head = payload[:end] if end >= 0 else payload[:_MAX_HEAD]
    text = head.decode("utf-8", "replace")
    if "\x00" in text:
        text = text.replace("\x00", "")
    lines = text.split("\n")
    first = lines[0].rstrip("\r")
    method: str | None = None
    status: int | None = None
    if first.startswith("SIP/2.0 "):
        code = first[8:11]
        if len(code) != 3 or not (code.isascii() and code.isdigit()) or code[0] == "0":
            raise SipError("not_sip", f"bad status line {first[:40]!r}")
        status = int(code)
    else:
        parts = first.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or not (parts[0].isascii() and parts[0].isalpha()) or not parts[1]:
            raise SipError("not_sip", f"not a SIP start line: {first[:40]!r}")
        method = parts[0].upper()
    found: dict[str, str] = {}
    for line in lines[1:]:
        colon = line.find(":")
        if colon <= 0:
            continue
        key = _WANTED.get(line[:colon].strip().lower())
        if key is not None and key not in found:
            found[key] = line[colon + 1 :].strip()
    call_id = found.get("call-id", "")
    if not call_id:
        raise SipError("bad_sip", "no Call-ID header")
    return SipSummary(
        method=method,
        status=status,
        call_id=call_id,
        cseq=" ".join(found.get("cseq", "").split()),
        from_user=uri_user(found.get("from", "")),
        to_user=uri_user(found.get("to", "")),
        user_agent=found.get("user-agent") or found.get("server", ""),
    )
