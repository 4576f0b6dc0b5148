"""What each reliability check tried and whether the property held, printed as one summary.

Every script in reliability/ has ``run(quick: bool = False) -> list[Outcome]`` and runs alone
with ``.venv/bin/python reliability/<name>.py``; ``make reliability`` runs them all
(``reliability/run.py``).  A script never asserts: it reports, and the summary's exit status is
non-zero when any property did not hold.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One property checked: in which area, what was tried, whether it held, and the evidence."""

    area: str  # e.g. "crashes", "key-server loss"
    tried: str  # what was done, with counts: "40 SIGKILLs of the API during jobs"
    held: bool
    detail: str  # the evidence, or what broke; never a data value


def print_summary(outcomes: Sequence[Outcome], seconds: float | None = None) -> None:
    headers = ("area", "tried", "held", "detail")
    table = [(o.area, o.tried, "yes" if o.held else "NO", o.detail) for o in outcomes]
    widths = [
        max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(headers)
    ]
    widths[-1] = len(headers[-1])  # the detail column is not padded
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip())
    held = sum(o.held for o in outcomes)
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    print(f"\n{held} of {len(outcomes)} properties held{took}.")


def main(run: Callable[..., list[Outcome]]) -> None:
    """Run one script's checks (``--quick`` for a shorter run), print them, exit 1 on a failure."""
    started = time.monotonic()
    outcomes = run(quick="--quick" in sys.argv[1:])
    print_summary(outcomes, time.monotonic() - started)
    sys.exit(0 if outcomes and all(o.held for o in outcomes) else 1)
