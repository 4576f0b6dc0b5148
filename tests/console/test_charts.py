"""The console's SVG charts: escaped text, every day drawn, readable descriptions, intervals
as whiskers, legends that stay inside the drawing, titles in the reader's language."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from playwright.sync_api import Page, expect
from typer.testing import CliRunner

from i18n.catalog import use
from sandbox.cli import app as cli_app
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
    MAX_BARS,
    MAX_CHARTS,
    PlotError,
    check_plot_path,
    plot_document,
    result_charts,
)
from tests.console.conftest import log_in, token_of
from tests.sandbox.conftest import PURPOSE, World

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


def test_many_groups_keep_the_grouped_charts_and_as_many_histograms_as_fit() -> None:
    rows = rows_of(
        *(({"line": f"L{i}"}, [("count", i, 0, i + 6), ("histogram(t)[0, 1]", i, 0, 9)])
          for i in range(MAX_CHARTS + 5))
    )  # fmt: skip
    titles = [parse(c).findtext(f"{SVG}title") for c in result_charts(rows)]
    assert len(titles) == MAX_CHARTS and titles[-1] == "count by line"
    assert titles[0] == "Histogram of t (L0)"
    bars = [g for g in parse(result_charts(rows)[-1]).iter(f"{SVG}g") if g.get("class") == "bar"]
    assert len(bars) == MAX_CHARTS + 5


def test_a_chart_draws_at_most_max_bars_and_says_so() -> None:
    rows = rows_of(*(({"key": f"k{i}"}, [("count", i, 0, i + 6)]) for i in range(MAX_BARS + 10)))
    (chart,) = [parse(c) for c in result_charts(rows)]
    bars = [g for g in chart.iter(f"{SVG}g") if g.get("class") == "bar"]
    assert len(bars) == MAX_BARS
    words = " ".join(t.text or "" for t in chart.iter(f"{SVG}text"))
    assert f"the first {MAX_BARS} of {MAX_BARS + 10} are drawn" in words


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
    with pytest.raises(PlotError, match=r"SVG only, not PNG.*result\.svg"):
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


def test_the_command_line_refuses_png_before_connecting(tmp_path: Path) -> None:
    """In a fresh process (the console is loaded only for --plot), before any request."""
    command = [sys.executable, "-m", "sandbox.cli", "jobs", "result", "job_x", "--token", "t"]
    png = tmp_path / "chart.png"
    done = subprocess.run(  # a refused name: nothing else happens, so no server is needed
        [*command, "--url", "http://127.0.0.1:9", "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 2, done.stderr
    assert "SVG only, not PNG" in done.stderr and "chart.svg" in done.stderr
    assert "Traceback" not in done.stderr and not png.exists()


def test_nothing_to_show_says_so() -> None:
    assert "Nothing to show yet" in bar_chart("Empty", [])
    assert "Nothing to show yet" in line_chart("Empty", {})
    assert "Nothing to show yet" in interval_bars("Empty", [], "count")


# -- with a running Veil: the CLI's --plot, and the charts in a real browser --------------------

CHINESE_CATEGORIES = ["一号机", "二号机", "三号机"]
WORKSHOP = [
    {"name": "machine", "type": "string", "class": "public", "categories": CHINESE_CATEGORIES},
    {"name": "temperature_c", "type": "float", "class": "internal", "lower": 20, "upper": 120},
]
QUERY = {
    "aggregates": [{"kind": "count"}, {"kind": "histogram", "column": "temperature_c", "bins": 5}],
    "group_by": ["machine"],
}


def workshop_dataset(world: World) -> str:
    """A dataset with Chinese category names (三号机 has no rows), granted for tier 3."""
    dataset = world.acme.create_dataset("workshop-temperatures", WORKSHOP)
    rows = "".join(f"{CHINESE_CATEGORIES[i % 2]},{40 + i % 50}\n" for i in range(400))
    world.acme.upload(dataset["id"], f"machine,temperature_c\n{rows}".encode())
    until = datetime.now(UTC) + timedelta(days=1)
    columns = [c["name"] for c in WORKSHOP]
    world.acme.create_grant(world.provider_id, [dataset["id"]], columns, [3], [PURPOSE], until, 3.0)
    return str(dataset["id"])


def cli(world: World, *args: str) -> Result:
    return CliRunner().invoke(
        cli_app, [*args, "--token", token_of(world.provider), "--url", world.url]
    )


@pytest.mark.integration
def test_cli_plot_draws_bars_intervals_and_category_names(world: World, tmp_path: Path) -> None:
    dataset = workshop_dataset(world)
    query = tmp_path / "query.json"
    query.write_text(json.dumps(QUERY), encoding="utf-8")
    submit = ["jobs", "submit", "--dataset", dataset, "--purpose", PURPOSE, "--epsilon", "1"]
    refused = cli(world, *submit, "--query", str(query), "--plot", str(tmp_path / "r.png"))
    assert refused.exit_code == 2, refused.output
    assert "SVG" in refused.output and "r.svg" in refused.output
    assert world.provider.list_jobs() == []  # refused before anything was submitted

    plot = tmp_path / "result.svg"
    ran = cli(world, *submit, "--query", str(query), "--plot", str(plot))
    assert ran.exit_code == 0, ran.output
    assert f"wrote 4 chart(s) to {plot}" in ran.output
    root = ET.parse(plot).getroot()  # noqa: S314 - the file this test just wrote
    charts = root.findall(f"{SVG}svg")
    titles = [c.findtext(f"{SVG}title") for c in charts]
    assert titles == [
        *(f"Histogram of temperature_c ({m})" for m in CHINESE_CATEGORIES),
        "count by machine",
    ]
    by_machine = charts[3]
    assert [t.text for t in texts(by_machine, "category")] == CHINESE_CATEGORIES
    bars = [g for g in by_machine.iter(f"{SVG}g") if g.get("class") == "bar"]
    assert len(bars) == 3 and all(g.find(f"{SVG}rect") is not None for g in bars)
    whiskers = [g for g in by_machine.iter(f"{SVG}g") if g.get("class") == "interval"]
    assert len(whiskers) == 3 and all(len(g.findall(f"{SVG}line")) == 3 for g in whiskers)
    # The released counts and intervals are drawn as the API released them: never below 0.
    job_id = world.provider.list_jobs()[0]["id"]
    released = world.provider.get_result(job_id)
    for row in released["rows"]:
        for value in row["values"]:
            assert 0 <= value["ci95"][0] <= value["value"] <= value["ci95"][1]

    again = tmp_path / "again.svg"
    fetched = cli(world, "jobs", "result", job_id, "--plot", str(again))
    assert fetched.exit_code == 0, fetched.output
    assert again.read_text(encoding="utf-8") == plot.read_text(encoding="utf-8")
    nothing = cli(world, "jobs", "submit", "--dataset", dataset, "--purpose", PURPOSE,
                  "--epsilon", "0.1", "--count", "--plot", str(tmp_path / "none.svg"))  # fmt: skip
    assert nothing.exit_code == 0 and "nothing to plot" in nothing.output
    assert not (tmp_path / "none.svg").exists()


#: Each ``<text>`` of the SVG charts whose drawn box (Chromium's getBBox, in the
#: chart's own units) leaves its viewBox.
OUTSIDE = """(selector) => {
  const out = [];
  for (const svg of document.querySelectorAll(selector)) {
    const box = svg.viewBox.baseVal;
    for (const text of svg.querySelectorAll('text')) {
      const b = text.getBBox();
      if (b.x < box.x - 0.5 || b.y < box.y - 0.5 || b.x + b.width > box.x + box.width + 0.5
          || b.y + b.height > box.y + box.height + 0.5) out.push(text.textContent);
    }
  }
  return out;
}"""


@pytest.mark.integration
def test_the_result_page_draws_the_charts_in_the_readers_language(page: Page, world: World) -> None:
    dataset = workshop_dataset(world)
    job = world.provider.submit_query(dataset, PURPOSE, QUERY, epsilon=1.0)
    assert world.provider.wait_for_job(job["id"], timeout=120)["status"] == "released"
    log_in(page, world.url, token_of(world.provider))
    page.goto(f"{world.url}/console/jobs/{job['id']}")
    result = page.get_by_role("region", name="Result")
    expect(result.get_by_role("img", name="count by machine")).to_be_visible()
    for machine in CHINESE_CATEGORIES:
        name = f"Histogram of temperature_c ({machine})"
        expect(result.get_by_role("img", name=name)).to_be_visible()
    expect(result.locator("svg.chart g.interval")).to_have_count(3 * 5 + 3)
    expect(result.locator("svg.chart text.category").filter(has_text="二号机")).to_have_count(1)
    assert page.evaluate(OUTSIDE, "svg.chart") == []
    page.screenshot(path="/tmp/provider-result-charts.png", full_page=True)

    page.context.add_cookies([{"name": "veil_lang", "value": "zh-CN", "url": world.url}])
    page.reload()
    expect(page.get_by_role("img", name="按 machine 分组的 count")).to_be_visible()
    expect(page.get_by_role("img", name="temperature_c 的直方图（一号机）")).to_be_visible()  # noqa: RUF001
    page.screenshot(path="/tmp/provider-result-charts-zh.png", full_page=True)


@pytest.mark.integration
def test_budget_burn_shows_totals_and_a_whole_legend(page: Page, world: World) -> None:
    long_name = "Suzhou Industrial Park Digital Transformation Services Consortium (Pilot 2)"
    provider = world.operator.create_provider(long_name)
    until = datetime.now(UTC) + timedelta(days=1)
    world.acme.create_grant(
        provider["id"], [world.dataset_id], ["machine"], [3], [PURPOSE], until, 3.0
    )
    count = {"aggregates": [{"kind": "count"}]}
    job = world.provider.submit_query(world.dataset_id, PURPOSE, count, epsilon=0.25)
    assert world.provider.wait_for_job(job["id"], timeout=120)["status"] == "released"
    log_in(page, world.url, token_of(world.acme))
    page.goto(f"{world.url}/console/grants")
    chart = page.locator("svg.chart").first
    legend = chart.locator("text.legend")
    expect(legend).to_have_count(2)
    expect(legend.filter(has_text="of 1 ε")).to_contain_text("0.25 ε of 1 ε")
    expect(legend.filter(has_text=long_name)).to_contain_text(f"{long_name} #")
    expect(legend.filter(has_text=long_name)).to_contain_text("0 ε of 3 ε")
    expect(chart.locator("line.total")).to_have_count(2)
    assert page.evaluate(OUTSIDE, "svg.chart") == []
    page.screenshot(path="/tmp/enterprise-budget-burn.png", full_page=True)
