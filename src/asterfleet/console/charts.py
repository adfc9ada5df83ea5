"""Server-rendered SVG line charts (pure): a time axis, a value axis from 0,
one line per series, a legend. No script, so a chart is readable in any
browser and in a saved page."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 16, 28
COLOURS = ("#1565c0", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#5d4037", "#455a64")


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[int, float], ...]  # (time µs, value), oldest first


def _nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^n at or above ``value`` (axis top)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** _floor_log10(value)
    for step in (1.0, 2.0, 2.5, 5.0):
        if value <= step * power:
            return step * power
    return 10.0 * power


def _floor_log10(value: float) -> int:
    n = 0
    while value >= 10:
        value /= 10
        n += 1
    while value < 1:
        value *= 10
        n -= 1
    return n


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def line_chart(
    title: str,
    series: Sequence[Series],
    start_us: int,
    end_us: int,
    unit: str = "",
    y_max: float | None = None,
) -> str:
    """An SVG chart of ``series`` from ``start_us`` to ``end_us``; each line is a
    ``<path class="series" data-series=NAME>``, each point a ``<circle>`` with a
    title giving its value."""
    span = max(end_us - start_us, 1)
    top = (
        y_max
        if y_max is not None
        else _nice_max(max((v for s in series for _, v in s.points), default=0.0))
    )
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: int) -> float:
        return LEFT + (t - start_us) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - (min(v, top) / top) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" '
        f'font-size="11" role="img" aria-label={quoteattr(title)}>',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):
        value = top * i / 4
        yy = y(value)
        out.append(
            f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{LEFT + plot_w}" y2="{yy:.1f}" stroke="#e3e6ea"/>'
            f'<text x="{LEFT - 4}" y="{yy + 4:.1f}" text-anchor="end" fill="#666">'
            f"{escape(_fmt(value) + unit)}</text>"
        )
    for i in range(5):
        t = start_us + span * i // 4
        label = time.strftime("%H:%M", time.gmtime(t / 1_000_000))
        out.append(
            f'<text x="{x(t):.1f}" y="{HEIGHT - 8}" text-anchor="middle" fill="#666">{label}</text>'
        )
    if not any(s.points for s in series):
        out.append(
            f'<text class="empty" x="{LEFT + plot_w // 2}" y="{TOP + plot_h // 2}" '
            'text-anchor="middle" fill="#999">no calls in this window</text>'
        )
    for n, s in enumerate(series):
        colour = quoteattr(COLOURS[n % len(COLOURS)])
        if s.points:
            d = " ".join(
                f"{'M' if i == 0 else 'L'}{x(t):.1f} {y(v):.1f}"
                for i, (t, v) in enumerate(s.points)
            )
            out.append(
                f'<path class="series" data-series={quoteattr(s.name)} d="{d}" fill="none" '
                f'stroke={colour} stroke-width="1.8"/>'
            )
            for t, v in s.points:
                out.append(
                    f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill={colour}>'
                    f"<title>{escape(s.name)}: {escape(_fmt(v) + unit)}</title></circle>"
                )
        ly = TOP + 12 + n * 16
        out.append(
            f'<rect x="{WIDTH - RIGHT + 12}" y="{ly - 8}" width="10" height="10" fill={colour}/>'
            f'<text class="legend" x="{WIDTH - RIGHT + 26}" y="{ly + 1}">'
            f"{escape(s.name[:18])}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
