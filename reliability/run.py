"""`make reliability`: run every long hardening check and print one summary of what held.

Each check also runs alone: `.venv/bin/python reliability/<name>.py [--quick]`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reliability.report import Outcome, print_summary  # noqa: E402


def main() -> None:
    from reliability import concurrency, crashes, fuzz, keyserver_loss, nodes, statistical

    quick = "--quick" in sys.argv[1:]
    started = time.monotonic()
    outcomes: list[Outcome] = []
    for check in (fuzz, crashes, keyserver_loss, nodes, concurrency, statistical):
        print(f"== {check.__name__.rsplit('.', 1)[-1]}", flush=True)
        outcomes += check.run(quick=quick)
    print()
    print_summary(outcomes, time.monotonic() - started)
    sys.exit(0 if outcomes and all(o.held for o in outcomes) else 1)


if __name__ == "__main__":
    main()
