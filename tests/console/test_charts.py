"""The console's SVG charts: escaped text, every day drawn, readable descriptions, intervals
as whiskers, legends that stay inside the drawing, titles in the reader's language."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from i18n.catalog import use
from sandbox.console.charts import (
    Bar,
    bar_chart,
    day_bars,
    interval_bars,
    line_chart,
    text_width,
    wrap,
)
from sandbox.console.result_charts import (
    PlotError,
    check_plot_path,
    plot_document,
    result_charts,
)

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 11, 1, tzinfo=UTC)


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))  # noqa: S314 - our own output


def view_box(svg: ET.Element) -> tuple[float, float]:
    _, _, width, height = map(float, svg.get("viewBox", "").split())
    return width, height


def texts(svg: ET.Element, css_class: str | None = None) -> list[ET.Element]:
    found = svg.iter(f"{SVG}text")
    return [t for t in found if css_class is None or t.get("class") == css_class]


def test_labels_are_escaped_and_the_numbers_are_in_the_description() -> None:
    svg = parse(bar_chart("Denied <by> provider", [("<script>", 3), ("Predicta", 12)]))
    assert svg.get("role") == "img"
    assert svg.findtext(f"{SVG}title") == "Denied <by> provider"
    assert svg.findtext(f"{SVG}desc") == "<script>: 3; Predicta: 12"
    assert next(t.text for t in svg.iter(f"{SVG}text")) == "<script>"


def test_fonts_name_cjk_fonts_before_the_generic_family() -> None:
    family = parse(bar_chart("x", [("a", 1)])).get("font-family", "")
    names = [name.strip(" '") for name in family.split(",")]
    assert names[:4] == ["Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "PingFang SC"]
    assert names[-1] == "sans-serif"


def test_day_bars_draw_every_day_of_the_range() -> None:
    first = date(2026, 11, 1)
    svg = parse(day_bars("Jobs per day", {first: 2, first + timedelta(days=4): 5}))
    bars = [r for r in svg.iter(f"{SVG}rect")]
    assert len(bars) == 5
    heights = [float(r.get("height", "0")) for r in bars]
    assert heights[1:4] == [0, 0, 0] and heights[4] > heights[0] > 0


def test_text_is_wrapped_to_fit_at_spaces_or_anywhere() -> None:
    assert text_width("设备编号", 10) == 40  # a CJK character takes a full em
    for text in ("Predicta Analytics GmbH " * 4, "数字化转型服务商" * 10, "x" * 300):
        lines = wrap(text.strip(), 200, 11)
        assert all(text_width(line, 11) <= 200 for line in lines)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def burn_chart(names: list[str], totals: list[float]) -> ET.Element:
    series = {
        name: [(START, 0.0), (START + timedelta(hours=i + 1), 0.25 * (i + 1))]
        for i, name in enumerate(names)
    }
    return parse(line_chart("Budget burn", series, " ε", dict(zip(names, totals, strict=True))))


def test_each_grant_shows_its_total_and_what_it_spent_of_it() -> None:
    svg = burn_chart(["Predicta #a1", "Other #b2"], [1.0, 2.0])
    assert len(list(svg.iter(f"{SVG}polyline"))) == 2
    lines = [line for line in svg.iter(f"{SVG}line") if line.get("class") == "total"]
    assert [line.get("stroke-dasharray") for line in lines] == ["6 4", "6 4"]
    # The larger total sets the top of the scale; the smaller sits halfway up.
    y1, y2 = (float(line.get("y1", "0")) for line in lines)
    base = 170.0
    assert (base - y1) == pytest.approx((base - y2) / 2, abs=0.2)
    legend = [t.text for t in texts(svg, "legend")]
    assert legend == ["Predicta #a1: 0.25 ε of 1 ε", "Other #b2: 0.5 ε of 2 ε"]


def test_a_legend_of_long_names_stays_whole_and_inside_the_drawing() -> None:
    names = [
        "Predicta Industrial Analytics and Predictive Maintenance Services Ltd #a1b2c3",
        "苏州工业园区数字化转型服务商联合体（第二批试点城市）预测性维护项目 #d4e5f6",  # noqa: RUF001
        "Other Analytics #0a0b0c",
        "x" * 140 + " #ffffff",  # one word wider than the chart
    ]
    svg = burn_chart(names, [1.0, 1.0, 2.0, 0.5])
    width, height = view_box(svg)
    legend = texts(svg, "legend")
    for text in legend:
        x, y = float(text.get("x", "0")), float(text.get("y", "0"))
        assert x >= 0 and x + text_width(text.text or "", 11) <= width, text.text
        assert 0 < y <= height - 3, text.text
    joined = "".join(t.text or "" for t in legend).replace(" ", "")
    for name in names:
        assert name.replace(" ", "") in joined  # nothing cut off
    swatches = [r for r in svg.iter(f"{SVG}rect")]
    assert len(swatches) == len(names)


def test_interval_bars_draw_a_bar_and_a_whisker_per_category() -> None:
    bars = [
        Bar("一号机", 12.0, 6.0, 18.0),
        Bar("二号机", 0.0, 0.0, 6.0),
        Bar("a sum below zero", -30.0, -40.0, -20.0),
    ]
    svg = parse(interval_bars("温度 by 设备", bars, "mean(温度); whiskers: 95% interval", "设备"))
    groups = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "bar"]
    assert len(groups) == 3
    for group, bar in zip(groups, bars, strict=True):
        assert group.findtext(f"{SVG}text") == bar.label
        rect = group.find(f"{SVG}rect")
        assert rect is not None
        whisker = group.find(f"{SVG}g[@class='interval']")
        assert whisker is not None and len(whisker) == 3  # the span and two end caps
        span = whisker[0]
        low, high = float(span.get("x1", "0")), float(span.get("x2", "0"))
        start, end = (
            float(rect.get("x", "0")),
            float(rect.get("x", "0")) + float(rect.get("width", "0")),
        )
        value_x = end if bar.value >= 0 else start
        assert low <= value_x + 0.1 and value_x - 0.1 <= high
    assert "一号机: 12 (95% interval 6 to 18)" in (svg.findtext(f"{SVG}desc") or "")
    names = {t.text for t in svg.iter(f"{SVG}text")}
    assert {"设备", "mean(温度); whiskers: 95% interval", "-40", "0", "20"} <= names


def rows_of(*groups: tuple[dict[str, str] | None, list[tuple[str, float, float, float]]]) -> Any:
    return [
        {
            "group": group,
            "values": [
                {"aggregate": a, "value": v, "noise_scale": 2.0, "ci95": [lo, hi]}
                for a, v, lo, hi in values
            ],
        }
        for group, values in groups
    ]


def test_a_histogram_and_a_group_by_become_charts() -> None:
    histogram = rows_of(
        (
            None,
            [
                ("histogram(温度)[20, 70)", 14, 8, 20),
                ("histogram(温度)[70, 120]", 0, 0, 6),
                ("histogram(班次)=早班", 40, 34, 46),
            ],
        )
    )
    charts = [parse(c) for c in result_charts(histogram)]
    assert [c.findtext(f"{SVG}title") for c in charts] == ["Histogram of 温度", "Histogram of 班次"]
    assert [t.text for t in texts(charts[0], "category")] == ["[20, 70)", "[70, 120]"]
    assert [t.text for t in texts(charts[1], "category")] == ["早班"]

    grouped = rows_of(
        ({"设备": "一号机"}, [("count", 10, 4, 16), ("mean(温度)", 61.5, 50, 70)]),
        ({"设备": "二号机"}, [("count", 0, 0, 6), ("mean(温度)", 20, 20, 120)]),
    )
    charts = [parse(c) for c in result_charts(grouped)]
    assert [c.findtext(f"{SVG}title") for c in charts] == ["count by 设备", "mean(温度) by 设备"]
    assert [t.text for t in texts(charts[0], "category")] == ["一号机", "二号机"]
    # An ungrouped query without a histogram has nothing to compare.
    assert result_charts(rows_of((None, [("count", 10, 4, 16)]))) == []


def test_titles_and_axis_labels_are_in_the_readers_language() -> None:
    rows = rows_of((None, [("histogram(温度)[20, 70)", 14, 8, 20)]))
    with use("zh-CN"):
        svg = parse(result_charts(rows)[0])
        empty = str(line_chart("x", {}))
    assert svg.findtext(f"{SVG}title") == "温度 的直方图"
    axis = "每个区间的行数；误差线：95% 区间"  # noqa: RUF001 - Chinese punctuation
    assert axis in {t.text for t in svg.iter(f"{SVG}text")}
    assert "暂无可显示的内容。" in empty


def test_a_plot_file_is_svg_and_png_is_refused_naming_svg(tmp_path: Path) -> None:
    assert check_plot_path(tmp_path / "result.svg") == tmp_path / "result.svg"
    with pytest.raises(PlotError, match=r"SVG only.*result\.svg"):
        check_plot_path(tmp_path / "result.png")
    with pytest.raises(PlotError, match=r"ending in \.svg"):
        check_plot_path(tmp_path / "result.pdf")
    with pytest.raises(PlotError, match="does not exist"):
        check_plot_path(tmp_path / "missing" / "result.svg")
    charts = result_charts(rows_of((None, [("histogram(t)[0, 1]", 3, 0, 9)])))
    document = plot_document("Result of job_1", charts * 2)
    root = ET.fromstring(document.split("\n", 1)[1])  # noqa: S314 - our own output
    nested = root.findall(f"{SVG}svg")
    assert float(nested[0].get("y", "")) == 0
    assert float(nested[1].get("y", "0")) >= float(nested[0].get("height", "0"))
    assert re.search(r'^<\?xml version="1.0" encoding="UTF-8"\?>', document)


def test_nothing_to_show_says_so() -> None:
    assert "Nothing to show yet" in bar_chart("Empty", [])
    assert "Nothing to show yet" in line_chart("Empty", {})
    assert "Nothing to show yet" in interval_bars("Empty", [], "count")
