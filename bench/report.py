"""Printing benchmark rows as one table, and saving them as JSON."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def print_rows(rows: list[Row]) -> None:
    headers = ["item", "veil", "baseline", "unit", "ratio", "goal", "met"]
    table = [[_fmt(r[h]) for h in headers] for r in rows]
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
        "veil": round(veil, 1),
        "baseline": round(baseline, 1) if baseline is not None else None,
        "unit": unit,
        "ratio": round(ratio, 3) if ratio is not None else None,
        "goal": goal,
        "met": met,
    }


def save_rows(rows: list[Row], path: Path) -> None:
    machine = {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpus": __import__("os").cpu_count(),
    }
    path.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
