"""Benchmark: job throughput (private queries per second) with 1, 2 and 4 workers.

One cluster on this machine (``cluster.local``): PostgreSQL, one OpenBao, one API process,
and ``veil worker`` processes (``VEIL_JOB_ENGINE=procrastinate``) added between rounds, all
on the same database.  Each round submits the same tier-3 private queries (a DP count, mean
and sum grouped by machine, on the demo's production log) through the API as fast as
the API takes them, and times from the first submission to the last job released.  Each
job runs as always: decrypted in its worker's memory and computed in its isolated runner.

Baseline: the 1-worker round; the ratio is the scaling (ideal: the number of workers, as
long as the machine has a core for each).

Run alone: ``.venv/bin/python bench/scaling_bench.py [--jobs 40] [--rows 100000]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import Row, print_rows, row
from cluster.local import LocalCluster
from sandbox.client import VeilClient
from sandbox.demo.data import DECLARATION, production_log

PURPOSE = "process-optimization"
QUERY = [
    {"kind": "count"},
    {"kind": "mean", "column": "temperature_c"},
    {"kind": "sum", "column": "defects"},
]
COLUMNS = ["machine", "temperature_c", "defects"]
EPSILON = 0.01
WORKERS = (1, 2, 4)
_STATUSES = text("SELECT status, count(*) FROM jobs WHERE id = ANY(:ids) GROUP BY status")


def _world(cluster: LocalCluster, operator_token: str, rows: int) -> tuple[str, str]:
    """An enterprise, its dataset uploaded, a provider with a tier-3 grant: (token, dataset)."""
    with VeilClient(cluster.url, operator_token) as operator:
        enterprise = operator.create_enterprise("Bench Works", "bench-works")
        provider = operator.create_provider("Bench Analytics")
        ent_token = operator.issue_token(enterprise["id"])
        prov_token = operator.issue_token(provider["id"])
    with VeilClient(cluster.url, ent_token) as owner:
        dataset = owner.create_dataset("bench-log", DECLARATION["columns"], epsilon_cap=100.0)
        owner.upload(dataset["id"], production_log(rows, seed=3))
        owner.create_grant(
            provider["id"], [dataset["id"]], COLUMNS, [3], [PURPOSE],
            datetime.now(UTC) + timedelta(days=1), epsilon=100.0,
        )  # fmt: skip
    return prov_token, dataset["id"]


def _round(cluster: LocalCluster, token: str, dataset_id: str, jobs: int) -> float:
    """Submit ``jobs`` queries at once; seconds from the first submission to the last end."""

    def submit(_: int) -> str:
        with VeilClient(cluster.url, token) as client:
            job = client.submit_job(dataset_id, PURPOSE, EPSILON, QUERY, "machine")
        return str(job["id"])

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(submit, range(jobs)))
    engine = create_engine(cluster.database_url)
    try:
        while True:
            with engine.connect() as connection:
                statuses = dict(connection.execute(_STATUSES, {"ids": ids}).all())
            if sum(statuses.get(s, 0) for s in ("released", "failed")) == jobs:
                break
            time.sleep(0.05)
    finally:
        engine.dispose()
    elapsed = time.perf_counter() - started
    if statuses.get("failed"):
        raise RuntimeError(f"{statuses['failed']} of {jobs} jobs failed; see {cluster.logs}")
    return elapsed


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants, and of their children reaped so far."""
    try:
        root = psutil.Process(pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = process.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total
    except psutil.Error:
        return 0.0


def _cpu_by_part(cluster: LocalCluster) -> dict[str, float]:
    """CPU seconds so far of each part: workers (with their sandboxes), API, PostgreSQL,
    OpenBao."""
    postmaster = cluster.postgres.data / "postmaster.pid" if cluster.postgres else None
    parts = {
        "workers and their sandboxes": sum(_tree_cpu(w.pid) for w in cluster.live_workers()),
        "API process": _tree_cpu(cluster.api.pid) if cluster.api else 0.0,
        "PostgreSQL": _tree_cpu(int(postmaster.read_text().split()[0])) if postmaster else 0.0,
        "OpenBao": _tree_cpu(cluster.key_server.pid or 0) if cluster.key_server else 0.0,
    }
    return parts


def run(jobs: int = 40, rows: int = 100_000) -> list[Row]:
    cluster = LocalCluster(
        extra_env={"VEIL_JOB_POLL_INTERVAL_S": "0.1", "VEIL_COMMITMENT_LETTERS": "false"}
    )  # letters: once per grant, not measured
    results: dict[int, float] = {}
    cpu_per_job: dict[str, float] = {}
    try:
        cluster.start_database()
        cluster.start_key_server(nodes=1)
        token = cluster.init()
        cluster.start_api(processes=1)
        provider_token, dataset_id = _world(cluster, token, rows)
        for count in WORKERS:
            cluster.start_workers(count - len(cluster.live_workers()))
            time.sleep(3)  # the new workers' sandboxes warm up (their imports)
            _round(cluster, provider_token, dataset_id, max(4, jobs // 4))  # warm-up round
            before = _cpu_by_part(cluster)
            elapsed = _round(cluster, provider_token, dataset_id, jobs)
            spent = {k: v - before.get(k, 0.0) for k, v in _cpu_by_part(cluster).items()}
            results[count] = jobs / elapsed
            if count == 1:
                cpu_per_job = {k: 1000 * v / jobs for k, v in spent.items()}
            by_part = ", ".join(f"{k} {v:.1f}" for k, v in spent.items())
            print(
                f"{count} worker(s): {jobs} jobs in {elapsed:.1f} s; CPU s: {by_part}",
                file=sys.stderr,
            )
    finally:
        cluster.stop()
    cores = os.cpu_count() or 1
    profile = [
        row(f"CPU per job with 1 worker: {part}", ms, None, "ms", "report", None)
        for part, ms in cpu_per_job.items()
    ]
    return profile + [
        row(
            f"private queries/s, {n} worker(s) on PostgreSQL + procrastinate "
            f"({rows:,} rows, {jobs} jobs; {cores} cores)",
            results[n],
            results[1],
            "jobs/s",
            "report (scaling vs 1 worker)",
            None,
        )
        for n in WORKERS
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    print_rows(run(args.jobs, args.rows))
