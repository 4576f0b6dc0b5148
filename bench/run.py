"""`make bench`: run every benchmark, print one table, write bench/last-run.json.

Each item also runs alone: `.venv/bin/python bench/<item>_bench.py --help`. Every ratio
comes from interleaved repetitions (Veil, baseline, Veil, ...; `bench.report.interleaved`)
and is printed as the median with its min-max. `--quick` (`make bench-quick`) runs each
item on smaller inputs and fewer repetitions, for development: its figures are not the
ones to report. `--only NAME ...` runs some items.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import (  # noqa: E402
    api_bench,
    audit_bench,
    collab_bench,
    gm_bench,
    ingest_bench,
    keys_bench,
    node_bench,
    psi_bench,
    query_bench,
    runner_bench,
    scaling_bench,
    sources_bench,
    submit_bench,
    table_bench,
    training_bench,
)
from bench.report import Row, print_rows, save_rows  # noqa: E402

# name -> rows, given quick; in the order they run.
ITEMS: dict[str, Callable[[bool], list[Row]]] = {
    "keys": lambda quick: keys_bench.run(quick=quick),
    "gm": lambda quick: gm_bench.run(mib=32, seconds=0.5, quick=quick),  # 国密 vs standard
    "ingest": lambda quick: ingest_bench.run(quick=quick),  # 1 GiB CSV, 5 turns (quick: 128 MiB)
    "query": lambda quick: query_bench.run(quick=quick),  # 1M and 10M rows (quick: 1M)
    "table": lambda quick: table_bench.run([1_000_000], quick=quick),
    # reads, 5 turns of 1.5 s a side; submissions' goal is PostgreSQL's ("submit")
    "api": lambda quick: api_bench.run(seconds=1.5, quick=quick, loads=("reads",)),
    "submit": lambda quick: submit_bench.run(quick=quick, seconds=1.5),  # PostgreSQL, 2 procs
    "audit": lambda quick: audit_bench.run(events=100_000),  # per event: --events 1000000
    "runner": lambda quick: runner_bench.run(quick=quick),
    # Veil's model and batch size; 2 epochs (a per-step ratio: epochs scale both sides alike)
    "training": lambda quick: training_bench.run(quick=quick, epochs=None if quick else 2),
    "scaling": lambda quick: scaling_bench.run(jobs=16),
    # latency: 8 pairs; throughput (report): 1 and 2 nodes, 2 rounds (--nodes 1 2 4 alone)
    "node": lambda quick: node_bench.run(
        quick=quick, jobs=None if quick else 8, counts=[1, 2], rounds=None if quick else 2
    ),
    "psi": lambda quick: psi_bench.run([10_000], quick=quick),  # psi_bench.py --sizes N
    "collab": lambda quick: collab_bench.run([20], quick=quick),  # collab_bench.py --nodes 100
    "sources": lambda quick: sources_bench.run(quick=quick),  # runs vs reads, lags, vs libraries
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for development")
    parser.add_argument("--only", nargs="+", choices=list(ITEMS), metavar="NAME",
                        help=f"run only these items: {', '.join(ITEMS)}")  # fmt: skip
    args = parser.parse_args()
    rows: list[Row] = []
    began = time.perf_counter()
    for name, item in ITEMS.items():
        if args.only and name not in args.only:
            continue
        started, load = time.perf_counter(), os.getloadavg()[0]
        rows += item(args.quick)
        print(f"bench {name}: {time.perf_counter() - started:.0f} s "
              f"(1-min load {load:.1f} at its start)", file=sys.stderr)  # fmt: skip
    took = time.perf_counter() - began
    print_rows(rows)
    print(f"\nmake bench{' --quick' if args.quick else ''} took {took / 60:.1f} min; "
          f"{os.cpu_count()} CPUs, load average now "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))  # fmt: skip
    out = ROOT / "bench" / ("last-run-quick.json" if args.quick else "last-run.json")
    save_rows(rows, out)
    print(f"rows saved to {out}")


if __name__ == "__main__":
    main()
