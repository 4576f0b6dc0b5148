"""Charts of a released private query (tier 3): its histograms and its group-by statistics,
each bar with its 95% interval as a whisker.

The console's result page shows them above the table of numbers; ``veil jobs result --plot
FILE.svg`` writes them into one standalone SVG file.  Only SVG is written: it is drawn by
the viewer with its own fonts (so Chinese labels render wherever a CJK font is installed),
where a PNG would need a rasteriser and a CJK font file on the machine that writes it.

What is charted: each histogram (one chart per group when the query is grouped), and each
other statistic of a grouped query across its groups.  An ungrouped query without a
histogram has nothing to compare, so it gets no chart.  Charts take the rows as the API
returns them (``{"group": {...} | None, "values": [{aggregate, value, ci95}, ...]}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from markupsafe import Markup

from i18n import Msg
from i18n.catalog import gettext as _
from sandbox.console.charts import FONT_FAMILY, Bar, interval_bars

#: A histogram bin's label: ``histogram(column)[0, 10)`` or ``histogram(column)=category``.
HISTOGRAM: Final = re.compile(r"^histogram\((?P<column>[^()]*)\)(?P<bin>[\[=].*)$")
MAX_CHARTS: Final = 12
MAX_BARS: Final = 60
_VIEWBOX: Final = re.compile(r'viewBox="0 0 (\d+(?:\.\d+)?) (\d+(?:\.\d+)?)"')


class PlotError(ValueError):
    """A plot file that cannot be written (its ``args[0]`` is a translatable ``Msg``)."""


Rows = Sequence[Mapping[str, Any]]


def _group_text(group: Mapping[str, str] | None) -> str:
    return " · ".join(str(v) for v in (group or {}).values())


def _bar(label: str, value: Mapping[str, Any]) -> Bar:
    low, high = value["ci95"]
    return Bar(label, float(value["value"]), float(low), float(high))


def _capped(bars: list[Bar], axis_label: str) -> tuple[list[Bar], str]:
    if len(bars) <= MAX_BARS:
        return bars, axis_label
    more = _("the first {shown} of {total} are drawn; the table has them all")
    return bars[:MAX_BARS], f"{axis_label} ({more.format(shown=MAX_BARS, total=len(bars))})"


def _histograms(rows: Rows) -> list[Markup]:
    """One chart per histogram and group, a bar per bin."""
    charts: dict[tuple[str, str], list[Bar]] = {}
    for row in rows:
        group = _group_text(row.get("group"))
        for value in row["values"]:
            match = HISTOGRAM.match(str(value["aggregate"]))
            if match:
                bin_label = match["bin"].removeprefix("=")
                charts.setdefault((match["column"], group), []).append(_bar(bin_label, value))
    out = []
    for (column, group), bars in charts.items():
        title = _("Histogram of {column}").format(column=column)
        if group:
            title = _("Histogram of {column} ({group})").format(column=column, group=group)
        shown, axis = _capped(bars, _("rows per bin; whiskers: 95% interval"))
        out.append(interval_bars(title, shown, axis, column))
    return out


def _group_bys(rows: Rows) -> list[Markup]:
    """One chart per non-histogram statistic of a grouped query, a bar per group."""
    if not rows or not any(row.get("group") for row in rows):
        return []
    columns = ", ".join(next(row["group"] for row in rows if row.get("group")))
    by_statistic: dict[str, list[Bar]] = {}
    for row in rows:
        for value in row["values"]:
            statistic = str(value["aggregate"])
            if not HISTOGRAM.match(statistic):
                bar = _bar(_group_text(row.get("group")), value)
                by_statistic.setdefault(statistic, []).append(bar)
    out = []
    for statistic, bars in by_statistic.items():
        title = _("{statistic} by {columns}").format(statistic=statistic, columns=columns)
        axis = _("{statistic}; whiskers: 95% interval").format(statistic=statistic)
        shown, axis = _capped(bars, axis)
        out.append(interval_bars(title, shown, axis, columns))
    return out


def result_charts(rows: Rows | None) -> list[Markup]:
    """The charts of a tier-3 result's rows; [] if none apply.

    At most ``MAX_CHARTS``: the grouped statistics first, then as many histograms as
    fit (a histogram grouped by many keys gives a chart per key; the table has them all).
    """
    if not rows:
        return []
    grouped = _group_bys(rows)[:MAX_CHARTS]
    return _histograms(rows)[: MAX_CHARTS - len(grouped)] + grouped


def check_plot_path(path: Path) -> Path:
    """``path`` if a plot can be written there; PlotError (before anything is run) if not."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        raise PlotError(
            Msg(
                "the plot is written as SVG only, not PNG: name a file ending in .svg "
                "(e.g. {name}); a browser opens it, and can print it or save it as PDF",
                name=path.with_suffix(".svg").name,
            )
        )
    if suffix != ".svg":
        raise PlotError(Msg("the plot needs a file name ending in .svg (an SVG image)"))
    if not path.parent.is_dir():
        folder = str(path.parent)
        raise PlotError(
            Msg("the folder {folder} does not exist: create it, or name another", folder=folder)
        )
    return path


def plot_document(title: str, charts: Sequence[Markup]) -> str:
    """The charts stacked into one standalone SVG file, on a white background."""
    parts, y, width = [], 0.0, 0.0
    for chart in charts:
        found = _VIEWBOX.search(chart)
        assert found is not None  # every chart of charts.py has a viewBox
        w, h = float(found[1]), float(found[2])
        placed = str(chart).replace(
            'width="100%"', f'y="{y:.0f}" width="{w:.0f}" height="{h:.0f}"', 1
        )
        parts.append(placed)
        y, width = y + h + 16, max(width, w)
    height = max(y - 16, 0.0)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT_FAMILY}">'
        f"<title>{Markup.escape(title)}</title>"
        '<rect width="100%" height="100%" fill="#ffffff"/>' + "".join(parts) + "</svg>\n"
    )


def write_plot(result: Mapping[str, Any], path: Path) -> int:
    """Write the charts of a released ``result`` (as the API returns it) to ``path``.

    Returns how many charts were drawn; 0 writes nothing (no histogram or group-by).
    """
    charts = result_charts(result.get("rows"))
    if not charts:
        return 0
    title = _("Result of {job}").format(job=result.get("job_id", ""))
    check_plot_path(path).write_text(plot_document(title, charts), encoding="utf-8")
    return len(charts)
