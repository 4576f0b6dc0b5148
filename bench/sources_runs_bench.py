"""Benchmark: a source's rows into encrypted storage, and the lag until they are queryable.

**Rows per second** (issue 25: the full run at least half as fast as the read alone). For
each kind, a real server on loopback (PostgreSQL, MariaDB when installed, an ``asyncua``
server in a process of its own, the amqtt broker) and a real Veil core (``open_veil`` with
its embedded OpenBao, SQLite): the **full run** is ``sandbox.sources.runs.run_source`` as the
scheduler calls it (the credentials opened, every read, the mapping, the upload's
validation, the snapshot written encrypted under a fresh data key, the version, cursor and
audit event committed); the **read alone** is the same ``Source.read`` calls
(``runs._read_all``) with nothing after them. Both are timed from the first read, on a
source already open and holding the rows (an SQL table filled beforehand; OPC UA changes
and MQTT messages already received by the open source), so neither side counts the
server's own pace. Two runs each: a **first run** (``rows`` rows into an empty dataset) and
a run of ``rows`` new rows **onto an existing version** of ``rows`` rows, which decrypts
that version and encrypts both (the snapshot design, ``docs/sources.md``). Figures are rows
the run brought per wall second and per CPU second of this process (every thread: paho's
and asyncua's included), the sides taking turns.

**Lag**: with the scheduler running as a worker runs it (``SourceScheduler``, settings'
defaults: polled every ``source_poll_s`` = 1 s, a continuous source's pause
``source_continuous_pause_s`` = 1 s), one source of each kind declared continuous, a value
written at the source (an SQL insert, an OPC UA variable write, an MQTT publish) at a random
moment, then the latest version polled every 20 ms and read as a job reads it
(``load_frame``) until it holds the value. The lag is split into the wait for the scheduler
(the write to the start of the run that stored it), the run, and the reader's poll.

Run alone: ``.venv/bin/python bench/sources_runs_bench.py [--rows N] [--repeats 5] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select

from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema, PrivacyUnit
from bench.report import REPEATS, Row, interleaved, print_rows, series_row
from policies.db import new_id
from policies.principals import Principal, Role
from sandbox.accounts.tenants import create_enterprise
from sandbox.config.settings import Settings
from sandbox.data.datasets import create_dataset, latest_version, load_frame
from sandbox.runtime.veil import Veil
from sandbox.service import bootstrap_operator, open_veil
from sandbox.sources import leases, runs
from sandbox.sources import scheduler as scheduler_module
from sandbox.sources.base import Batch, Source
from sandbox.sources.declarations import declare_source
from sandbox.store.models import DatasetVersion
from sandbox.store.source_models import SourceState

SCHEMA = DatasetSchema(
    (
        ColumnSpec("machine", ColumnType.STRING, ColumnClass.PUBLIC,
                   categories=("press-1", "press-2", "mill-1")),
        ColumnSpec("temperature_c", ColumnType.FLOAT, ColumnClass.INTERNAL, lower=0.0, upper=200.0),
        ColumnSpec("cycle_time_s", ColumnType.FLOAT, ColumnClass.INTERNAL, lower=0.0, upper=600.0),
        ColumnSpec("plant", ColumnType.STRING, ColumnClass.PUBLIC, categories=("plant-a",)),
        ColumnSpec("note", ColumnType.STRING, ColumnClass.INTERNAL, nullable=True),
    ),
    PrivacyUnit(),
)  # fmt: skip
PLANT = {"plant": {"constant": "plant-a"}}
#: The MES table (°F, ms) and its mapping; the OPC UA machine's and the MQTT payload's.
SQL_MAPPING = {
    "columns": {
        "machine": {"field": "equipment"},
        "temperature_c": {"field": "temp_f", "scale": 5 / 9, "offset": -160 / 9},
        "cycle_time_s": {"field": "cycle_ms", "scale": 0.001},
        **PLANT,
    }
}
OPCUA_MAPPING = {
    "columns": {
        "machine": {"constant": "mill-1"},
        "temperature_c": {"field": "temp"},
        "cycle_time_s": {"field": "cycle"},
        "note": {"field": "ts"},
        **PLANT,
    }
}
MQTT_MAPPING = {"columns": {
    "machine": {"field": "device"}, "temperature_c": {"field": "temp"},
    "cycle_time_s": {"field": "cycle"}, "note": {"field": "topic"}, **PLANT}}  # fmt: skip
MQTT_TOPIC = {"topic": "plant/+line/+device/telemetry",
              "fields": {"$.temp": "temp", "$.cycle": "cycle"}}  # fmt: skip
SQL_BATCH_ROWS = 10_000
SETTLE_TIMEOUT_S = 120.0
#: OPC UA changes the machine writes before the bench waits for the source to hold them.
OPCUA_BURST = 500
LAG_POLL_S = 0.02


# -- the Veil core ---------------------------------------------------------------------------
@dataclass
class World:
    veil: Veil
    enterprise: Principal
    tenant: str
    datasets: int = 0

    def dataset(self, kind: str) -> str:
        self.datasets += 1
        return create_dataset(self.veil, self.enterprise, f"{kind}-{self.datasets}", SCHEMA).id

    def declare(
        self,
        kind: str,
        config: dict[str, Any],
        mapping: dict[str, Any],
        credentials: dict[str, str] | None = None,
        interval_s: float | None = 31 * 86400.0,
    ) -> tuple[str, str]:
        """A new dataset with a source; (dataset id, source id). The default interval keeps
        a throughput source from ever being due again after its own runs."""
        dataset = self.dataset(kind)
        view = declare_source(
            self.veil,
            self.enterprise,
            dataset,
            kind=kind,
            config=config,
            credentials=credentials,
            interval_s=interval_s,
            mapping=mapping,
        )
        return dataset, view.declaration.id


@contextmanager
def _world(home: Path, rows: int) -> Iterator[World]:
    settings = Settings(
        data_dir=home / "veil",
        vault_addr=None,
        database_url=None,
        source_run_rows=rows,  # a run takes exactly ``rows`` of the table's 2 x rows
        commitment_letters=False,
    )
    with open_veil(settings, worker=False) as veil:
        operator = bootstrap_operator(veil)
        del operator
        with veil.db.read() as session:
            op = session.scalars(select(Principal).where(Principal.role == Role.OPERATOR)).one()
            session.expunge(op)
        enterprise = create_enterprise(veil, op, "Bench Works", "bench-works")
        assert enterprise.slug is not None
        yield World(veil, enterprise, enterprise.slug)


class _Kept:
    """An open source lent to a run: the run's ``close`` leaves it open (as the scheduler's)."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def read(self, cursor: str | None) -> Batch:
        return self.source.read(cursor)

    def close(self) -> None:
        pass


@dataclass
class Series:
    """Rows per wall second and per CPU second, one value per turn."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    #: with the CPU this process spent receiving the rows before the run (``fill``)
    received_cpu: list[float] = field(default_factory=list)

    def timed(self, action: Callable[[], int], receiving_cpu: float = 0.0) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        rows = action()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.wall.append(rows / wall)
        self.cpu.append(rows / cpu)
        self.received_cpu.append(rows / (cpu + receiving_cpu))
        return rows / cpu


def _cpu_of(action: Callable[[], object]) -> float:
    began = time.process_time()
    action()
    return time.process_time() - began


def _full_run(world: World, source_id: str, source: Source, expected: int) -> int:
    owner = new_id("run")
    assert leases.claim(world.veil, source_id, owner, due=False)
    outcome = runs.run_source(world.veil, source_id, owner, lambda *_: _Kept(source))
    if outcome.error is not None or outcome.rows != expected:
        raise RuntimeError(f"the run stored {outcome.rows} of {expected} rows: {outcome.error}")
    return outcome.rows


def _read_alone(
    world: World, source: Source, cursor: str | None, expected: int
) -> tuple[int, str | None]:
    batch = runs._read_all(world.veil, _Kept(source), cursor)
    if batch.rows.height != expected:
        raise RuntimeError(f"the read brought {batch.rows.height} of {expected} rows")
    return batch.rows.height, batch.cursor


def _cursor(world: World, source_id: str) -> str | None:
    with world.veil.db.read() as session:
        state = session.get(SourceState, source_id)
        assert state is not None
        return state.cursor


@dataclass
class KindSeries:
    """The four sides of one kind: the read alone and the full run, first and onto."""

    read_first: Series = field(default_factory=Series)
    run_first: Series = field(default_factory=Series)
    read_onto: Series = field(default_factory=Series)
    run_onto: Series = field(default_factory=Series)


def _kind_turns(
    world: World,
    repeats: int,
    rows: int,
    opened: Callable[[], Source],
    fill: Callable[[Source, int], None],
    kind: str,
    config: dict[str, Any],
    mapping: dict[str, Any],
    credentials: dict[str, str] | None = None,
) -> KindSeries:
    """Interleaved turns: read alone (first, onto), full run (first, onto), repeated.

    ``opened()`` opens a source (connected, with nothing pending); ``fill(source, n)``
    makes the source hold the ``n``-th batch of ``rows`` new rows (n = 1, 2) and returns
    once it does."""
    s = KindSeries()

    def read_turn() -> float:
        source = opened()
        try:
            receiving = _cpu_of(lambda: fill(source, 1))
            cursor: list[str | None] = [None]

            def first() -> int:
                got, cursor[0] = _read_alone(world, source, None, rows)
                return got

            s.read_first.timed(first, receiving)
            receiving = _cpu_of(lambda: fill(source, 2))
            return s.read_onto.timed(
                lambda: _read_alone(world, source, cursor[0], rows)[0], receiving
            )
        finally:
            source.close()

    def run_turn() -> float:
        _dataset, source_id = world.declare(kind, config, mapping, credentials)
        source = opened()
        try:
            receiving = _cpu_of(lambda: fill(source, 1))
            s.run_first.timed(lambda: _full_run(world, source_id, source, rows), receiving)
            receiving = _cpu_of(lambda: fill(source, 2))
            return s.run_onto.timed(lambda: _full_run(world, source_id, source, rows), receiving)
        finally:
            source.close()

    interleaved(repeats, read_turn, run_turn)
    return s


# -- SQL -------------------------------------------------------------------------------------
def _sql_fill_table(connect: Callable[[], Any], rows: int, id_type: str) -> None:
    """The MES table with 2 x ``rows`` readings: a run takes the first half, the next the rest."""
    values = [
        (f"press-{1 + i % 2}", 60 + (i % 200) / 2, 20_000 + i % 40_000) for i in range(2 * rows)
    ]
    with connect() as conn:
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS readings")
        cur.execute(f"CREATE TABLE readings (id {id_type} PRIMARY KEY, equipment varchar(20), "
                    "temp_f numeric(6,2), cycle_ms integer)")  # fmt: skip
        step = 5_000
        for i in range(0, len(values), step):
            cur.executemany("INSERT INTO readings (equipment, temp_f, cycle_ms) "
                            "VALUES (%s, %s, %s)",
                            values[i : i + step])  # fmt: skip
        conn.commit()


def _sql_series(
    world: World, url: str, password: str | None, repeats: int, rows: int
) -> KindSeries:
    from sandbox.sources import sql

    config = {
        "url": url,
        "table": "readings",
        "incremental": "id",
        "batch_rows": min(SQL_BATCH_ROWS, rows),
    }  # a run: whole batches
    credentials = {"password": password} if password else None

    def opened() -> Source:
        return sql.open_source(config, credentials or {})

    return _kind_turns(world, repeats, rows, opened, lambda _s, _n: None, "sql", config,
                       SQL_MAPPING, credentials)  # fmt: skip


@contextmanager
def _postgres(home: Path) -> Iterator[tuple[str, Callable[[], Any]] | None]:
    from cluster.postgres import PostgresServer, find_postgres_bin

    bin_dir = find_postgres_bin()
    if bin_dir is None:
        yield None
        return
    del home  # the server's own directory: as root, initdb runs as postgres, who must enter it
    server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="veil-sources-bench-pg-")))
    try:
        url = server.create_database()
        import psycopg

        plain = url.replace("postgresql+psycopg", "postgresql")
        yield url, lambda: psycopg.connect(plain)
    finally:
        server.stop()


@contextmanager
def _mariadb(home: Path) -> Iterator[tuple[str, Callable[[], Any], str] | None]:
    from tests.sources import mariadb

    if not mariadb.available():
        yield None
        return
    server = mariadb.MariaDbServer(home / "maria")  # it makes the directory
    try:
        url = f"mysql://mes@127.0.0.1:{server.port}/mes"
        yield url, server.mes, server.PASSWORD
    finally:
        server.stop()


# -- OPC UA: a machine in a process of its own ------------------------------------------------
def _serve_machine(conn: multiprocessing.connection.Connection) -> None:
    """An asyncua server with ``Temp`` and ``Cycle`` (Double). Commands: ``("burst", n)``
    writes ``n`` changes (Temp and Cycle in turn), ``("temp", v)`` writes Temp once; each
    answers with the time of its (last) write. ``None`` stops it."""
    from asyncua import Server, ua

    from keys.bao import free_port

    async def main() -> None:
        server = Server()
        await server.init()
        endpoint = f"opc.tcp://127.0.0.1:{free_port()}/veil/bench/"
        server.set_endpoint(endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace("urn:veil:bench:mill")
        mill = await server.nodes.objects.add_object(ns, "Mill")
        temp = await mill.add_variable(ua.NodeId("Temp", ns), "Temp", 60.0)
        cycle = await mill.add_variable(ua.NodeId("Cycle", ns), "Cycle", 30.0)
        await server.start()
        conn.send((endpoint, ns))
        loop = asyncio.get_running_loop()
        count = 0
        while (command := await loop.run_in_executor(None, conn.recv)) is not None:
            what, value = command
            if what == "burst":
                for _ in range(value):
                    count += 1
                    node, number = (
                        (temp, 60 + count % 400 / 10)
                        if count % 2
                        else (cycle, 30 + count % 300 / 10)
                    )
                    await node.write_value(ua.Variant(number, ua.VariantType.Double))
            else:
                await temp.write_value(ua.Variant(value, ua.VariantType.Double))
            conn.send(time.time())
        await server.stop()

    asyncio.run(main())


@contextmanager
def _machine() -> Iterator[tuple[str, int, multiprocessing.connection.Connection]]:
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve_machine, args=(theirs,), daemon=True
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


def _opcua_config(endpoint: str, ns: int, rows: int) -> dict[str, Any]:
    return {"endpoint": endpoint, "mode": "subscribed", "device": "mill-1",
            "fields": {"temp": f"ns={ns};s=Temp", "cycle": f"ns={ns};s=Cycle"},
            "publishing_interval_ms": 50, "buffer_rows": 4 * rows + 10}  # fmt: skip


def _pending(source: Source) -> int | None:
    """How many rows an open continuous source holds unread, where it says (MQTT: ``held``,
    read or not; OPC UA: its subscription's rows), else None."""
    held = getattr(source, "held", None)
    if isinstance(held, int):
        return held
    rows = getattr(getattr(source, "_changes", None), "_rows", None)
    return len(rows) if rows is not None else None


def _wait_held(source: Source, count: int, settle_s: float) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while (held := _pending(source)) is not None and held < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the source holds {held} of {count} rows")
        time.sleep(0.01)
    if held is None:
        time.sleep(settle_s)


def _opcua_series(
    world: World, endpoint: str, ns: int, conn: Any, repeats: int, rows: int
) -> KindSeries:
    from sandbox.sources import opcua

    config = _opcua_config(endpoint, ns, rows)

    def opened() -> Source:
        source = opcua.open_source(config, {})
        deadline = time.monotonic() + 30
        while (first := source.read(None)).rows.height == 0:  # connected: its state row
            if time.monotonic() > deadline:
                raise RuntimeError("the OPC UA source never gave its first row")
            time.sleep(0.02)
        # The state row is held until stored (sandbox/sources/held.py): read on to nothing
        # new, then give that cursor again, as the next run would, so that it is forgotten.
        source.read(first.cursor)
        source.read(first.cursor)
        return source

    def fill(source: Source, _n: int) -> None:
        # In bursts the source takes in before the next: on a loaded machine a burst of
        # thousands outruns the publish responses, and the server's monitored items'
        # queues (1,000 changes each) drop the oldest.
        held = _pending(source) or 0
        for sent in range(0, rows, OPCUA_BURST):
            burst = min(OPCUA_BURST, rows - sent)
            conn.send(("burst", burst))
            conn.recv()
            _wait_held(source, held + sent + burst, 1.0)

    return _kind_turns(world, repeats, rows, opened, fill, "opcua", config, OPCUA_MAPPING)


# -- MQTT ------------------------------------------------------------------------------------
_PUBLISHER = """
import json, sys
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, count = int(sys.argv[1]), int(sys.argv[2])
client = paho.Client(CallbackAPIVersion.VERSION2)
client.max_inflight_messages_set(100)
client.max_queued_messages_set(0)
client.connect("127.0.0.1", port)
client.loop_start()
infos = [client.publish(f"plant/l{i % 3}/press-{1 + i % 2}/telemetry",
                        json.dumps({"temp": 60 + i % 200 / 2, "cycle": 20 + i % 400 / 10}), qos=1)
         for i in range(count)]
for info in infos:
    info.wait_for_publish(timeout=120)
client.disconnect()
client.loop_stop()
"""


def _mqtt_series(world: World, port: int, repeats: int, rows: int) -> KindSeries:
    from sandbox.sources import mqtt

    config = {"host": "127.0.0.1", "port": port, "topics": [MQTT_TOPIC], "buffer": 4 * rows + 10}

    def opened() -> Source:
        source = mqtt.open_source(config, {})
        deadline = time.monotonic() + 30
        while True:
            try:
                source.read(None)  # subscribed
                return source
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def fill(source: Source, n: int) -> None:
        command = [sys.executable, "-c", _PUBLISHER, str(port), str(rows)]
        subprocess.run(command, check=True, timeout=300)  # noqa: S603
        _wait_held(source, n * rows, 1.0)  # held: read or not, until a stored cursor forgets them

    return _kind_turns(world, repeats, rows, opened, fill, "mqtt", config, MQTT_MAPPING)


# -- lag -------------------------------------------------------------------------------------
@dataclass
class Lag:
    total: list[float] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)  # the write to the start of the run
    run: list[float] = field(default_factory=list)  # the run that stored it
    seen: list[float] = field(default_factory=list)  # its commit to the reader's load_frame


class _Recorder:
    """Wraps the scheduler's ``run_source``: each run's start and end, by source."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, float, float, int]] = []
        self._inner = scheduler_module.run_source

    def __call__(
        self, veil: Veil, source_id: str, owner: str, opener: Any, **options: Any
    ) -> runs.RunOutcome:
        began = time.time()
        outcome = self._inner(veil, source_id, owner, opener, **options)
        self.runs.append((source_id, began, time.time(), outcome.rows))
        return outcome


def _lag_sample(
    world: World,
    dataset: str,
    source_id: str,
    marker: float,
    write: Callable[[], float],
    recorder: _Recorder,
    into: Lag,
) -> None:
    """Write at the source (``write`` returns the write's time), poll until a version holds
    ``marker`` in ``temperature_c`` as a job reads it (``load_frame``)."""
    with world.veil.db.read() as session:
        last = session.scalar(
            select(DatasetVersion.version)
            .where(DatasetVersion.dataset_id == dataset)
            .order_by(DatasetVersion.version.desc())
            .limit(1)
        )
    written = write()
    deadline = time.time() + 60
    while True:
        if time.time() > deadline:
            raise RuntimeError("the value never reached a version")
        time.sleep(LAG_POLL_S)
        with world.veil.db.read() as session:
            version = latest_version(session, dataset)
            if version is None or version.version == last:
                continue
            session.expunge(version)
        last = version.version
        frame = load_frame(world.veil, world.tenant, version)
        if ((frame["temperature_c"] - marker).abs() < 1e-6).any():
            seen = time.time()
            break
    deadline = time.time() + 10
    while not (stored := [r for r in recorder.runs if r[0] == source_id and r[3] and r[1] <= seen
                          and r[2] >= written]):  # fmt: skip
        if time.time() > deadline:  # the recorder notes a run once run_source has returned
            raise RuntimeError("the run that stored the value was not recorded")
        time.sleep(0.01)
    began, ended = stored[-1][1], stored[-1][2]
    into.total.append(seen - written)
    into.wait.append(max(0.0, began - written))
    into.run.append(ended - began)
    into.seen.append(seen - ended)


def _lags(
    world: World,
    samples: int,
    pg: tuple[str, Callable[[], Any]] | None,
    machine: tuple[str, int, Any],
    broker_port: int,
) -> dict[str, Lag]:
    """One continuous source of each kind, with the scheduler running (default settings);
    each sample writes one value at one source at a random moment, the kinds in turn."""
    from tests.sources.mqtt_broker import Publisher

    lags: dict[str, Lag] = {}
    writers: dict[str, tuple[str, str, Callable[[float], float]]] = {}
    publisher = Publisher(broker_port)
    if pg is not None:
        url, connect = pg

        def insert(marker: float) -> float:
            with connect() as conn:
                conn.execute("INSERT INTO lag_readings (equipment, temp_f, cycle_ms) VALUES "
                             "('press-1', %s, 30000)", (marker * 9 / 5 + 32,))  # fmt: skip
                conn.commit()
                return time.time()

        with connect() as conn:
            conn.execute("CREATE TABLE lag_readings (id serial PRIMARY KEY, equipment text, "
                         "temp_f double precision, cycle_ms integer)")  # fmt: skip
            conn.commit()
        config = {"url": url, "table": "lag_readings", "incremental": "id"}
        writers["sql"] = (*world.declare("sql", config, SQL_MAPPING, interval_s=None), insert)
    endpoint, ns, conn = machine

    def write_temp(marker: float) -> float:
        conn.send(("temp", marker))
        return float(conn.recv())

    writers["opcua"] = (*world.declare("opcua", _opcua_config(endpoint, ns, 1000), OPCUA_MAPPING,
                                       interval_s=None), write_temp)  # fmt: skip

    def publish(marker: float) -> float:
        written = time.time()
        publisher.publish("plant/l1/press-1/telemetry", {"temp": marker, "cycle": 30})
        return written

    config = {"host": "127.0.0.1", "port": broker_port, "topics": [MQTT_TOPIC]}
    writers["mqtt"] = (*world.declare("mqtt", config, MQTT_MAPPING, interval_s=None), publish)
    recorder = _Recorder()
    scheduler_module.run_source = recorder  # type: ignore[assignment]
    scheduler = scheduler_module.SourceScheduler(world.veil)
    scheduler.start()
    rng = random.Random(25)
    try:
        for kind, (_dataset, source_id, _w) in writers.items():  # each source's first run done
            deadline = time.time() + 60
            while not any(r[0] == source_id for r in recorder.runs):
                if time.time() > deadline:
                    raise RuntimeError(f"the {kind} source never stored its first version")
                time.sleep(0.05)
            lags[kind] = Lag()
        for i in range(samples):
            for kind, (dataset, source_id, write) in writers.items():
                time.sleep(rng.uniform(0, 1.0))  # a random moment in the schedule's ~1 s cycle
                marker = 100 + (i * 10 + len(lags[kind].total)) / 1000 + rng.random() / 1e4
                marker = round(marker, 6)
                _lag_sample(world, dataset, source_id, marker, lambda w=write, m=marker: w(m),
                            recorder, lags[kind])  # fmt: skip
    finally:
        scheduler.stop()
        scheduler_module.run_source = recorder._inner  # type: ignore[assignment]
        publisher.close()
    return lags


# -- the rows --------------------------------------------------------------------------------
def _rows_of(kind: str, s: KindSeries, rows: int, quick: bool, streamed: bool = False) -> list[Row]:
    """A kind's rows. The goal (>= 0.5x) is judged against reading the source: for an SQL
    source the driver's reads; for a continuous one (OPC UA subscribed, MQTT) receiving the
    changes or messages and reading them, since that is what reading such a source is. The
    continuous kinds' runs against draining rows already held in memory are reported too."""
    goal = ">= 0.5x the read alone"
    met = lambda _v, ratio: ratio is not None and ratio >= 0.5  # noqa: E731
    tag = f"{rows:,} rows{', quick' if quick else ''}"
    held = ", rows already held in memory" if streamed else ""
    judged = (goal, met) if not streamed else ("report", None)
    received = [
        series_row(f"{kind} first run vs read alone, both with receiving the rows ({tag}), CPU",
                   s.run_first.received_cpu, s.read_first.received_cpu, "rows/CPU s", goal, met),
        series_row(f"{kind} run onto a version vs read alone, both with receiving ({tag}), CPU",
                   s.run_onto.received_cpu, s.read_onto.received_cpu, "new rows/CPU s", goal,
                   met),
    ] if streamed else []  # fmt: skip
    return [
        *received,
        series_row(f"{kind} first run into storage vs read alone{held} ({tag}), CPU",
                   s.run_first.cpu, s.read_first.cpu, "rows/CPU s", *judged),
        series_row(f"{kind} first run into storage vs read alone{held} ({tag}), wall",
                   s.run_first.wall, s.read_first.wall, "rows/s", "report", None),
        series_row(f"{kind} run onto a version of {rows:,} rows vs read alone{held} ({tag}), CPU",
                   s.run_onto.cpu, s.read_onto.cpu, "new rows/CPU s", *judged),
        series_row(f"{kind} run onto a version of {rows:,} rows vs read alone{held} ({tag}), wall",
                   s.run_onto.wall, s.read_onto.wall, "new rows/s", "report", None),
    ]  # fmt: skip


#: The lag rows' names of the kinds (the SQL source's lag is PostgreSQL's).
LAG_NAMES = {"sql": "PostgreSQL", "opcua": "OPC UA", "mqtt": "MQTT"}


def _lag_rows(lags: dict[str, Lag]) -> list[Row]:
    out = []
    for kind, lag in lags.items():
        if not lag.total:
            continue
        ms = lambda xs: [x * 1000 for x in xs]  # noqa: E731
        item = f"{LAG_NAMES[kind]} lag: written at the source to queryable (scheduler defaults)"
        r = series_row(item, ms(lag.total), None, "ms", "report", None)
        for part in ("wait", "run", "seen"):
            values = ms(getattr(lag, part))
            r[f"{part}_ms"] = round(statistics.median(values), 1)
            r[f"{part}_ms_min"], r[f"{part}_ms_max"] = round(min(values), 1), round(max(values), 1)
        r["item"] += (
            f"; of it, the scheduler's wait {r['wait_ms']:.0f}, the run {r['run_ms']:.0f},"
            f" the reader's poll {r['seen_ms']:.0f}"
        )
        out.append(r)
    return out


def run(
    quick: bool = False,
    rows: int | None = None,
    stream_rows: int | None = None,
    repeats: int = REPEATS,
    lag_samples: int | None = None,
) -> list[Row]:
    """The rows: each kind's runs vs its reads alone, first and onto a version; the lags.
    ``rows``: an SQL run's rows (20,000; quick 2,000); ``stream_rows``: an OPC UA run's
    (5,000; quick 1,000) and an MQTT run's (2,000; quick 1,000: the broker's pace makes
    sending them the longest part), which the server or the publisher sends each time."""
    from tests.sources.mqtt_broker import AMQTT, Broker

    rows = rows or (2_000 if quick else 20_000)
    opcua_rows = stream_rows or (1_000 if quick else 5_000)
    mqtt_rows = stream_rows or (1_000 if quick else 2_000)
    repeats = 2 if quick else repeats
    lag_samples = lag_samples or (1 if quick else 4)
    out: list[Row] = []
    began = time.perf_counter()

    def phase(name: str) -> None:
        print(f"  sources: {name} at {time.perf_counter() - began:.0f} s "
              f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr)  # fmt: skip

    with (
        tempfile.TemporaryDirectory(prefix="veil-sources-bench-") as directory,
        ExitStack() as stack,
    ):
        home = Path(directory)
        world = stack.enter_context(_world(home, rows))
        pg = stack.enter_context(_postgres(home))
        if pg is not None:
            phase("PostgreSQL")
            _sql_fill_table(pg[1], rows, "serial")
            out += _rows_of(
                "PostgreSQL", _sql_series(world, pg[0], None, repeats, rows), rows, quick
            )
        maria = stack.enter_context(_mariadb(home))
        if maria is not None:
            phase("MariaDB")
            _sql_fill_table(maria[1], rows, "INT AUTO_INCREMENT")
            series = _sql_series(world, maria[0], maria[2], repeats, rows)
            out += _rows_of("MariaDB", series, rows, quick)
        phase("OPC UA")
        machine = stack.enter_context(_machine())
        series = _opcua_series(world, *machine, repeats, opcua_rows)
        out += _rows_of("OPC UA", series, opcua_rows, quick, streamed=True)
        if not AMQTT.exists():
            raise RuntimeError(f"the amqtt broker is missing ({AMQTT}): make mqtt-broker")
        phase("MQTT")
        (home / "mqtt").mkdir()
        broker = Broker(home / "mqtt")
        broker.start()
        stack.callback(broker.kill)
        series = _mqtt_series(world, broker.port, repeats, mqtt_rows)
        out += _rows_of("MQTT", series, mqtt_rows, quick, streamed=True)
        phase("lag")
        out += _lag_rows(_lags(world, lag_samples, pg, machine, broker.port))
        phase("done")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="an SQL run's rows (20000)")
    parser.add_argument("--stream-rows", type=int, default=None, help="OPC UA (5000), MQTT (2000)")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--lag-samples", type=int, default=None, help="per kind (4)")
    parser.add_argument("--quick", action="store_true", help="2000 rows, 2 turns")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    began = time.perf_counter()
    rows = run(args.quick, args.rows, args.stream_rows, args.repeats, args.lag_samples)
    print_rows(rows)
    for r in rows:
        if "wait_ms" in r:
            print(
                json.dumps(
                    {k: v for k, v in r.items() if k.startswith(("wait", "run_", "seen", "veil"))}
                )
            )
    print(f"took {time.perf_counter() - began:.0f} s; load average now: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip


if __name__ == "__main__":
    main()
