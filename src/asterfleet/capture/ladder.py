"""The call-flow (ladder) diagram of one call.

:func:`build_ladder` turns messages into a model (one column per host in
the order hosts are first seen, one arrow per SIP message however many
capture hosts saw it, in causal order: see :mod:`asterfleet.capture.flow`);
:func:`render_svg` draws it as standalone SVG text that the console embeds.
Both are pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from asterfleet.capture.flow import call_flow, column_names
from asterfleet.capture.store import Message

COLUMN_WIDTH = 220
ROW_HEIGHT = 36
TOP = 56
MARGIN = 110


@dataclass(frozen=True)
class Arrow:
    message_id: int
    src: int
    dst: int
    label: str
    detail: str
    ts_us: int
    delta_ms: float
    transport: str
    #: Capture hosts that captured this message (two on a hop both ends report).
    capture_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Note:
    """Something that happened beside the call (a fleet event), drawn across
    the ladder where it falls in time."""

    ts_us: int
    text: str
    kind: str = ""


@dataclass(frozen=True)
class Ladder:
    hosts: tuple[str, ...]
    arrows: tuple[Arrow, ...]
    #: Captures merged into an arrow they duplicate.
    duplicates: int = 0
    #: A name per column ("caller", a capture host's name) or "" (see flow.column_names).
    names: tuple[str, ...] = ()
    #: Notes on the same time axis, oldest first.
    notes: tuple[Note, ...] = ()


def arrow_label(msg: Message) -> str:
    """An arrow's text: the method, or the status and the start of its reason."""
    if msg.method is not None:
        return msg.method
    reason = ""
    first = msg.raw.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    parts = first.split(" ", 2)
    if len(parts) == 3:
        reason = " " + parts[2][:24]
    return f"{msg.status}{reason}"


def build_ladder(
    msgs: Sequence[Message],
    names: Mapping[str, str] | None = None,
    notes: Sequence[Note] = (),
) -> Ladder:
    """Hosts as columns in first-seen order, one arrow per message, causal order.

    ``names`` names the columns by address (the fleet's names, see
    capture.naming); without it capture hosts name them (flow.column_names).
    """
    flow = call_flow(msgs)
    hosts: list[str] = []
    index: dict[str, int] = {}

    def column(host: str) -> int:
        if host not in index:
            index[host] = len(hosts)
            hosts.append(host)
        return index[host]

    arrows: list[Arrow] = []
    start = min((f.ts_us for f in flow), default=0)
    for item in flow:
        msg = item.message
        src, dst = column(msg.src), column(msg.dst)
        arrows.append(
            Arrow(
                message_id=msg.id,
                src=src,
                dst=dst,
                label=arrow_label(msg),
                detail=msg.cseq,
                ts_us=msg.ts_us,
                delta_ms=(msg.ts_us - start) / 1000,
                transport=msg.transport,
                capture_hosts=item.capture_hosts,
            )
        )
    known = column_names(msgs) if names is None else names
    return Ladder(
        tuple(hosts),
        tuple(arrows),
        duplicates=len(msgs) - len(flow),
        names=tuple(known.get(h, "") for h in hosts),
        notes=tuple(sorted(notes, key=lambda n: n.ts_us)),
    )


def rows(ladder: Ladder) -> list[Arrow | Note]:
    """Arrows in their order, each note before the first arrow later than it."""
    out: list[Arrow | Note] = []
    pending = list(ladder.notes)
    for arrow in ladder.arrows:
        while pending and pending[0].ts_us < arrow.ts_us:
            out.append(pending.pop(0))
        out.append(arrow)
    return out + pending


def _x(col: int) -> int:
    return MARGIN + col * COLUMN_WIDTH


def render_svg(ladder: Ladder) -> str:
    """The ladder as SVG; each arrow is a ``<g class="msg" data-message-id=…>``."""
    width = MARGIN * 2 + max(len(ladder.hosts) - 1, 0) * COLUMN_WIDTH
    drawn = rows(ladder)
    height = TOP + (len(drawn) + 1) * ROW_HEIGHT
    start = min((a.ts_us - round(a.delta_ms * 1000) for a in ladder.arrows), default=0)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" '
        'font-size="12">',
        '<defs><marker id="arrowhead" markerWidth="10" markerHeight="7" refX="10" '
        'refY="3.5" orient="auto"><polygon points="0 0, 10 3.5, 0 7"/></marker></defs>',
    ]
    for i, host in enumerate(ladder.hosts):
        x = _x(i)
        name = ladder.names[i] if i < len(ladder.names) else ""
        if name:
            out.append(
                f'<text class="name" x="{x}" y="12" text-anchor="middle" '
                f'font-weight="bold">{escape(name)}</text>'
            )
        out.append(
            f'<text class="host" x="{x}" y="{26 if name else 20}" text-anchor="middle" '
            f'font-weight="{"normal" if name else "bold"}">{escape(host)}</text>'
        )
        out.append(
            f'<line class="lifeline" x1="{x}" y1="32" x2="{x}" y2="{height - 10}" '
            'stroke="#999" stroke-dasharray="4 3"/>'
        )
    for row, arrow in enumerate(drawn):
        y = TOP + row * ROW_HEIGHT
        if isinstance(arrow, Note):
            offset = (arrow.ts_us - start) / 1000
            out.append(
                f'<g class="note" data-kind={quoteattr(arrow.kind)}>'
                f'<text class="time" x="4" y="{y + 4}" fill="#8a5a00">+{offset:.1f}ms</text>'
                f'<line x1="64" y1="{y}" x2="{width - 10}" y2="{y}" stroke="#e0a000" '
                'stroke-dasharray="6 3"/>'
                f'<text x="{width // 2}" y="{y - 5}" text-anchor="middle" fill="#8a5a00">'
                f"{escape(arrow.text)}</text></g>"
            )
            continue
        x1, x2 = _x(arrow.src), _x(arrow.dst)
        colour = (
            "#1565c0"
            if not arrow.label[:1].isdigit()
            else ("#2e7d32" if arrow.label[:1] in "12" else "#c62828")
        )
        out.append(f'<g class="msg" data-message-id="{arrow.message_id}">')
        out.append(
            f'<text class="time" x="4" y="{y + 4}" fill="#666">+{arrow.delta_ms:.1f}ms</text>'
        )
        if x1 == x2:
            # A host talking to itself: a small loop.
            out.append(
                f'<path d="M{x1} {y} h40 v12 h-40" fill="none" stroke={quoteattr(colour)} '
                'marker-end="url(#arrowhead)"/>'
            )
            label_x = x1 + 45
        else:
            out.append(
                f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke={quoteattr(colour)} '
                'stroke-width="1.5" marker-end="url(#arrowhead)"/>'
            )
            label_x = (x1 + x2) // 2
        label = escape(arrow.label)
        out.append(
            f'<text x="{label_x}" y="{y - 5}" text-anchor="middle" fill={quoteattr(colour)}>'
            f"{label}</text>"
        )
        out.append(
            f"<title>{escape(arrow.label)} {escape(arrow.detail)} ({arrow.transport}), "
            f"captured by {escape(', '.join(arrow.capture_hosts))}</title></g>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
