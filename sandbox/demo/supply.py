"""Sample data for a supply-chain analysis: an OEM's production plan and a supplier's
inventory, sharing part numbers (a demo and tests' fixture; synthetic, seeded).

The OEM plans weekly quantities of ``parts`` part numbers in four families; the supplier
stocks ``parts`` part numbers of which ``overlap`` are the OEM's (the rest serve other
customers).  The template (:func:`template`) asks, per family, how many parts both hold,
the OEM's planned demand and the supplier's stock on hand: the inventory cover.
"""

from __future__ import annotations

import csv
import io
import random
from typing import Any

FAMILIES = ("axle", "gearbox", "brake", "chassis")
WEEKS = 8

OEM_PLAN: dict[str, Any] = {
    "name": "production-plan-2027q1",
    "columns": [
        {"name": "part_no", "type": "string", "class": "internal"},
        {"name": "family", "type": "string", "class": "public", "categories": list(FAMILIES)},
        {"name": "week", "type": "integer", "class": "public", "lower": 1, "upper": WEEKS},
        {
            "name": "planned_qty",
            "type": "float",
            "class": "confidential",
            "lower": 0,
            "upper": 2000,
        },
    ],
    "privacy_unit": {"id_column": None, "max_rows_per_id": 1},
}

SUPPLIER_STOCK: dict[str, Any] = {
    "name": "inventory-2027-01",
    "columns": [
        {"name": "part_no", "type": "string", "class": "internal"},
        {"name": "on_hand", "type": "float", "class": "confidential", "lower": 0, "upper": 20000},
        {"name": "lead_time_days", "type": "integer", "class": "internal", "lower": 1, "upper": 60},
    ],
    "privacy_unit": {"id_column": None, "max_rows_per_id": 1},
}


def part(index: int) -> str:
    return f"P-{index:05d}"


def oem_plan(parts: int = 300, seed: int = 7) -> bytes:
    """CSV of the OEM's weekly plan for parts ``0 .. parts-1``."""
    rng = random.Random(seed)  # noqa: S311 - synthetic sample data
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c["name"] for c in OEM_PLAN["columns"]])
    for index in range(parts):
        family = FAMILIES[index % len(FAMILIES)]
        base = rng.uniform(50, 400)
        for week in range(1, WEEKS + 1):
            writer.writerow([part(index), family, week, f"{max(0.0, rng.gauss(base, 30)):.1f}"])
    return out.getvalue().encode()


def supplier_stock(parts: int = 300, overlap: int = 150, seed: int = 8) -> bytes:
    """CSV of the supplier's stock: parts ``parts-overlap .. 2*parts-overlap-1`` of the
    OEM's numbering (``overlap`` of them are the OEM's ``0 .. parts-1``)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic sample data
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c["name"] for c in SUPPLIER_STOCK["columns"]])
    start = parts - overlap
    for index in range(start, start + parts):
        writer.writerow([part(index), f"{rng.uniform(200, 4000):.0f}", rng.randint(3, 30)])
    return out.getvalue().encode()


def template(oem_id: str, supplier_id: str, epsilon: float = 1.0) -> dict[str, Any]:
    """Inventory cover per part family: parts in common, planned demand, stock on hand."""
    return {
        "sides": {
            "compute": {"enterprise": oem_id, "name": "plan", "key": "part_no",
                        "columns": [{"name": "family", "type": "string",
                                     "categories": list(FAMILIES)},
                                    {"name": "planned_qty", "type": "float", "lower": 0,
                                     "upper": 4000}]},
            "other": {"enterprise": supplier_id, "name": "stock", "key": "part_no",
                      "columns": [{"name": "on_hand", "type": "float", "lower": 0,
                                   "upper": 5000}]},
        },
        "sql": "SELECT plan.family, COUNT(*), SUM(plan.planned_qty), SUM(stock.on_hand) "
               "FROM plan JOIN stock ON plan.part_no = stock.part_no GROUP BY plan.family",
        "epsilon": epsilon,
        "delta": 0,
        "min_rows": 20,
    }  # fmt: skip


OEM_MAPPING = {"part_no": "part_no", "family": "family", "planned_qty": "planned_qty"}
SUPPLIER_MAPPING = {"part_no": "part_no", "on_hand": "on_hand"}
