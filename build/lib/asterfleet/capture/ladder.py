"""The call-flow (ladder) diagram of one call.

:func:`build_ladder` turns messages into a model (one column per host in
the order hosts are first seen, one arrow per message in time order);
:func:`render_svg` draws it as standalone SVG text that the console embeds.
Both are pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

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


@dataclass(frozen=True)
class Ladder:
    hosts: tuple[str, ...]
    arrows: tuple[Arrow, ...]


def _label(msg: Message) -> str:
    if msg.method is not None:
        return msg.method
    reason = ""
    first = msg.raw.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    parts = first.split(" ", 2)
    if len(parts) == 3:
        reason = " " + parts[2][:24]
    return f"{msg.status}{reason}"


def build_ladder(msgs: Sequence[Message]) -> Ladder:
    """Hosts as columns in first-seen order, arrows in time order."""
    ordered = sorted(msgs, key=lambda m: (m.ts_us, m.id))
    hosts: list[str] = []
    index: dict[str, int] = {}

    def column(host: str) -> int:
        if host not in index:
            index[host] = len(hosts)
            hosts.append(host)
        return index[host]

    arrows: list[Arrow] = []
    start = ordered[0].ts_us if ordered else 0
    for msg in ordered:
        src, dst = column(msg.src), column(msg.dst)
        arrows.append(
            Arrow(
                message_id=msg.id,
                src=src,
                dst=dst,
                label=_label(msg),
                detail=msg.cseq,
                ts_us=msg.ts_us,
                delta_ms=(msg.ts_us - start) / 1000,
                transport=msg.transport,
            )
        )
    return Ladder(tuple(hosts), tuple(arrows))


def _x(col: int) -> int:
    return MARGIN + col * COLUMN_WIDTH


def render_svg(ladder: Ladder) -> str:
    """The ladder as SVG; each arrow is a ``<g class="msg" data-message-id=…>``."""
    width = MARGIN * 2 + max(len(ladder.hosts) - 1, 0) * COLUMN_WIDTH
    height = TOP + (len(ladder.arrows) + 1) * ROW_HEIGHT
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" '
        'font-size="12">',
        '<defs><marker id="arrowhead" markerWidth="10" markerHeight="7" refX="10" '
        'refY="3.5" orient="auto"><polygon points="0 0, 10 3.5, 0 7"/></marker></defs>',
    ]
    for i, host in enumerate(ladder.hosts):
        x = _x(i)
        out.append(
            f'<text class="host" x="{x}" y="20" text-anchor="middle" '
            f'font-weight="bold">{escape(host)}</text>'
        )
        out.append(
            f'<line class="lifeline" x1="{x}" y1="30" x2="{x}" y2="{height - 10}" '
            'stroke="#999" stroke-dasharray="4 3"/>'
        )
    for row, arrow in enumerate(ladder.arrows):
        y = TOP + row * ROW_HEIGHT
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
            f"<title>{escape(arrow.label)} {escape(arrow.detail)} ({arrow.transport})</title></g>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
