"""``make cluster-demo`` end to end (slow: ``make test-slow``): PostgreSQL, three OpenBao
nodes, two API processes, three workers, the demo's story, then the key server's leader
and a worker killed in the middle of a job, and every job still released."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cluster.postgres import find_postgres_bin
from tests.conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_the_cluster_demo_runs_and_survives_the_losses() -> None:
    require(find_postgres_bin() is not None, "PostgreSQL (scripts/system-packages --postgres)")
    done = subprocess.run(
        [sys.executable, str(ROOT / "cluster" / "demo.py")],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "12 of 12 released" in out
    assert "job.requeued -> job.released" in out  # the job cut off by the killed worker
    assert "audit chain intact across every process" in out
