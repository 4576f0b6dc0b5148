"""Benchmark: API job submissions on PostgreSQL, served by two API processes.

Veil as the cluster deployment runs it (``docs/deployment.md``): PostgreSQL, the job
engine ``procrastinate`` (a submission commits its job and defers the task naming it; no
``veil worker`` runs here, so jobs only queue), and ``--processes 2`` API processes on one
port (``bench/api_server.py veil --processes 2``, uvicorn's workers, as ``veil serve
--processes 2``), one data directory and one embedded OpenBao.  The world is the API
benchmark's (``bench.api_bench.build_world``): one provider, one dataset (cap ε 100), one
grant (ε 100).  The load: ``clients`` keep-alive connections sending ``POST /v1/jobs`` (a
tier-3 DP count, ε 0.0001: decision, both debits, the job row, two audit events, the
task's deferral) back to back for ``seconds`` after a warm-up.  The baseline is the API
benchmark's bare FastAPI app answering the very bytes.  Veil and the baseline take turns
(``bench.report.interleaved``).

Afterwards the run is checked, not only timed: the audit chain verifies in full (``GET
/v1/audit/verify?full=true``), and the grant's spend, the dataset cap's spend, the ledger
and the jobs all agree (every 202 debited once, nothing overspent).

The PostgreSQL server is ``cluster.postgres``' throwaway one: fsync off, as in the tests,
the cluster demo and the scaling benchmark (``--durable``: fsync and synchronous commits
on, to see the disk's part).

Run alone: ``.venv/bin/python bench/submit_bench.py [--quick] [--seconds 4] [--repeats 5]
[--processes 2] [--durable] [--profile FILE --profile-clock cpu]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.api_bench import (  # noqa: E402
    COUNT_QUERY,
    HOST,
    JOB_EPSILON,
    Load,
    Target,
    build_world,
    http_request,
    measure,
    server,
)
from bench.api_server import TOKEN_FILE  # noqa: E402
from cluster.postgres import PostgresServer, find_postgres_bin  # noqa: E402

GOAL_RPS = 500.0
PROCESSES = 2


def _tree_cpu(pid: int) -> float:
    """CPU seconds so far of ``pid`` and its descendants, those that have exited included
    (PostgreSQL's server process for a connection closed since, say)."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


@contextlib.contextmanager
def _postgres(home: Path, durable: bool) -> Iterator[PostgresServer]:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL not found: run scripts/system-packages --postgres")
    pg = PostgresServer(bin_dir, home, durable=durable)
    try:
        yield pg
    finally:
        pg.stop()


def _check(url: str, operator_token: str, database_url: str, world_grant: str) -> dict[str, int]:
    """The chain verifies; the grant, the cap, the ledger and the jobs agree."""
    verified = httpx.get(
        f"{url}/v1/audit/verify",
        params={"full": "true"},
        headers={"Authorization": f"Bearer {operator_token}"},
        timeout=600,
    ).raise_for_status()
    body = verified.json()
    if not body["ok"]:
        raise RuntimeError(f"the audit chain does not verify after the load: {body}")
    engine = create_engine(database_url)
    try:
        with engine.connect() as c:
            spent = c.execute(
                text("SELECT epsilon_spent, epsilon_budget FROM grants WHERE id = :g"),
                {"g": world_grant},
            ).one()
            cap = c.execute(
                text(
                    "SELECT d.epsilon_spent, d.epsilon_cap FROM datasets d"
                    " JOIN jobs j ON j.dataset_id = d.id WHERE j.grant_id = :g LIMIT 1"
                ),
                {"g": world_grant},
            ).one()
            ledger = c.execute(
                text("SELECT coalesce(sum(epsilon), 0), count(*) FROM budget_debits"
                     " WHERE grant_id = :g"),
                {"g": world_grant},
            ).one()  # fmt: skip
            jobs = c.execute(
                text("SELECT coalesce(sum(epsilon), 0), count(*) FROM jobs"
                     " WHERE grant_id = :g AND status = 'queued'"),
                {"g": world_grant},
            ).one()  # fmt: skip
            events = c.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
    finally:
        engine.dispose()
    if not (spent[0] == cap[0] == ledger[0] == jobs[0] and ledger[1] == jobs[1]):
        raise RuntimeError(
            f"the books disagree: grant {spent}, cap {cap}, ledger {ledger}, jobs {jobs}"
        )
    if spent[0] > spent[1] or cap[0] > cap[1]:
        raise RuntimeError(f"overspent: grant {spent}, cap {cap}")
    return {"jobs": int(jobs[1]), "events": int(events), "checked_events": int(body["events"])}


def run(
    *,
    quick: bool = False,
    seconds: float | None = None,
    repeats: int | None = None,
    clients: int = 50,
    processes: int = PROCESSES,
    durable: bool = False,
    profile: Path | None = None,
    profile_clock: str = "wall",
) -> list[report.Row]:
    """Veil (``processes`` API processes on PostgreSQL) vs the bare baseline, interleaved."""
    seconds = seconds if seconds is not None else (2.0 if quick else 4.0)
    repeats = repeats if repeats is not None else (3 if quick else report.REPEATS)
    with tempfile.TemporaryDirectory(prefix="veil-submit-bench-") as home_name:
        home = Path(home_name)
        pg_home = Path(tempfile.mkdtemp(prefix="veil-submit-pg-"))  # initdb's user enters it
        with _postgres(pg_home, durable) as pg:
            database_url = pg.create_database()
            env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
            env |= {"VEIL_DATA_DIR": str(home / "veil"), "PYTHONPATH": str(ROOT)}
            env |= {"VEIL_DATABASE_URL": database_url, "VEIL_JOB_ENGINE": "procrastinate"}
            env |= {"VEIL_COMMITMENT_LETTERS": "false"}  # letters: once per grant, not measured
            env |= {"VEIL_RATE_LIMIT_PER_S": "1000000", "VEIL_RATE_LIMIT_BURST": "1000000"}
            log = home / "servers.log"
            args = ["veil", "--processes", str(processes)]
            if profile:
                args += ["--profile", str(profile), "--profile-clock", profile_clock]
            with server(args, env, log, "/v1/health") as veil_server:
                url = f"http://{HOST}:{veil_server.port}"
                operator_token = (home / "veil" / TOKEN_FILE).read_text()
                world = build_world(url, operator_token)
                job = json.dumps(
                    {
                        "dataset_id": world.dataset_id,
                        "purpose": "process-optimization",
                        "tier": 3,
                        "epsilon": JOB_EPSILON,
                        "query": COUNT_QUERY,
                    }
                ).encode()
                auth = {"Authorization": f"Bearer {world.provider_token}"}
                posted = httpx.post(url + "/v1/jobs", headers=auth, content=job)
                (home / "post.json").write_bytes(posted.raise_for_status().content)
                read_path = f"/v1/grants/{world.grant_id}"
                get_body = httpx.get(url + read_path, headers=auth).raise_for_status().content
                (home / "get.json").write_bytes(get_body)
                target = Target(
                    "submit", http_request("POST", "/v1/jobs", world.provider_token, job), 202
                )
                bare_args = ["bare", "--get-body", str(home / "get.json")]
                bare_args += ["--post-body", str(home / "post.json")]
                postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
                loads: dict[str, list[Load]] = {"veil": [], "bare": []}
                cpu: dict[str, list[float]] = {"api": [], "postgres": []}
                load_avg: list[float] = []

                with server(bare_args, env, log, read_path) as bare_server:

                    def probe() -> tuple[float, float]:
                        return _tree_cpu(veil_server.pid), _tree_cpu(postmaster)

                    def veil_side() -> float:
                        done = measure(veil_server, target, seconds, clients, probe)
                        cpu["api"].append(done.probe_ms[0])  # from the end of the warm-up,
                        cpu["postgres"].append(done.probe_ms[1])  # as the requests counted
                        loads["veil"].append(done)
                        load_avg.append(os.getloadavg()[0])
                        return done.rps

                    def bare_side() -> float:
                        done = measure(bare_server, target, seconds, clients)
                        loads["bare"].append(done)
                        return done.rps

                    veil_rps, bare_rps = report.interleaved(repeats, veil_side, bare_side)
                checked = _check(url, operator_token, database_url, world.grant_id)
    print(
        f"submissions: {checked['jobs']} jobs queued, {checked['events']} audit events, "
        f"chain verified ({checked['checked_events']} events); load average "
        f"{min(load_avg):.1f}-{max(load_avg):.1f}",
        file=sys.stderr,
    )
    what = (
        f"API job submissions, PostgreSQL{' (durable commits)' if durable else ''}, "
        f"{processes} API processes, {clients} clients"
    )
    rows = [
        report.series_row(
            f"{what}: requests/s (bare FastAPI baseline)",
            veil_rps,
            bare_rps,
            "req/s",
            f">= {GOAL_RPS:.0f}/s",
            lambda median, _ratio: median >= GOAL_RPS,
        ),
        report.series_row(
            f"{what}: p50 latency",
            [x.p50_ms for x in loads["veil"]],
            [x.p50_ms for x in loads["bare"]],
            "ms",
            "report",
            None,
        ),
        report.series_row(
            f"{what}: p99 latency",
            [x.p99_ms for x in loads["veil"]],
            [x.p99_ms for x in loads["bare"]],
            "ms",
            "report",
            None,
        ),
        report.series_row(
            f"{what}: CPU per submission, API processes", cpu["api"], None, "ms", "report", None
        ),
        report.series_row(
            f"{what}: CPU per submission, PostgreSQL", cpu["postgres"], None, "ms", "report", None
        ),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s loads, 3 rounds")
    parser.add_argument("--seconds", type=float, help="per load, after warm-up")
    parser.add_argument("--repeats", type=int, help="interleaved rounds")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--processes", type=int, default=PROCESSES)
    parser.add_argument("--durable", action="store_true", help="fsync and synchronous commits")
    parser.add_argument("--profile", type=Path, help="cProfile of each API process: FILE.<pid>")
    parser.add_argument("--profile-clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    rows = run(
        quick=args.quick,
        seconds=args.seconds,
        repeats=args.repeats,
        clients=args.clients,
        processes=args.processes,
        durable=args.durable,
        profile=args.profile.resolve() if args.profile else None,
        profile_clock=args.profile_clock,
    )
    report.print_rows(rows)


if __name__ == "__main__":
    main()
