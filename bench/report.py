"""Printing benchmark rows as one table, and saving them as JSON."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]
Measure = Callable[[], float]

# Every ratio comes from at least this many interleaved repetitions (issue 24); `--quick`
# runs fewer and says so in the row.
REPEATS = 5


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def _spread(r: Row, side: str) -> str:
    low, high = r.get(f"{side}_min"), r.get(f"{side}_max")
    if low is None or high is None:
        return _fmt(r[side])
    return f"{_fmt(r[side])} ({_fmt(low)}-{_fmt(high)})"


def print_rows(rows: list[Row]) -> None:
    """The table: each figure with its min-max where it is a median of several runs."""
    headers = ["item", "veil", "baseline", "unit", "ratio", "runs", "goal", "met"]
    table = [
        [
            _fmt(r["item"]),
            _spread(r, "veil"),
            _spread(r, "baseline"),
            _fmt(r["unit"]),
            _spread(r, "ratio"),
            _fmt(r.get("runs")),
            _fmt(r["goal"]),
            _fmt(r["met"]),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)))


def row(
    item: str, veil: float, baseline: float | None, unit: str, goal: str, met: bool | None
) -> Row:
    """One table row: Veil's figure, the baseline's, and their ratio (None without a baseline)."""
    ratio = veil / baseline if baseline else None
    return {
        "item": item,
        "veil": _round(veil),
        "baseline": _round(baseline) if baseline is not None else None,
        "unit": unit,
        "ratio": round(ratio, 3) if ratio is not None else None,
        "goal": goal,
        "met": met,
    }


def interleaved(repeats: int, *measures: Measure) -> tuple[list[float], ...]:
    """Run the measurements in turn (A B A B ...) ``repeats`` times; one series each.

    Taking turns puts a shared machine's passing load on every side alike, so the
    ratio of the medians is steadier than any single run's.
    """
    series: list[list[float]] = [[] for _ in measures]
    for _ in range(repeats):
        for measure, values in zip(measures, series, strict=True):
            values.append(measure())
    return tuple(series)


def timed(action: Callable[[], object], scale: float = 1.0) -> Measure:
    """A measurement: one run of ``action``, its wall time in seconds times ``scale``."""

    def measure() -> float:
        t0 = time.perf_counter()
        action()
        return (time.perf_counter() - t0) * scale

    return measure


def series_row(
    item: str,
    veil: list[float],
    baseline: list[float] | None,
    unit: str,
    goal: str,
    met: Callable[[float, float | None], bool] | None,
) -> Row:
    """A row from interleaved series: medians, their min-max, and the ratio's.

    The ratio's spread pairs each run with its own turn of the baseline (run i of Veil
    against run i of the baseline), not the best against the worst. ``met`` is given the
    median and the median ratio.
    """
    v = statistics.median(veil)
    b = statistics.median(baseline) if baseline else None
    result = row(item, v, b, unit, goal, None)
    result["runs"] = len(veil)
    result["veil_min"], result["veil_max"] = _round(min(veil)), _round(max(veil))
    if baseline:
        result["baseline_min"] = _round(min(baseline))
        result["baseline_max"] = _round(max(baseline))
        ratios = [a / c for a, c in zip(veil, baseline, strict=True) if c]
        if ratios:
            result["ratio"] = round(statistics.median(ratios), 3)
            result["ratio_min"], result["ratio_max"] = round(min(ratios), 3), round(max(ratios), 3)
    if met is not None:
        result["met"] = met(v, result["ratio"])
    return result


def _round(value: float) -> float:
    return round(value, 3) if abs(value) < 10 else round(value, 1)


def save_rows(rows: list[Row], path: Path) -> None:
    machine = {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpus": __import__("os").cpu_count(),
    }
    path.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
