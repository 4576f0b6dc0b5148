"""`make bench`: run every benchmark, print one table, write bench/last-run.json.

Each item also runs alone: `.venv/bin/python bench/<item>_bench.py --help`.
"""

from __future__ import annotations

import sys
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
    submit_bench,
    table_bench,
    training_bench,
)
from bench.report import print_rows, save_rows  # noqa: E402


def main() -> None:
    rows = keys_bench.run()
    rows += gm_bench.run()  # the national-cryptography primitives vs the standard ones
    rows += ingest_bench.run(repeats=3)  # one upload swings by up to 2x on a shared machine
    rows += query_bench.run([1_000_000, 10_000_000])
    rows += table_bench.run([1_000_000])
    rows += api_bench.run()
    rows += submit_bench.run()  # PostgreSQL, 2 API processes, 5 interleaved rounds
    rows += audit_bench.run()
    rows += runner_bench.run()
    rows += training_bench.run()
    rows += scaling_bench.run()
    rows += node_bench.run()
    rows += psi_bench.run([10_000], repeats=5)  # 100k, 1M a side: psi_bench.py --sizes N
    rows += collab_bench.run([20], repeats=3)  # 100 nodes: collab_bench.py --nodes 100
    print_rows(rows)
    save_rows(rows, ROOT / "bench" / "last-run.json")
    print(f"\nrows saved to {ROOT / 'bench' / 'last-run.json'}")


if __name__ == "__main__":
    main()
