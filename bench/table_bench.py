"""Benchmark: a tier-2 table (disclosure control + cell-key perturbation) vs a plain group-by.

Veil's figure is ``analytics.sdc.run_table_query`` on a frame in memory, as the job's
sandboxed process runs it: record keys (AES-CMAC of every row), per-unit statistics,
ACRO's checks and the perturbation.  The baseline is the same exact aggregates as one
polars group-by, with no protection at all.  3 aggregates, 20 x 3 = 60 cells.

Run alone: ``.venv/bin/python bench/table_bench.py [--rows 1000000] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
)
from analytics.sdc import TableQuery, run_table_query
from bench.query_bench import LINES, make_frame
from bench.report import REPEATS, Row, interleaved, series_row, timed

SHIFTS = ("early", "late", "night")
SCHEMA = DatasetSchema(
    (
        ColumnSpec("line", ColumnType.STRING, ColumnClass.PUBLIC, categories=tuple(LINES)),
        ColumnSpec("shift", ColumnType.STRING, ColumnClass.PUBLIC, categories=SHIFTS),
        ColumnSpec("temperature_c", ColumnType.FLOAT, ColumnClass.INTERNAL, 0, 150),
        ColumnSpec("cycle_time_s", ColumnType.FLOAT, ColumnClass.INTERNAL, 0, 120),
        ColumnSpec("defects", ColumnType.INTEGER, ColumnClass.CONFIDENTIAL, 0, 20),
    )
)
QUERY = TableQuery(
    (
        Aggregate(AggregateKind.COUNT),
        Aggregate(AggregateKind.MEAN, "temperature_c"),
        Aggregate(AggregateKind.SUM, "cycle_time_s"),
    ),
    ("line", "shift"),
)


def run(sizes: list[int], repeats: int = REPEATS, quick: bool = False) -> list[Row]:
    if quick:
        sizes = [min(sizes[0], 200_000)]
    rows = []
    secret = os.urandom(32)
    for size in sizes:
        frame = make_frame(size).with_columns(
            pl.Series("shift", [SHIFTS[i % 3] for i in range(size)])
        )

        def plain(data: pl.DataFrame = frame) -> None:
            data.group_by("line", "shift").agg(
                pl.len(), pl.col("temperature_c").mean(), pl.col("cycle_time_s").sum()
            )

        def table(data: pl.DataFrame = frame) -> None:
            run_table_query(data, SCHEMA, QUERY, secret=secret)

        veil_ms, plain_ms = interleaved(repeats, timed(table, 1000), timed(plain, 1000))
        label = f"tier-2 table, {size / 1e6:g}M rows (3 aggregates, 60 cells), in process"
        rows.append(series_row(label, veil_ms, plain_ms, "ms", "report", None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--quick", action="store_true", help="200 000 rows")
    args = parser.parse_args()
    from bench.report import print_rows

    print_rows(run(args.rows, args.repeats, quick=args.quick))


if __name__ == "__main__":
    main()
