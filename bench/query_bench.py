"""Benchmark: a DP group-by query end to end through the API vs the same OpenDP query in-process.

Veil's figure is submit → released result through the real HTTP API (policy
decision, budget debit, audit, decryption of the stored version, OpenDP,
release).  The baseline runs the same query with the same engine on the
plaintext frame already in memory in one process, handing the rows to OpenDP
from a file in /dev/shm as a job does from its sandbox's tmpfs
(``analytics.dp_scratch``).  3 aggregates, 20 groups.

Run alone: ``.venv/bin/python bench/query_bench.py [--rows 1000000 10000000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.private_query import run_private_query
from analytics.query_document import parse_query
from bench.report import Row
from sandbox.client import VeilClient
from sandbox.config.settings import Settings
from sandbox.data.datasets import schema_from_json
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from sandbox.store.models import Dataset

SHM = Path("/dev/shm")  # noqa: S108 - memory, where the baseline hands rows to OpenDP
LINES = [f"line-{i:02d}" for i in range(20)]
COLUMNS: list[dict[str, Any]] = [
    {"name": "line", "type": "string", "class": "public", "categories": LINES},
    {"name": "temperature_c", "type": "float", "class": "internal", "lower": 0, "upper": 150},
    {"name": "cycle_time_s", "type": "float", "class": "internal", "lower": 0, "upper": 120},
    {"name": "defects", "type": "integer", "class": "confidential", "lower": 0, "upper": 20},
]
QUERY = {
    "aggregates": [
        {"kind": "count"},
        {"kind": "mean", "column": "temperature_c"},
        {"kind": "sum", "column": "defects"},
    ],
    "group_by": ["line"],
}
EPSILON = 0.3


def make_frame(rows: int, seed: int = 1) -> pl.DataFrame:
    """Synthetic benchmark data (not noise: just a workload)."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "line": pl.Series(np.array(LINES)[rng.integers(0, 20, rows)], dtype=pl.String),
            "temperature_c": rng.uniform(20, 120, rows).round(2),
            "cycle_time_s": rng.uniform(10, 90, rows).round(2),
            "defects": rng.integers(0, 20, rows),
        }
    )


def median_time(repeats: int, action: Any) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        action()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _world(url: str, operator: VeilClient) -> tuple[VeilClient, VeilClient, str]:
    ent = operator.create_enterprise("Bench Works", "bench-works")
    prov = operator.create_provider("Bench Analytics")
    enterprise = VeilClient(url, operator.issue_token(ent["id"]), timeout=600)
    provider = VeilClient(url, operator.issue_token(prov["id"]), timeout=600)
    return enterprise, provider, prov["id"]


def run(sizes: list[int], repeats: int = 3) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="veil-bench-") as home:
        settings = Settings(
            data_dir=Path(home),
            vault_addr=None,
            database_url=None,
            max_upload_bytes=4 * 2**30,
            max_upload_rows=50_000_000,
            job_poll_interval_s=0.01,
            commitment_letters=False,  # letters: once per grant, not measured
        )
        with open_veil(settings) as veil, ApiThread(settings, veil) as url:
            operator = VeilClient(url, bootstrap_operator(veil))
            enterprise, provider, provider_id = _world(url, operator)
            for size in sizes:
                rows += _measure(veil, enterprise, provider, provider_id, size, repeats)
    return rows


def _measure(
    veil: Veil,
    enterprise: VeilClient,
    provider: VeilClient,
    provider_id: str,
    size: int,
    repeats: int,
) -> list[Row]:
    frame = make_frame(size)
    buf = io.BytesIO()
    frame.write_parquet(buf)
    ds = enterprise.create_dataset(f"bench-{size}", COLUMNS, epsilon_cap=100.0)
    t0 = time.perf_counter()
    enterprise.upload(ds["id"], buf.getvalue(), content_type="application/vnd.apache.parquet")
    upload_s = time.perf_counter() - t0
    enterprise.create_grant(
        provider_id,
        [ds["id"]],
        [c["name"] for c in COLUMNS],
        [3],
        ["process-optimization"],  # from the city's purpose vocabulary
        datetime.now(UTC) + timedelta(days=1),
        epsilon=100.0,
    )

    def through_api() -> None:
        job = provider.submit_query(ds["id"], "process-optimization", QUERY, epsilon=EPSILON)
        final = provider.wait_for_job(job["id"], poll=0.01, timeout=600)
        assert final["status"] == "released", final
        provider.get_result(job["id"])

    with veil.db.transaction() as session:
        stored = session.get(Dataset, ds["id"])
        assert stored is not None
        schema = schema_from_json(stored.declaration)
    query = parse_query(QUERY)
    veil_s = median_time(repeats, through_api)
    with tempfile.TemporaryDirectory(dir=SHM, prefix="veil-bench-") as scratch:
        raw_s = median_time(
            repeats, lambda: run_private_query(frame, schema, query, EPSILON, scratch=Path(scratch))
        )
    label = f"{size / 1e6:g}M"
    goal = "<= 1.5x raw OpenDP" if size >= 10_000_000 else "<= 1 s median"
    met = veil_s <= 1.5 * raw_s if size >= 10_000_000 else veil_s <= 1.0
    return [
        {
            "item": f"DP group-by query via API, {label} rows (3 aggregates, 20 groups)",
            "veil": round(veil_s, 3),
            "baseline": round(raw_s, 3),
            "unit": "s",
            "ratio": round(veil_s / raw_s, 3),
            "goal": goal,
            "met": met,
        },
        {
            "item": f"upload + validate + encrypt, {label} rows parquet "
            f"({len(buf.getvalue()) / 2**20:.0f} MiB)",
            "veil": round(upload_s, 3),
            "baseline": None,
            "unit": "s",
            "ratio": None,
            "goal": "report",
            "met": None,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from bench.report import print_rows

    print_rows(run(args.rows, args.repeats))


if __name__ == "__main__":
    main()
