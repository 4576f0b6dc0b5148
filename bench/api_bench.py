"""Benchmark: authenticated API reads and job submissions under 50 concurrent clients.

Veil runs as a real server in its own process (``bench/api_server.py veil``:
embedded OpenBao, SQLite, uvicorn; the job worker off, so submitted jobs only
queue and no job eats the CPU).  The world: an enterprise, a provider, a small
uploaded dataset, and a grant with a large ε budget.  The baseline, measured in
the same run, is a bare FastAPI app in its own uvicorn process whose routes
return the very bytes Veil answered, with no authentication and no database.

Two loads, each ``clients`` keep-alive connections on loopback sending
back to back for ``seconds`` (after a one-second warm-up that is not counted):

- reads: ``GET /v1/grants/{id}`` with the provider's bearer token;
- submissions: ``POST /v1/jobs``, a tier-3 DP count with ε = 0.0001 (Veil
  decides, debits the grant and the dataset cap, appends two audit events and
  queues the job, all in one write transaction).

The load generator is a minimal HTTP/1.1 client on asyncio (uvloop when
installed) rather than httpx, so that the client's own CPU use, on the same
machine, caps the baseline as little as possible.  Veil and the baseline take
turns, ``repeats`` (5) runs each per load; reported for each: requests/s, p50 and
p99 latency, and the server process's CPU time per request (Linux, from
``/proc``: the steadier figure on a shared machine), as medians with min-max.
Goals for reads (issue 24): at least 0.25 times the baseline's requests/s and at
most 0.5 ms of server CPU per read.  Submissions are reported (their goal is
measured on PostgreSQL with two API processes).

Run alone: ``.venv/bin/python bench/api_bench.py [--seconds 4] [--clients 50] [--repeats 5]
[--quick] [--loads reads]``
(``--profile FILE [--profile-clock cpu]`` also writes a cProfile of Veil's server,
all its threads merged).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api_server import TOKEN_FILE  # noqa: E402
from bench.report import REPEATS, Measure, Row, interleaved, series_row  # noqa: E402
from keys.bao import free_port  # noqa: E402
from sandbox.client import VeilClient  # noqa: E402

SERVER = Path(__file__).resolve().parent / "api_server.py"
HOST = "127.0.0.1"
WARMUP_S = 1.0
#: Reads (issue 24): at least this share of the bare endpoint's rate ...
READS_GOAL = 0.25
#: ... and at most this much of the server's CPU (user + system) per read.
READS_CPU_GOAL_MS = 0.5
COLUMNS: list[dict[str, Any]] = [
    {"name": "line", "type": "string", "class": "public", "categories": ["a", "b", "c"]},
    {"name": "temperature_c", "type": "float", "class": "internal", "lower": 0, "upper": 150},
]
COUNT_QUERY = {"aggregates": [{"kind": "count"}]}
JOB_EPSILON = 0.0001


@dataclass(frozen=True)
class Load:
    """One measured load: completed requests per second and latency percentiles (ms)."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    #: The server process's CPU time (user + system) per counted request; None off Linux.
    cpu_ms: float | None = None
    #: ``measure``'s ``probe`` (CPU seconds of whatever it reads) per counted request, in ms,
    #: over the same window as the requests counted: from the end of the warm-up.
    probe_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class Target:
    """What every client sends, and the status it must get back."""

    name: str
    request: bytes
    expect: int


# -- the load generator ---------------------------------------------------------------------------


async def _response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length framed); return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise RuntimeError("the server answered without Content-Length")
    await reader.readexactly(length)
    return status


async def _client(
    port: int, target: Target, warm_until: float, stop_at: float, done: list[tuple[float, float]]
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while (start := time.perf_counter()) < stop_at:
            writer.write(target.request)
            status = await _response(reader)
            end = time.perf_counter()
            if status != target.expect:
                raise RuntimeError(f"{target.name}: status {status}, expected {target.expect}")
            if start >= warm_until:
                done.append((start, end))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: CPU seconds of some processes so far (``measure``'s ``probe``).
Probe = Callable[[], tuple[float, ...]]


async def _load(
    server: Server, target: Target, seconds: float, clients: int, probe: Probe | None
) -> Load:
    now = time.perf_counter()
    warm_until, stop_at = now + WARMUP_S, now + WARMUP_S + seconds
    done: list[tuple[float, float]] = []

    async def cpu_after_warmup() -> tuple[float | None, tuple[float, ...]]:
        await asyncio.sleep(WARMUP_S)
        return cpu_seconds(server.pid), probe() if probe else ()

    (cpu_start, probed), *_ = await asyncio.gather(
        cpu_after_warmup(),
        *(_client(server.port, target, warm_until, stop_at, done) for _ in range(clients)),
    )
    cpu_end, probed_end = cpu_seconds(server.pid), probe() if probe else ()
    if not done:
        raise RuntimeError(f"{target.name}: no request completed in {seconds} s")
    latencies = sorted(end - start for start, end in done)
    window = max(end for _, end in done) - warm_until
    cuts = statistics.quantiles(latencies, n=100)
    cpu_ms = None
    if cpu_start is not None and cpu_end is not None:
        cpu_ms = (cpu_end - cpu_start) * 1000 / len(done)
    per_request = tuple((b - a) * 1000 / len(done) for a, b in zip(probed, probed_end, strict=True))
    return Load(
        len(done) / window, cuts[49] * 1000, cuts[98] * 1000, len(done), cpu_ms, per_request
    )


def measure(
    server: Server, target: Target, seconds: float, clients: int, probe: Probe | None = None
) -> Load:
    """Drive ``clients`` keep-alive connections at ``server`` for ``seconds`` (plus warm-up);
    ``probe``'s CPU seconds are read when the warm-up ends and at the end."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_load(server, target, seconds, clients, probe))


def http_request(method: str, path: str, token: str | None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Accept: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- the servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    port: int
    pid: int


@contextlib.contextmanager
def server(args: list[str], env: dict[str, str], log: Path, ready: str) -> Iterator[Server]:
    """Start ``api_server.py`` with ``args`` on a free port; yield it once ``ready`` answers."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
            [sys.executable, str(SERVER), *args, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited; see {log}:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{HOST}:{port}{ready}", timeout=2).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {log}")
            time.sleep(0.1)
        yield Server(port, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class World:
    provider_token: str
    grant_id: str
    dataset_id: str


def build_world(url: str, operator_token: str) -> World:
    """An enterprise, a provider, a small uploaded dataset, and a grant with a large budget."""
    with VeilClient(url, operator_token) as operator:
        ent = operator.create_enterprise("Bench Works", "bench-works")
        prov = operator.create_provider("Bench Analytics")
        ent_token, prov_token = operator.issue_token(ent["id"]), operator.issue_token(prov["id"])
    with VeilClient(url, ent_token) as enterprise:
        ds = enterprise.create_dataset("bench-api", COLUMNS, epsilon_cap=100.0)
        csv = "line,temperature_c\n" + "".join(f"{'abc'[i % 3]},{i % 150}\n" for i in range(300))
        enterprise.upload(ds["id"], csv.encode())
        grant = enterprise.create_grant(
            prov["id"],
            [ds["id"]],
            [c["name"] for c in COLUMNS],
            [0, 3],
            ["process-optimization"],  # from the city's purpose vocabulary
            datetime.now(UTC) + timedelta(days=1),
            epsilon=100.0,
        )
    return World(prov_token, grant["id"], ds["id"])


def _rows(name: str, veil: list[Load], bare: list[Load], clients: int) -> list[Row]:
    """The rows of one load, each from the interleaved runs (run i of Veil against run i of
    the baseline)."""
    what = f"API {name}, {clients} clients"
    reads = name == "reads"

    def series(attr: str, loads: list[Load]) -> list[float]:
        return [getattr(x, attr) for x in loads]

    rows = [
        series_row(
            f"{what}: requests/s (bare FastAPI baseline)",
            series("rps", veil),
            series("rps", bare),
            "req/s",
            f">= {READS_GOAL}x baseline" if reads else "report",
            (lambda _v, ratio: ratio is not None and ratio >= READS_GOAL) if reads else None,
        ),
        *(
            series_row(
                f"{what}: {p} latency", series(attr, veil), series(attr, bare), "ms", "report", None
            )
            for p, attr in (("p50", "p50_ms"), ("p99", "p99_ms"))
        ),
    ]
    if all(x.cpu_ms is not None for x in veil + bare):
        rows.append(
            series_row(
                f"{what}: server CPU per request",
                series("cpu_ms", veil),
                series("cpu_ms", bare),
                "ms",
                f"<= {READS_CPU_GOAL_MS} ms" if reads else "report",
                (lambda v, _ratio: v <= READS_CPU_GOAL_MS) if reads else None,
            )
        )
    return rows


def run(
    seconds: float = 4.0,
    clients: int = 50,
    *,
    repeats: int = REPEATS,
    quick: bool = False,
    profile: Path | None = None,
    profile_clock: str = "wall",
    loads: tuple[str, ...] = ("reads", "submissions"),
) -> list[Row]:
    """Veil vs the bare baseline for each load: ``repeats`` interleaved runs of ``seconds``
    each (Veil, baseline, Veil, ...); ``quick``: 3 runs of 1.5 s."""
    if quick:
        seconds, repeats = 1.5, 3
    with tempfile.TemporaryDirectory(prefix="veil-api-bench-") as home_name:
        home = Path(home_name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
        env |= {"VEIL_DATA_DIR": str(home / "veil"), "PYTHONPATH": str(ROOT)}
        env |= {"VEIL_COMMITMENT_LETTERS": "false"}  # letters: once per grant, not measured
        # One token sends everything: the limiter runs, at a rate no load here reaches.
        env |= {"VEIL_RATE_LIMIT_PER_S": "1000000", "VEIL_RATE_LIMIT_BURST": "1000000"}
        log = home / "servers.log"
        veil_args = ["veil"]
        if profile:
            veil_args += ["--profile", str(profile), "--profile-clock", profile_clock]
        with server(veil_args, env, log, "/v1/health") as veil_server:
            url = f"http://{HOST}:{veil_server.port}"
            world = build_world(url, (home / "veil" / TOKEN_FILE).read_text())
            auth = {"Authorization": f"Bearer {world.provider_token}"}
            job = json.dumps(
                {
                    "dataset_id": world.dataset_id,
                    "purpose": "process-optimization",
                    "tier": 3,
                    "epsilon": JOB_EPSILON,
                    "query": COUNT_QUERY,
                }
            ).encode()
            read_path = f"/v1/grants/{world.grant_id}"
            get_body = httpx.get(url + read_path, headers=auth).raise_for_status().content
            posted = httpx.post(url + "/v1/jobs", headers=auth, content=job).raise_for_status()
            post_body = posted.content
            (home / "get.json").write_bytes(get_body)
            (home / "post.json").write_bytes(post_body)
            targets = {
                "reads": Target("read", http_request("GET", read_path, world.provider_token), 200),
                "submissions": Target(
                    "submit", http_request("POST", "/v1/jobs", world.provider_token, job), 202
                ),
            }
            bare_args = ["bare", "--get-body", str(home / "get.json")]
            bare_args += ["--post-body", str(home / "post.json")]
            measured: dict[tuple[str, str], list[Load]] = {}
            with server(bare_args, env, log, read_path) as bare_server:

                def measure_on(at: Server, name: str, side: str) -> Measure:
                    def one_run() -> float:
                        load = measure(at, targets[name], seconds, clients)
                        measured.setdefault((name, side), []).append(load)
                        return load.rps

                    return one_run

                # Veil and the baseline take turns, so that other work on the machine
                # weighs on both alike; each first serves one run that is not counted
                # (lazy imports and compiled statements, the first connections).
                for name in loads:
                    for at in (veil_server, bare_server):
                        measure(at, targets[name], 2 * WARMUP_S, clients)
                    interleaved(
                        repeats,
                        measure_on(veil_server, name, "veil"),
                        measure_on(bare_server, name, "bare"),
                    )
    rows: list[Row] = []
    for name in loads:
        rows += _rows(name, measured[name, "veil"], measured[name, "bare"], clients)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="per run, after warm-up")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--repeats", type=int, default=REPEATS, help="interleaved runs; medians are reported"
    )
    parser.add_argument("--quick", action="store_true", help="3 runs of 1.5 s, for development")
    parser.add_argument("--profile", type=Path, help="write a cProfile of Veil's server here")
    parser.add_argument("--profile-clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument(
        "--loads", nargs="+", choices=["reads", "submissions"], default=["reads", "submissions"]
    )
    args = parser.parse_args()
    from bench.report import print_rows

    profile = args.profile.resolve() if args.profile else None
    rows = run(
        args.seconds,
        args.clients,
        repeats=args.repeats,
        quick=args.quick,
        profile=profile,
        profile_clock=args.profile_clock,
        loads=tuple(args.loads),
    )
    print_rows(rows)


if __name__ == "__main__":
    main()
