"""Benchmark: reading data sources where they live (issue 25), one ``make bench`` item.

``run`` gives three groups of rows:

- each kind's **run into encrypted storage vs the same reads alone**, and the **lag** from
  a value at the source to a queryable version (``bench/sources_runs_bench.py``);
- the **MQTT source vs a bare paho subscriber**, and its publish-to-read lag
  (``bench/sources_mqtt_bench.py``);
- the **OPC UA source vs a bare asyncua client** (below).

The OPC UA part:

- **values read per CPU second**: Veil's OPC UA source in sampled mode (its loop thread,
  the synchronous hand-over, a typed polars row) vs a bare ``asyncua`` client reading the
  same nodes with one Read request, in this process's CPU time (``time.process_time``);
  the server runs in a process of its own, so its CPU is not counted on either side.
- **lag**: from a value written on the server to its appearing in a subscribed source's
  read (polled every few ms), vs a bare ``asyncua`` subscription's handler seeing it; both
  with the same publishing interval. This is wall time by nature: the loaded machine's
  scheduling is part of it, so the medians of interleaved repetitions are reported.

Run alone: ``.venv/bin/python bench/sources_bench.py [--variables 200] [--repeats 5] [--quick]``
(each part also runs alone: ``bench/sources_runs_bench.py``, ``bench/sources_mqtt_bench.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import REPEATS, Row, interleaved, print_rows, series_row

NAMESPACE = "urn:veil:bench:machine"
PUBLISHING_INTERVAL_MS = 50


# -- the server, in a process of its own ----------------------------------------------------
def _serve(conn: multiprocessing.connection.Connection, variables: int) -> None:
    """An asyncua server with ``variables`` Double variables and a counter; it writes the
    counter when asked (``conn``) and answers with the write's time."""
    from asyncua import Server, ua

    from keys.bao import free_port

    async def main() -> None:
        server = Server()
        await server.init()
        endpoint = f"opc.tcp://127.0.0.1:{free_port()}/veil/bench/"
        server.set_endpoint(endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(NAMESPACE)
        machine = await server.nodes.objects.add_object(ns, "Machine")
        for i in range(variables):
            await machine.add_variable(ua.NodeId(f"V{i}", ns), f"V{i}", 20.0 + i / 8)
        counter = await machine.add_variable(ua.NodeId("Counter", ns), "Counter", 0)
        await server.start()
        conn.send((endpoint, ns))
        loop = asyncio.get_running_loop()
        while True:
            value = await loop.run_in_executor(None, conn.recv)
            if value is None:
                break
            written = time.time()
            await counter.write_value(ua.Variant(value, ua.VariantType.Int64))
            conn.send(written)
        await server.stop()

    asyncio.run(main())


@contextmanager
def _server(variables: int) -> Iterator[tuple[str, int, multiprocessing.connection.Connection]]:
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(theirs, variables), daemon=True
    )
    process.start()
    try:
        endpoint, ns = ours.recv()
        yield endpoint, ns, ours
    finally:
        ours.send(None)
        process.join(30)
        if process.is_alive():
            process.kill()


# -- values per CPU second -------------------------------------------------------------------
def _veil_sampled(endpoint: str, ns: int, variables: int, reads: int) -> float:
    from sandbox.sources import opcua

    config = {
        "endpoint": endpoint,
        "fields": {f"v{i}": f"ns={ns};s=V{i}" for i in range(variables)},
        "mode": "sampled",
    }
    source = opcua.open_source(config, {})
    try:
        source.read(None)  # connected: the measure is the reads, as a run's loop does them
        began = time.process_time()
        for _ in range(reads):
            batch = source.read(None)
        spent = time.process_time() - began
    finally:
        source.close()
    assert batch.rows.width == variables + 1
    return variables * reads / spent


def _bare_sampled(endpoint: str, ns: int, variables: int, reads: int) -> float:
    from asyncua import Client

    async def main() -> float:
        async with Client(endpoint) as client:
            nodes = [client.get_node(f"ns={ns};s=V{i}") for i in range(variables)]
            await client.read_values(nodes)
            began = time.process_time()
            for _ in range(reads):
                values = await client.read_values(nodes)
            spent = time.process_time() - began
        assert len(values) == variables
        return variables * reads / spent

    return asyncio.run(main())


# -- lag -------------------------------------------------------------------------------------
def _veil_lag(endpoint: str, ns: int, conn: Any, changes: int) -> float:
    """The median lag (ms) of ``changes`` writes seen by a subscribed source's reads."""
    from sandbox.sources import opcua

    config = {
        "endpoint": endpoint,
        "fields": {"counter": f"ns={ns};s=Counter"},
        "mode": "subscribed",
        "publishing_interval_ms": PUBLISHING_INTERVAL_MS,
    }
    source = opcua.open_source(config, {})
    lags = []
    try:
        source.read(None)
        for _ in range(changes):
            value = time.monotonic_ns()
            conn.send(value)
            written = conn.recv()
            while True:
                rows = source.read(None).rows
                if value in rows["counter"].to_list():
                    lags.append((time.time() - written) * 1000)
                    break
                time.sleep(0.002)
    finally:
        source.close()
    return sorted(lags)[len(lags) // 2]


def _bare_lag(endpoint: str, ns: int, conn: Any, changes: int) -> float:
    """The same with a bare asyncua subscription whose handler notes when it saw each value."""
    from asyncua import Client

    seen: dict[int, float] = {}
    arrived = threading.Event()

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            seen[val] = time.time()
            arrived.set()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)

    client = Client(endpoint)
    lags = []
    try:
        call(client.connect())
        subscription = call(client.create_subscription(PUBLISHING_INTERVAL_MS, Handler()))
        call(subscription.subscribe_data_change(client.get_node(f"ns={ns};s=Counter")))
        for _ in range(changes):
            value = time.monotonic_ns()
            conn.send(value)
            written = conn.recv()
            while value not in seen:
                arrived.wait(1)
                arrived.clear()
            lags.append((seen[value] - written) * 1000)
    finally:
        call(client.disconnect())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    return sorted(lags)[len(lags) // 2]


def run(variables: int = 200, repeats: int = REPEATS, quick: bool = False) -> list[Row]:
    """All the sources' rows: runs into storage and lags, MQTT vs paho, OPC UA vs asyncua."""
    from bench import sources_mqtt_bench, sources_runs_bench

    # asyncua warns of every session's and subscription's revised values: noise in the table.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    rows = sources_runs_bench.run(quick=quick, repeats=repeats)
    rows += sources_mqtt_bench.run(quick=quick, messages=3_000, lag_messages=20, repeats=repeats)
    return rows + _opcua_rows(variables, repeats, quick)


def _opcua_rows(variables: int, repeats: int, quick: bool) -> list[Row]:
    reads, changes = (20, 5) if quick else (50, 10)
    quick_tag = ", quick" if quick else ""
    if quick:
        repeats = 2
    with _server(variables) as (endpoint, ns, conn):
        veil, bare = interleaved(
            repeats,
            lambda: _veil_sampled(endpoint, ns, variables, reads),
            lambda: _bare_sampled(endpoint, ns, variables, reads),
        )
        veil_lag, bare_lag = interleaved(
            repeats,
            lambda: _veil_lag(endpoint, ns, conn, changes),
            lambda: _bare_lag(endpoint, ns, conn, changes),
        )
    return [
        series_row(
            f"OPC UA sampled reads, {variables} values a read, {reads} reads a turn{quick_tag}",
            veil, bare, "values/CPU s", ">= 0.5x a bare asyncua client",
            lambda v, ratio: ratio is not None and ratio >= 0.5,
        ),
        series_row(
            f"OPC UA subscribed: write to read lag ({PUBLISHING_INTERVAL_MS} ms publishing)",
            veil_lag, bare_lag, "ms (median)", "report", None,
        ),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variables", type=int, default=200, help="values in one read")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--quick", action="store_true", help="fewer reads and repetitions")
    args = parser.parse_args()
    began = dt.datetime.now(dt.UTC)
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print_rows(run(args.variables, args.repeats, quick=args.quick))
    took = (dt.datetime.now(dt.UTC) - began).total_seconds()
    print(f"took {took:.0f} s; load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
