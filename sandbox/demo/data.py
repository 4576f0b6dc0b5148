"""The embedded demo dataset: a reproducible production log of a small metal-parts factory.

Machines, shifts, temperatures, cycle times, vibration, defects, yield, a
secret recipe parameter, and whether the machine failed within 24 hours.  It
has real structure for analyses to find (presses run hotter; heat and night
shifts bring defects; hot, shaking machines fail), and is generated from a
seed so every run is identical.
"""

from __future__ import annotations

import csv
import io
import math
import random
from typing import Any

MACHINES = ("press-01", "press-02", "lathe-01", "lathe-02", "mill-01", "mill-02")
SHIFTS = ("early", "late", "night")

DECLARATION: dict[str, Any] = {
    "name": "production-log-2026",
    "columns": [
        {"name": "machine", "type": "string", "class": "public", "categories": list(MACHINES)},
        {"name": "shift", "type": "string", "class": "public", "categories": list(SHIFTS)},
        {"name": "temperature_c", "type": "float", "class": "internal", "lower": 20, "upper": 120},
        {"name": "cycle_time_s", "type": "float", "class": "internal", "lower": 10, "upper": 90},
        {"name": "vibration_mm_s", "type": "float", "class": "internal", "lower": 0, "upper": 20},
        {"name": "defects", "type": "integer", "class": "confidential", "lower": 0, "upper": 50},
        {"name": "yield_pct", "type": "float", "class": "confidential", "lower": 0, "upper": 100},
        {"name": "recipe_p1", "type": "float", "class": "secret", "lower": 0, "upper": 1},
        {"name": "failure_24h", "type": "boolean", "class": "confidential"},
    ],
    "privacy_unit": {"id_column": None, "max_rows_per_id": 1},
}


def _failure_risk(temperature: float, vibration: float) -> float:
    """Predictive-maintenance signal: hot, shaking machines fail within a day."""
    score = 0.25 * (temperature - 68.0) + 1.2 * (vibration - 4.6)
    return 1.0 / (1.0 + math.exp(-score))


def production_log(rows: int = 50_000, seed: int = 2026) -> bytes:
    """CSV bytes of ``rows`` production records, identical for the same seed."""
    rng = random.Random(seed)  # noqa: S311 - synthetic sample data, not security or DP noise
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c["name"] for c in DECLARATION["columns"]])
    for _ in range(rows):
        machine = rng.choice(MACHINES)
        shift = rng.choices(SHIFTS, weights=(5, 4, 2))[0]
        base = 78.0 if machine.startswith("press") else 62.0 if machine.startswith("mill") else 55.0
        temperature = min(119.0, max(21.0, rng.gauss(base, 7.0)))
        vibration = min(19.9, max(0.1, rng.gauss(4.0 + (temperature - 55) / 20, 1.2)))
        risk = 0.4 + max(0.0, temperature - 70) * 0.12 + (0.8 if shift == "night" else 0.0)
        defects = min(50, int(rng.expovariate(1 / risk)))
        cycle = rng.gauss(42.0 if machine.startswith("lathe") else 35.0, 4.0)
        writer.writerow(
            [
                machine,
                shift,
                f"{temperature:.2f}",
                f"{min(89.0, max(11.0, cycle)):.2f}",
                f"{vibration:.2f}",
                defects,
                f"{max(50.0, 99.5 - defects * 1.1 - rng.random()):.2f}",
                f"{rng.uniform(0.35, 0.65):.4f}",
                "true" if rng.random() < _failure_risk(temperature, vibration) else "false",
            ]
        )
    return out.getvalue().encode()


def second_enterprise_log(rows: int = 2_000, seed: int = 99) -> bytes:
    """A smaller log for a second enterprise (to show cross-tenant refusals)."""
    return production_log(rows, seed)
