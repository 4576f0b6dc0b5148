"""The console's SVG charts: escaped text, every day drawn, readable descriptions."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

from sandbox.console.charts import bar_chart, day_bars, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    svg = str(markup).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    return ET.fromstring(svg)  # noqa: S314 - our own output


def test_labels_are_escaped_and_the_numbers_are_in_the_description() -> None:
    svg = parse(bar_chart("Denied <by> provider", [("<script>", 3), ("Predicta", 12)]))
    assert svg.get("role") == "img"
    assert svg.findtext(f"{SVG}title") == "Denied <by> provider"
    assert svg.findtext(f"{SVG}desc") == "<script>: 3; Predicta: 12"
    assert next(t.text for t in svg.iter(f"{SVG}text")) == "<script>"


def test_day_bars_draw_every_day_of_the_range() -> None:
    first = date(2026, 11, 1)
    svg = parse(day_bars("Jobs per day", {first: 2, first + timedelta(days=4): 5}))
    bars = [r for r in svg.iter(f"{SVG}rect")]
    assert len(bars) == 5
    heights = [float(r.get("height", "0")) for r in bars]
    assert heights[1:4] == [0, 0, 0] and heights[4] > heights[0] > 0


def test_a_line_per_series_with_a_legend_that_wraps() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    series = {
        f"grant {i}": [(start, 0.0), (start + timedelta(hours=i + 1), i + 1.0)] for i in range(6)
    }
    svg = parse(line_chart("Budget burn", series, " ε"))
    assert len(list(svg.iter(f"{SVG}polyline"))) == 6
    legend_rows = {r.get("y") for r in svg.iter(f"{SVG}rect")}
    assert len(legend_rows) == 2  # four per row


def test_nothing_to_show_says_so() -> None:
    assert "Nothing to show yet" in bar_chart("Empty", [])
    assert "Nothing to show yet" in line_chart("Empty", {})
