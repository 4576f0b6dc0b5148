"""Small server-rendered SVG charts: no script, no external library, readable by screen readers.

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` that says
what it shows; pages put the same numbers in a table next to it.  Colours and fonts are
SVG presentation attributes, so the console's strict Content-Security-Policy holds, and
each SVG is also a valid standalone file (``veil jobs result --plot``).

Text is laid out by an estimate of its width (``text_width``), deliberately generous (a
CJK character counts a full em), so labels and legends are wrapped or shortened before
they would leave the drawing; the font list names CJK fonts first so Chinese column and
category names render wherever one of them is installed.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from html import escape

from markupsafe import Markup

from i18n.catalog import gettext as _

PALETTE = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4")
#: CJK fonts first: Chinese labels render with any of them (Linux, macOS, Windows).
FONT_FAMILY = (
    "'Noto Sans CJK SC', 'Source Han Sans SC', 'Microsoft YaHei', 'PingFang SC', "
    "'WenQuanYi Micro Hei', sans-serif"
)
_WIDTH, _ROW, _LABEL = 640, 26, 200
_NARROW = frozenset("iljtfI.,;:|!'()[]{} ")
_BOLD, _END, _MIDDLE = ' font-weight="bold"', ' text-anchor="end"', ' text-anchor="middle"'


def _svg(title: str, desc: str, width: int, height: float, body: list[str]) -> Markup:
    return Markup(  # noqa: S704 - every text in it went through html.escape
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height:.0f}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'font-family="{FONT_FAMILY}">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>{''.join(body)}</svg>"
    )


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"


def text_width(text: str, size: float) -> float:
    """A generous estimate of ``text``'s drawn width at font ``size`` (in the same units).

    Wide (CJK) characters take one em, capitals and ``m``/``w`` 0.8, narrow ones 0.35,
    others 0.6: wider than common sans-serif fonts draw them, so what fits here fits there.
    """
    total = 0.0
    for char in text:
        if unicodedata.east_asian_width(char) in ("W", "F"):
            total += 1.0
        elif char in _NARROW:
            total += 0.35
        elif char.isupper() or char in "mwMW@%":
            total += 0.8
        else:
            total += 0.6
    return total * size


def shorten(text: str, width: float, size: float) -> str:
    """``text``, cut with an ellipsis to fit ``width`` (the whole text stays in titles)."""
    if text_width(text, size) <= width:
        return text
    while text and text_width(text + "…", size) > width:
        text = text[:-1]
    return text + "…"


def wrap(text: str, width: float, size: float) -> list[str]:
    """``text`` in lines that each fit ``width``: broken at spaces where it can be, else
    anywhere (Chinese has no spaces, and a long id must still fit)."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if text_width(candidate, size) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for char in word:
            if line and text_width(line + char, size) > width:
                lines.append(line)
                line = ""
            line += char
    return [*lines, line] if line or not lines else lines


def _text(x: float, y: float, text: str, size: int = 12, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}"{extra}>{escape(text)}</text>'


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
        body.append(  # a long name is shortened to its column; whole in the bar's tooltip
            _text(_LABEL - 8, y + 14, shorten(label, _LABEL - 12, 12), 12, _END)
            + f'<rect x="{_LABEL}" y="{y}" width="{length:.1f}" height="{_ROW - 8}" '
            f'fill="{PALETTE[0]}"><title>{escape(label)}</title></rect>'
            + _text(_LABEL + length + 6, y + 14, f"{_fmt(value)}{unit}", 12)
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
    body.append(_text(4, 16, _("max {value}").format(value=f"{_fmt(top)}{unit}"), 11))
    desc = "; ".join(f"{d}: {_fmt(counts.get(d, 0))}{unit}" for d in every)
    return _svg(title, desc, _WIDTH, height, body)


def line_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[datetime, float]]],
    unit: str = "",
    totals: Mapping[str, float] | None = None,
) -> Markup:
    """One line per named series of (time, value) points, with a legend below the plot.

    ``totals``: a limit per series (a grant's budget), drawn as a dashed line in the
    series' colour and named in its legend entry ("0.3 of 1 ε").  Legend entries are
    measured and flow onto as many rows as they need; a name wider than the chart wraps.
    """
    totals = totals or {}
    points = [p for s in series.values() for p in s]
    if not points:
        return _empty(title)
    t0 = min(t for t, _ in points).timestamp()
    t1 = max(t for t, _ in points).timestamp()
    top = max([v for _, v in points] + [totals.get(name, 0.0) for name in series]) or 1.0
    base, left = 170, 50
    span_x, span_y = _WIDTH - left - 20, base - 20

    def xy(t: datetime, v: float) -> str:
        x = left + (span_x * (t.timestamp() - t0) / (t1 - t0) if t1 > t0 else span_x / 2)
        return f"{x:.1f},{base - span_y * v / top:.1f}"

    start, end = min(t for t, _ in points), max(t for t, _ in points)
    body = [
        f'<line x1="{left}" y1="{base}" x2="{_WIDTH}" y2="{base}" stroke="#8c959f"/>',
        _text(4, 24, f"{_fmt(top)}{unit}", 11),
        _text(4, base, "0", 11),
        _text(left, base + 14, f"{start:%Y-%m-%d %H:%M}", 11),
        _text(_WIDTH - 4, base + 14, f"{end:%Y-%m-%d %H:%M} UTC", 11, ' text-anchor="end"'),
    ]
    entries, descs = [], []
    for i, (name, data) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        line = " ".join(xy(t, v) for t, v in sorted(data))
        body.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        last = sorted(data)[-1][1] if data else 0.0
        label = f"{name}: {_fmt(last)}{unit}"
        if name in totals:
            y = base - span_y * totals[name] / top
            body.append(_total_line(f"{name}: {_fmt(totals[name])}{unit}", left, y, colour))
            label = _("{name}: {spent} of {total}").format(
                name=name, spent=f"{_fmt(last)}{unit}", total=f"{_fmt(totals[name])}{unit}"
            )
        entries.append((colour, label))
        descs.append(label)
    legend, height = _legend(entries, left, base + 30)
    return _svg(title, "; ".join(descs), _WIDTH, height, body + legend)


def _total_line(tip: str, left: float, y: float, colour: str) -> str:
    """A series' limit: a dashed line across the plot in the series' colour."""
    return (
        f'<line class="total" x1="{left}" y1="{y:.1f}" x2="{_WIDTH - 20}" y2="{y:.1f}" '
        f'stroke="{colour}" stroke-dasharray="6 4" stroke-width="1.5">'
        f"<title>{escape(tip)}</title></line>"
    )


@dataclass(frozen=True)
class Bar:
    """One bar of ``interval_bars``: a released value and its 95% interval."""

    label: str
    value: float
    low: float
    high: float


def _nice_step(span: float) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about five ticks."""
    raw = span / 5 or 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


@dataclass(frozen=True)
class _Scale:
    """The value axis of ``interval_bars``: round ends, and where a value is drawn."""

    low: float
    high: float
    step: float
    left: float
    right: float

    @classmethod
    def of(cls, bars: Sequence[Bar], left: float, right: float) -> _Scale:
        low = min(0.0, *(b.low for b in bars), *(b.value for b in bars))
        high = max(0.0, *(b.high for b in bars), *(b.value for b in bars))
        step = _nice_step(high - low)
        low, high = math.floor(low / step) * step, math.ceil(high / step) * step
        return cls(low, high if high > low else low + step, step, left, right)

    def x(self, value: float) -> float:
        return self.left + (self.right - self.left) * (value - self.low) / (self.high - self.low)

    def axis(self, top: float, base: float) -> list[str]:
        """Grid lines and tick labels at each step, the zero line, the axis line."""
        body = []
        for k in range(round((self.high - self.low) / self.step) + 1):
            x = self.x(self.low + k * self.step)
            body.append(
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{base}" stroke="#d0d7de"/>'
            )
            body.append(_text(x, base + 14, _fmt(self.low + k * self.step), 11, _MIDDLE))
        zero = self.x(0.0)
        return [
            *body,
            f'<line x1="{zero:.1f}" y1="{top - 2}" x2="{zero:.1f}" y2="{base}" stroke="#57606a"/>',
            f'<line x1="{self.left}" y1="{base}" x2="{self.right}" y2="{base}" stroke="#57606a"/>',
        ]


def interval_bars(
    title: str, bars: Sequence[Bar], axis_label: str, category_label: str = ""
) -> Markup:
    """Horizontal bars from 0 to each value, with its interval drawn as a whisker.

    Categories are named on the left (shortened to fit, whole in each bar's tooltip and
    the description), the value on the right; the value axis has round ticks and
    ``axis_label`` under it, ``category_label`` heads the category names.
    """
    bars = [b for b in bars if all(map(math.isfinite, (b.value, b.low, b.high)))]
    if not bars:
        return _empty(title)
    size, row = 12, 24
    title_lines = wrap(title, _WIDTH - 16, 14)
    top = 12 + 18 * len(title_lines) + 14
    widest = max([text_width(b.label, size) for b in bars] + [text_width(category_label, 11)])
    label_width = min(widest + 8, 220.0)
    scale = _Scale.of(bars, 12 + label_width, _WIDTH - 84)
    base = top + row * len(bars)
    body = [_text(8, 20 + 18 * k, line, 14, _BOLD) for k, line in enumerate(title_lines)]
    if category_label:
        body.append(_text(8, top - 6, shorten(category_label, label_width, 11), 11, _BOLD))
    body.append(_text(_WIDTH - 8, top - 6, _("released value"), 11, _END + _BOLD))
    body += scale.axis(top, base)
    body += [_interval_bar(bar, top + i * row, scale, label_width) for i, bar in enumerate(bars)]
    axis_lines = wrap(axis_label, _WIDTH - 16, 11)
    middle = (scale.left + scale.right) / 2
    body += [
        _text(middle, base + 32 + 14 * k, line, 11, _MIDDLE) for k, line in enumerate(axis_lines)
    ]
    desc = "; ".join(_interval_text(b) for b in bars)
    return _svg(title, desc, _WIDTH, base + 32 + 14 * len(axis_lines), body)


def _interval_text(bar: Bar) -> str:
    return _("{label}: {value} (95% interval {low} to {high})").format(
        label=bar.label, value=_fmt(bar.value), low=_fmt(bar.low), high=_fmt(bar.high)
    )


def _interval_bar(bar: Bar, y: float, scale: _Scale, label_width: float) -> str:
    """One category: its name, the bar, the whisker with end caps, the value."""
    start, end = sorted((scale.x(0.0), scale.x(bar.value)))
    low, high, mid = scale.x(bar.low), scale.x(bar.high), y + 12
    name = shorten(bar.label, label_width - 4, 12)
    return (
        f'<g class="bar"><title>{escape(_interval_text(bar))}</title>'
        + _text(8 + label_width, mid + 4, name, 12, _END + ' class="category"')
        + f'<rect x="{start:.1f}" y="{y + 4}" width="{max(end - start, 1.0):.1f}" height="16" '
        f'fill="{PALETTE[0]}" fill-opacity="0.75"/>'
        f'<g class="interval" stroke="#24292f" stroke-width="1.5">'
        f'<line x1="{low:.1f}" y1="{mid}" x2="{high:.1f}" y2="{mid}"/>'
        f'<line x1="{low:.1f}" y1="{mid - 5}" x2="{low:.1f}" y2="{mid + 5}"/>'
        f'<line x1="{high:.1f}" y1="{mid - 5}" x2="{high:.1f}" y2="{mid + 5}"/></g>'
        + _text(_WIDTH - 8, mid + 4, _fmt(bar.value), 12, _END + ' class="value"')
        + "</g>"
    )


def _legend(entries: Sequence[tuple[str, str]], left: float, top: float) -> tuple[list[str], float]:
    """Legend entries (colour, text) flowed into rows from ``top``; and the height used."""
    size, line_height, gap, right = 11, 15, 18, _WIDTH - 8
    body: list[str] = []
    x, y, row_height = left, top, 0.0
    for colour, text in entries:
        lines = wrap(text, right - left - 14, size)
        width = 14 + max(text_width(line, size) for line in lines)
        if x > left and x + width > right:
            x, y, row_height = left, y + row_height + 4, 0.0
        body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="10" height="10" fill="{colour}"/>')
        body.extend(
            _text(x + 14, y + 9 + line_height * k, line, size, ' class="legend"')
            for k, line in enumerate(lines)
        )
        row_height = max(row_height, line_height * len(lines))
        x += width + gap
    return body, y + row_height + 8


def _empty(title: str) -> Markup:
    text = _("Nothing to show yet.")
    return _svg(title, text, _WIDTH, 40, [_text(8, 24, text, 13)])
