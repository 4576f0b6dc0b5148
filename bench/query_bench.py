"""Benchmark: a DP group-by query end to end through the API vs raw OpenDP on the same file.

Veil's figure is submit → released result through the real HTTP API (policy
decision, budget debit, audit, decryption of the stored version, the job sandbox,
OpenDP, release; the client waits with one long poll, ``GET /v1/jobs/{id}?wait=``, woken
by the release).  The baseline is the same
``run_private_query`` in this process on the same Parquet file, its plaintext in
/dev/shm, scanned as a job scans it in its sandbox's tmpfs (``analytics.dp_scratch``):
raw OpenDP on the same file, without Veil.  3 aggregates, 20 groups.  Veil and the
baseline take turns (``report.interleaved``), ``report.REPEATS`` times each.

Run alone: ``.venv/bin/python bench/query_bench.py [--rows 1000000 10000000] [--repeats 5]
[--quick]``
"""

from __future__ import annotations

import argparse
import io
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
from bench.report import REPEATS, Row, interleaved, series_row
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


def _world(url: str, operator: VeilClient) -> tuple[VeilClient, VeilClient, str]:
    ent = operator.create_enterprise("Bench Works", "bench-works")
    prov = operator.create_provider("Bench Analytics")
    enterprise = VeilClient(url, operator.issue_token(ent["id"]), timeout=600)
    provider = VeilClient(url, operator.issue_token(prov["id"]), timeout=600)
    return enterprise, provider, prov["id"]


def run(sizes: list[int] | None = None, repeats: int = REPEATS, quick: bool = False) -> list[Row]:
    """The rows for each size (default 1M and 10M rows); ``quick``: 1M rows, 3 turns."""
    sizes = sizes or ([1_000_000] if quick else [1_000_000, 10_000_000])
    repeats = min(repeats, 3) if quick else repeats
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
    buf = io.BytesIO()
    make_frame(size).write_parquet(buf)
    data = buf.getvalue()
    ds = enterprise.create_dataset(f"bench-{size}", COLUMNS, epsilon_cap=100.0)
    t0 = time.perf_counter()
    enterprise.upload(ds["id"], data, content_type="application/vnd.apache.parquet")
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

    server_cpu: list[float] = []

    def through_api() -> float:
        t0, cpu, client_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        job = provider.submit_query(ds["id"], "process-optimization", QUERY, epsilon=EPSILON)
        final = provider.wait_for_job(job["id"], timeout=600)
        assert final["status"] == "released", final
        provider.get_result(job["id"])
        took = time.perf_counter() - t0
        # This process's CPU but the client's (this thread): the API's and the worker's
        # threads; the job's own process is not counted.
        server_cpu.append(time.process_time() - cpu - (time.thread_time() - client_cpu))
        return took

    with veil.db.transaction() as session:
        stored = session.get(Dataset, ds["id"])
        assert stored is not None
        schema = schema_from_json(stored.declaration)
    query = parse_query(QUERY)
    with tempfile.TemporaryDirectory(dir=SHM, prefix="veil-bench-") as scratch:
        path = Path(scratch) / "data.parquet"
        path.write_bytes(data)

        def raw_opendp() -> float:
            t0 = time.perf_counter()
            run_private_query(pl.scan_parquet(path, glob=False), schema, query, EPSILON)
            return time.perf_counter() - t0

        through_api(), raw_opendp()  # first uses: the worker's first fork, caches
        server_cpu.clear()
        veil_s, raw_s = interleaved(repeats, through_api, raw_opendp)
    label = f"{size / 1e6:g}M"
    item = f"DP group-by query via API, {label} rows (3 aggregates, 20 groups)"
    if size >= 10_000_000:
        row = series_row(item, veil_s, raw_s, "s", "<= 1.2x raw OpenDP on the same file",
                         lambda _, ratio: ratio is not None and ratio <= 1.2)  # fmt: skip
    else:
        row = series_row(item, veil_s, raw_s, "s", "<= 0.3 s median (raw OpenDP: baseline)",
                         lambda median, _: median <= 0.3)  # fmt: skip
    cpu_row = series_row(
        f"DP group-by via API, {label} rows: CPU of the API process per query (API and worker "
        "threads, not the job's process)",
        [s * 1000 for s in server_cpu], None, "ms", "report", None,
    )  # fmt: skip
    return [
        row,
        cpu_row,
        {
            "item": f"upload + validate + encrypt, {label} rows parquet "
            f"({len(data) / 2**20:.0f} MiB)",
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
    parser.add_argument("--rows", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--quick", action="store_true", help="1M rows, 3 turns")
    args = parser.parse_args()
    from bench.report import print_rows

    print_rows(run(args.rows, args.repeats, args.quick))


if __name__ == "__main__":
    main()
