"""Benchmark: what the isolated runner adds to a job, vs computing it in-process.

The same tier-3 job (DP count, mean and sum grouped by line; ``query_bench``'s data)
on the same plaintext Parquet bytes:

* Veil: the job worker's warm sandbox (``SandboxPool(reusable=True)``: bubblewrap,
  prlimit, a Python that has imported its libraries) forks a fresh process for the
  job, which gets the task and the bytes over the pipe, parses them, computes,
  answers in JSON and exits.  Timed from handing the task over to the answer; jobs
  back to back, as in service.
* Baseline: ``pl.read_parquet`` of the same bytes and the same ``run_private_query``
  in this process, its rows handed to OpenDP from /dev/shm as the job's are from its
  sandbox's tmpfs (``analytics.dp_scratch``).

Also reported: a cold sandbox (started for the job, as tier 5 does).

Run alone: ``.venv/bin/python bench/runner_bench.py [--rows 10000] [--repeats 7]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.private_query import run_private_query
from analytics.query_document import parse_query
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from bench.query_bench import LINES, QUERY, SHM, make_frame
from bench.report import Row
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


def median_ms(repeats: int, action: Callable[[], float]) -> float:
    """Median of ``action``'s own timings (seconds) in milliseconds."""
    return statistics.median(action() for _ in range(repeats)) * 1000


def run(rows: int = 10_000, repeats: int = 7) -> list[Row]:
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
            t0 = time.perf_counter()
            box.run(task, data)
            return time.perf_counter() - t0

        def cold() -> float:
            t0 = time.perf_counter()
            cold_pool.take().run(task, data)
            return time.perf_counter() - t0

        try:
            pool.prepare()
            in_process()  # warm this process's caches too
            base = median_ms(repeats, in_process)
            sandboxed = median_ms(repeats, warm)
            started = median_ms(3, cold)
        finally:
            pool.close()
            shm.cleanup()
    added = sandboxed - base
    return [
        {
            "item": f"isolated runner: added per job (warm sandbox), {rows:,} rows",
            "veil": round(added, 1),
            "baseline": round(base, 1),
            "unit": "ms",
            "ratio": round(sandboxed / base, 3),
            "goal": "<= 200 ms added",
            "met": added <= 200,
        },
        {
            "item": f"isolated runner: cold sandbox (start + imports + job), {rows:,} rows",
            "veil": round(started, 1),
            "baseline": round(base, 1),
            "unit": "ms",
            "ratio": round(started / base, 3),
            "goal": "report",
            "met": None,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from bench.report import print_rows

    print_rows(run(args.rows, args.repeats))


if __name__ == "__main__":
    main()
