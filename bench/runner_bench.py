"""Benchmark: what the isolated runner adds to a job, vs computing it in-process.

The same tier-3 job (DP count, mean and sum grouped by line; ``query_bench``'s data)
on the same plaintext Parquet bytes:

* Veil: the job worker's warm sandbox (``SandboxPool(reusable=True)``: bubblewrap,
  prlimit, a Python that has imported its libraries) forks a fresh process for the
  job, which gets the task and the bytes over the pipe, parses them, computes,
  answers in JSON and exits.  Timed from handing the task over to the answer and the
  job process's end (``finish``: the worker's whole cost per job); jobs back to back,
  as in service.
* Baseline: ``pl.read_parquet`` of the same bytes and the same ``run_private_query``
  in this process, its rows handed to OpenDP from /dev/shm as the job's are from its
  sandbox's tmpfs (``analytics.dp_scratch``).

The two take turns (``report.interleaved``); the row gives the added time of each turn
(sandboxed minus in-process).  Also reported: a cold sandbox (started for the job, as
tier 5 does).

Run alone: ``.venv/bin/python bench/runner_bench.py [--rows 10000] [--repeats 7] [--quick]``
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.private_query import run_private_query
from analytics.query_document import parse_query
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from bench.query_bench import LINES, QUERY, SHM, make_frame
from bench.report import REPEATS, Row, interleaved, series_row
from sandbox.config.settings import Settings
from sandbox.isolation.child import Task
from sandbox.isolation.pool import SandboxPool

EPSILON = 0.3


def schema() -> DatasetSchema:
    return DatasetSchema(
        (
            ColumnSpec("line", ColumnType.STRING, ColumnClass.PUBLIC, categories=tuple(LINES)),
            ColumnSpec("temperature_c", ColumnType.FLOAT, ColumnClass.INTERNAL, 0.0, 150.0),
            ColumnSpec("cycle_time_s", ColumnType.FLOAT, ColumnClass.INTERNAL, 0.0, 120.0),
            ColumnSpec("defects", ColumnType.INTEGER, ColumnClass.CONFIDENTIAL, 0, 20),
        )
    )


def run(rows: int = 10_000, repeats: int = 7, quick: bool = False) -> list[Row]:
    """``quick``: 3 turns and one cold start."""
    repeats = 3 if quick else max(repeats, REPEATS)
    declared, query = schema(), parse_query(QUERY)
    buffer = io.BytesIO()
    make_frame(rows).write_parquet(buffer)
    data = buffer.getvalue()
    task = Task("query", declared, query, EPSILON, 0.0)

    shm = tempfile.TemporaryDirectory(dir=SHM, prefix="veil-bench-")
    scratch = Path(shm.name)

    def in_process() -> float:
        t0 = time.perf_counter()
        frame = pl.read_parquet(io.BytesIO(data))
        run_private_query(frame, declared, query, EPSILON, 0.0, scratch=scratch)
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as home:
        pool = SandboxPool(Settings(data_dir=Path(home)), reusable=True)
        cold_pool = SandboxPool(Settings(data_dir=Path(home)), warm=False)

        def warm() -> float:
            box = pool.take()
            box.wait_ready(60)  # only the first time: its imports
            box.finish()  # the previous job's process, outside this turn's time
            t0 = time.perf_counter()
            box.run(task, data)
            box.finish()
            return time.perf_counter() - t0

        def cold() -> float:
            t0 = time.perf_counter()
            cold_pool.take().run(task, data)
            return time.perf_counter() - t0

        try:
            pool.prepare()
            in_process(), warm()  # first uses, on both sides
            base, sandboxed = interleaved(repeats, in_process, warm)
            started = [cold() for _ in range(1 if quick else 3)]
        finally:
            pool.close()
            shm.cleanup()
    base_ms = [b * 1000 for b in base]
    added = [(s - b) * 1000 for s, b in zip(sandboxed, base, strict=True)]
    return [
        series_row(
            f"isolated runner: added per job (warm sandbox), {rows:,} rows "
            "(baseline: the job in-process)",
            added,
            base_ms,
            "ms",
            "<= 50 ms added",
            lambda median, _: median <= 50,
        ),
        series_row(
            f"isolated runner: cold sandbox (start + imports + job), {rows:,} rows",
            [s * 1000 for s in started],
            None,
            "ms",
            "report",
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 turns, one cold start")
    args = parser.parse_args()
    from bench.report import print_rows

    print_rows(run(args.rows, args.repeats, args.quick))


if __name__ == "__main__":
    main()
