"""Small server-rendered SVG charts: no script, no external library, readable by screen readers.

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` that says
what it shows; pages put the same numbers in a table next to it.  Colours are SVG
presentation attributes, so the console's strict Content-Security-Policy holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from html import escape

from markupsafe import Markup

PALETTE = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4")
_WIDTH, _ROW, _LABEL = 640, 26, 200


def _svg(title: str, desc: str, width: int, height: int, body: list[str]) -> Markup:
    return Markup(  # noqa: S704 - every text in it went through html.escape
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>{''.join(body)}</svg>"
    )


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"


def bar_chart(
    title: str, items: Sequence[tuple[str, float]], unit: str = "", limit: float | None = None
) -> Markup:
    """Horizontal bars, one per (label, value); ``limit`` draws each bar against a maximum."""
    if not items:
        return _empty(title)
    top = limit or max(v for _, v in items) or 1.0
    span = _WIDTH - _LABEL - 70
    body = []
    for i, (label, value) in enumerate(items):
        y = 8 + i * _ROW
        length = max(1.0, span * min(value / top, 1.0))
        body.append(
            f'<text x="{_LABEL - 8}" y="{y + 14}" text-anchor="end" font-size="12">'
            f"{escape(label[:30])}</text>"
            f'<rect x="{_LABEL}" y="{y}" width="{length:.1f}" height="{_ROW - 8}" '
            f'fill="{PALETTE[0]}"/>'
            f'<text x="{_LABEL + length + 6:.1f}" y="{y + 14}" font-size="12">'
            f"{_fmt(value)}{escape(unit)}</text>"
        )
        if limit:
            body.append(
                f'<rect x="{_LABEL}" y="{y}" width="{span}" height="{_ROW - 8}" fill="none" '
                f'stroke="#8c959f" stroke-dasharray="3 2"/>'
            )
    desc = "; ".join(f"{label}: {_fmt(v)}{unit}" for label, v in items)
    return _svg(title, desc, _WIDTH, 16 + len(items) * _ROW, body)


def day_bars(title: str, counts: Mapping[date, float], unit: str = "") -> Markup:
    """Vertical bars, one per day (days without a value are drawn as zero)."""
    if not counts:
        return _empty(title)
    days = sorted(counts)
    first, last = days[0], days[-1]
    every = [date.fromordinal(d) for d in range(first.toordinal(), last.toordinal() + 1)]
    height, base = 180, 150
    top = max(counts.values()) or 1.0
    step = (_WIDTH - 60) / len(every)
    body = [f'<line x1="40" y1="{base}" x2="{_WIDTH}" y2="{base}" stroke="#8c959f"/>']
    for i, day in enumerate(every):
        value = counts.get(day, 0)
        h = (base - 20) * value / top
        x = 44 + i * step
        body.append(
            f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{min(max(step - 4, 2), 48):.1f}" '
            f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{day}: {_fmt(value)}{escape(unit)}'
            "</title></rect>"
        )
        if len(every) <= 14 or i % max(1, len(every) // 7) == 0:
            body.append(
                f'<text x="{x:.1f}" y="{base + 16}" font-size="11">{day.strftime("%m-%d")}</text>'
            )
    body.append(f'<text x="4" y="16" font-size="11">max {_fmt(top)}{escape(unit)}</text>')
    desc = "; ".join(f"{d}: {_fmt(counts.get(d, 0))}{unit}" for d in every)
    return _svg(title, desc, _WIDTH, height, body)


def line_chart(
    title: str, series: Mapping[str, Sequence[tuple[datetime, float]]], unit: str = ""
) -> Markup:
    """One line per named series of (time, value) points, with a legend."""
    points = [p for s in series.values() for p in s]
    if not points:
        return _empty(title)
    t0 = min(t for t, _ in points).timestamp()
    t1 = max(t for t, _ in points).timestamp()
    top = max(v for _, v in points) or 1.0
    height, base, left = 230, 170, 50
    span_x, span_y = _WIDTH - left - 20, base - 20

    def xy(t: datetime, v: float) -> str:
        x = left + (span_x * (t.timestamp() - t0) / (t1 - t0) if t1 > t0 else span_x / 2)
        return f"{x:.1f},{base - span_y * v / top:.1f}"

    start, end = min(t for t, _ in points), max(t for t, _ in points)
    per_row = 4
    legend_rows = (len(series) + per_row - 1) // per_row
    height += 18 * max(0, legend_rows - 1)
    body = [
        f'<line x1="{left}" y1="{base}" x2="{_WIDTH}" y2="{base}" stroke="#8c959f"/>',
        f'<text x="4" y="24" font-size="11">{_fmt(top)}{escape(unit)}</text>',
        f'<text x="4" y="{base}" font-size="11">0</text>',
        f'<text x="{left}" y="{base + 14}" font-size="11">{start:%Y-%m-%d %H:%M}</text>',
        f'<text x="{_WIDTH - 4}" y="{base + 14}" font-size="11" text-anchor="end">'
        f"{end:%Y-%m-%d %H:%M} UTC</text>",
    ]
    descs = []
    for i, (name, data) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        line = " ".join(xy(t, v) for t, v in sorted(data))
        body.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        lx, ly = left + (i % per_row) * 150, base + 30 + 18 * (i // per_row)
        body.append(
            f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{ly + 9}" font-size="11">{escape(name[:20])}</text>'
        )
        last = sorted(data)[-1] if data else None
        descs.append(f"{name}: {_fmt(last[1]) if last else 0}{unit} at the end")
    return _svg(title, "; ".join(descs), _WIDTH, height, body)


def _empty(title: str) -> Markup:
    return _svg(
        title,
        "nothing to show yet",
        _WIDTH,
        40,
        ['<text x="8" y="24" font-size="13">Nothing to show yet.</text>'],
    )
