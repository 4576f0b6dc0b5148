"""`make bench`: run every benchmark, print one table, write bench/last-run.json."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import keys_bench, query_bench, runner_bench, training_bench  # noqa: E402
from bench.report import print_rows, save_rows  # noqa: E402


def main() -> None:
    rows = keys_bench.run()
    rows += query_bench.run([1_000_000, 10_000_000])
    rows += runner_bench.run()
    rows += training_bench.run()
    print_rows(rows)
    save_rows(rows, ROOT / "bench" / "last-run.json")
    print(f"\nrows saved to {ROOT / 'bench' / 'last-run.json'}")


if __name__ == "__main__":
    main()
