"""Statistical: the black-box ε-DP check of Veil's DP count, the statistical checks of
the benchmarks across enterprises (an empirical ε audit of a combined release over ten
nodes, interval coverage at 20 and 100 nodes, the variance of the nodes' noise shares),
and the black-box ε-DP check of a KPI verdict's statistic, one outcome each.

Runs ``pytest -m statistical tests/security/test_dp_distribution.py -q`` (and the others) with this
virtualenv's Python in a subprocess (the test's docstring states the method: neighbouring
datasets sampled through ``analytics.private_query``, Clopper-Pearson bounds with a
Bonferroni correction, 99.9 % family-wise confidence, and a negative control that must
fail).  The property held when pytest exits 0: both tests passed.  ``quick`` changes
nothing: the sample size is what the stated confidence and power rest on.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reliability.report import Outcome, main  # noqa: E402
from tests.security import test_dp_distribution as check  # noqa: E402

TEST = "tests/security/test_dp_distribution.py"
LIMIT_S = 900
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def _summary(output: str) -> str:
    """pytest's last line, and the first failed assertion's message if any."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    last = lines[-1] if lines else "(no output)"
    failed = next((line[2:].strip() for line in lines if line.startswith("E ")), None)
    return f"{last}; {failed}" if failed else last


def run(quick: bool = False) -> list[Outcome]:
    """One outcome each: the sampled DP count within e^ε (and its control failing), the
    collaboration statistics, and a KPI verdict's statistic within e^ε."""
    del quick  # the same run either way (see the module docstring)
    tried = (
        f"{check.SAMPLES} DP counts each on D and D' (one row apart), ε {check.EPSILON:g}, "
        f"{check.BUCKETS} buckets x 2 directions, Clopper-Pearson + Bonferroni at "
        f"{(1 - check.FAMILY_ALPHA) * 100:g}%; control: claimed ε {check.UNDERSTATED:g}"
    )
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    return [
        _pytest(python, TEST, tried),
        # The collaboration statistics' slow checks (their docstrings give the methods):
        # ε observed on neighbouring enterprise sets within the claimed ε, 95% intervals
        # covering at their rate, the summed shares' variance as planned.
        _pytest(
            python,
            COLLAB_TEST,
            "benchmark releases: empirical ε audit (10 nodes), coverage (20, 100 nodes), shares",
        ),
        # A KPI verdict's relative change (post-processing of the evaluation's DP sums) on
        # neighbouring datasets, against the tight ε of the one sum the row moves.
        _pytest(
            python,
            KPI_TEST,
            "KPI verdict statistic: the change on D and D' (one "
            "worst-case row apart), Clopper-Pearson + Bonferroni; control: ε/16",
        ),
    ]


COLLAB_TEST = "tests/analytics/test_collab_stats.py"
KPI_TEST = "tests/security/test_dp_kpi_verdict.py"


def _pytest(python: str, test: str, tried: str) -> Outcome:
    """``pytest -m statistical TEST``: held when it exits 0."""
    command = [python, "-m", "pytest", "-m", "statistical", test, "-q", "-p", "no:cacheprovider"]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=LIMIT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return Outcome("statistical", tried, False, f"pytest did not end within {LIMIT_S} s")
    took = time.monotonic() - started
    detail = f"pytest exit {done.returncode} in {took:.0f} s: {_summary(done.stdout + done.stderr)}"
    return Outcome("statistical", tried, done.returncode == 0, detail)


if __name__ == "__main__":
    main(run)
