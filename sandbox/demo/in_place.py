"""`veil demo`: data read where it lives (docs/sources.md), on Acme's node.

Acme's plant (``sandbox.demo.plant``) has an MES database and a machine tool with an OPC UA
server.  On its node, Acme declares a dataset for each and a source that fills it: the MES's
production table read incrementally (the vendor's names and units mapped onto the declared
columns), and the machine's variables subscribed.  The MES source runs on its schedule, the
MES records new work orders, and a run now brings only those (a second version, the cursor
moved on).  The machine runs, the node stores what changed as it goes, and the lag from the
machine's last change to a version the control plane can run a query on is measured.  Then
the provider runs a DP query on the machine's dataset through the control plane.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from sandbox.client import VeilClient
from sandbox.demo.data import MACHINES, SHIFTS
from sandbox.demo.plant import MES_TABLE, READER, SimulatedMachine, SimulatedMes
from sandbox.demo.walkthrough import PURPOSE, _print_result

MES_DATASET: dict[str, Any] = {
    "name": "mes-work-orders",
    "columns": [
        {"name": "machine", "type": "string", "class": "public", "categories": list(MACHINES)},
        {"name": "shift", "type": "string", "class": "public", "categories": list(SHIFTS)},
        {"name": "temperature_c", "type": "float", "class": "internal", "lower": 20, "upper": 120},
        {"name": "cycle_time_s", "type": "float", "class": "internal", "lower": 10, "upper": 90},
        {"name": "good_parts", "type": "integer", "class": "internal", "lower": 0, "upper": 200},
        {"name": "scrap", "type": "integer", "class": "confidential", "lower": 0, "upper": 50},
    ],
}
#: The MES vendor's names and units onto the declared columns (°F -> °C, ms -> s).
MES_MAPPING = {"columns": {
    "machine": {"field": "EQUIP_CODE"},
    "shift": {"field": "SHIFT_CD"},
    "temperature_c": {"field": "TEMP_F", "scale": 5 / 9, "offset": -160 / 9},
    "cycle_time_s": {"field": "CYCLE_MS", "scale": 0.001},
    "good_parts": {"field": "QTY_GOOD"},
    "scrap": {"field": "QTY_SCRAP"},
}}  # fmt: skip
MACHINE_DATASET: dict[str, Any] = {
    "name": "lathe-01-signals",
    "columns": [
        {"name": "machine", "type": "string", "class": "public", "categories": ["lathe-01"]},
        {"name": "spindle_temp_c", "type": "float", "class": "internal", "lower": 20,
         "upper": 70},
        {"name": "spindle_speed_rpm", "type": "integer", "class": "internal", "lower": 2000,
         "upper": 3000},
        {"name": "parts", "type": "integer", "class": "internal", "lower": 0, "upper": 100000},
        {"name": "running", "type": "boolean", "class": "public"},
    ],
}  # fmt: skip
MACHINE_MAPPING = {"columns": {
    "machine": {"constant": "lathe-01"},
    "spindle_temp_c": {"field": "spindle_temp"},
    "spindle_speed_rpm": {"field": "spindle_speed"},
    "parts": {"field": "parts"},
    "running": {"field": "running"},
}}  # fmt: skip
#: The MES's rows before the first run, and the work orders it records before the second.
MES_FIRST, MES_NEW = 2_000, 250
#: How often the machine changes, and how long it runs while the node subscribes.
TICK_S, MACHINING_S = 0.025, 2.5
PUBLISHING_MS = 200
QUERY = [{"kind": "count"}, {"kind": "mean", "column": "spindle_temp_c"}]


def read_in_place(
    acme: VeilClient,
    analyst: VeilClient,
    commit_letter: Callable[[str], None],
    machine: SimulatedMachine,
    site: Path,
    published_version: Callable[[str], int | None],
    searched: Sequence[Path],
    console: Console,
) -> None:
    """The story.  ``acme``: Acme on its node; ``analyst``: the provider on the control
    plane; ``commit_letter``: the commitment letter of a grant's id, issued and signed;
    ``machine``: started (it may still be coming up); ``site``: where the plant's MES file is
    written; ``published_version``: the newest version of a dataset that the control plane
    knows (what a job there would read); ``searched``: the directories of the control plane
    and of Acme's node, where the machine's password must not be found in clear."""
    console.rule("Data where it lives (数据就地接入): Acme's node reads its MES and a machine")
    mes = SimulatedMes(site / "mes.sqlite")
    mes.record(MES_FIRST)
    machine.ready()
    console.print(
        f"Acme's plant: the MES database (table {MES_TABLE}, {MES_FIRST:,} work orders in the "
        "vendor's names and units: TEMP_F in °F, CYCLE_MS in ms; simulated in SQLite) and "
        f"machine tool lathe-01's OPC UA server at {machine.endpoint} (spindle temperature "
        "and speed, part count, running flag; simulated with asyncua)",
        highlight=False,
    )
    _mes(acme, mes, console)
    dataset_id = _declare_machine(acme, machine, console)
    _grant(acme, analyst, commit_letter, dataset_id, console)
    _run_machine(acme, machine, dataset_id, published_version, console)
    _password_nowhere(searched, console)
    _query(analyst, dataset_id, console)


def _password_nowhere(searched: Sequence[Path], console: Console) -> None:
    secret = READER[1].encode()
    files = [p for root in searched for p in root.rglob("*") if p.is_file()]
    found = [p for p in files if secret in p.read_bytes()]
    console.print(
        f"the machine's password in clear in {len(found)} of the {len(files):,} files of the "
        "control plane and Acme's node (its ciphertext is in the node's database)"
    )
    if found:
        raise RuntimeError(f"the machine's password was found in clear in {found[0]}")


def _mes(acme: VeilClient, mes: SimulatedMes, console: Console) -> None:
    ds = acme.create_dataset(MES_DATASET["name"], MES_DATASET["columns"])
    config = {"url": mes.url, "table": MES_TABLE, "incremental": "LOG_ID"}
    source = acme.declare_source(ds["id"], "sql", config, interval_s=3600, mapping=MES_MAPPING)
    console.print(
        f"MES source declared on Acme's node for {ds['name']} ({ds['id']}): sql, table "
        f"{MES_TABLE}, incremental column LOG_ID, every hour; credentials: "
        f"{source['credentials'] or 'none'} (an SQLite file has no password; a PostgreSQL or "
        "MariaDB MES's would be a credential, kept like the machine's below)",
        highlight=False,
    )
    console.print(
        f"mapping v{source['mapping']['version']} (a file, versioned and audited): EQUIP_CODE "
        "-> machine, SHIFT_CD -> shift, TEMP_F (°F) -> temperature_c (x 5/9 - 17.8), CYCLE_MS "
        "-> cycle_time_s (x 0.001), QTY_GOOD -> good_parts, QTY_SCRAP -> scrap",
        highlight=False,
    )
    first = _wait_for_version(acme, ds["id"], 1)
    state = _state(acme, ds["id"])
    console.print(
        f"the node's scheduler ran it at once: version {first['version']}, "
        f"{first['row_count']:,} rows, validated as an upload and stored encrypted; cursor "
        f"LOG_ID {state['cursor']}",
        highlight=False,
    )
    mes.record(MES_NEW)
    run = acme.run_source(ds["id"])
    if run["error"] is not None or run["version"] is None:
        raise RuntimeError(f"the MES source's run failed: {run['error']}")
    latest = acme.get_dataset(ds["id"])["latest_version"]
    state = _state(acme, ds["id"])
    console.print(
        f"the MES records {MES_NEW} more work orders; run now: version {run['version']}, "
        f"{run['rows']} new rows read (only those above the cursor), {latest['row_count']:,} "
        f"in all; cursor LOG_ID {state['cursor']}",
        highlight=False,
    )


def _declare_machine(acme: VeilClient, machine: SimulatedMachine, console: Console) -> str:
    ds = acme.create_dataset(MACHINE_DATASET["name"], MACHINE_DATASET["columns"])
    names = {"spindle_temp": "Spindle.Temp", "spindle_speed": "Spindle.Speed",
             "parts": "Parts.Count", "running": "Running"}  # fmt: skip
    config = {
        "endpoint": machine.endpoint,
        "mode": "subscribed",
        "device": "lathe-01",
        "publishing_interval_ms": PUBLISHING_MS,
        "username": READER[0],
        "fields": {field: machine.node_id(name) for field, name in names.items()},
    }
    source = acme.declare_source(
        ds["id"], "opcua", config, credentials={"password": READER[1]}, mapping=MACHINE_MAPPING
    )
    console.print(
        f"machine source declared for {ds['name']} ({ds['id']}): opcua, subscribed "
        f"(publishing every {PUBLISHING_MS} ms), continuous, 4 node ids mapped to columns, "
        f"login {READER[0]}; credentials: {', '.join(source['credentials'])}: encrypted on "
        "Acme's node under Acme's keys in its own OpenBao, shown to no one (only their "
        "names), never sent to the control plane",
        highlight=False,
    )
    return str(ds["id"])


def _grant(
    acme: VeilClient,
    analyst: VeilClient,
    commit_letter: Callable[[str], None],
    dataset_id: str,
    console: Console,
) -> None:
    """Tier 3 on the machine's dataset before its data comes: the grant covers each version."""
    columns = [c["name"] for c in MACHINE_DATASET["columns"]]
    provider_id = str(analyst.me()["id"])
    grant = acme.create_grant(provider_id, [dataset_id], columns, [3], [PURPOSE],
                              datetime.now(UTC) + timedelta(days=30), epsilon=1.0)  # fmt: skip
    console.print(f"Acme grants the provider tier 3 on the machine's dataset ({grant['id']}, "
                  "epsilon 1): every version the source stores is covered")  # fmt: skip
    commit_letter(str(grant["id"]))


def _run_machine(
    acme: VeilClient,
    machine: SimulatedMachine,
    dataset_id: str,
    published_version: Callable[[str], int | None],
    console: Console,
) -> None:
    """The machine runs while the node is subscribed; the lag of its last change."""
    _wait_for_version(acme, dataset_id, 1)  # the state the subscription began with
    started = time.monotonic()
    machine.run(TICK_S)
    seen = 1
    while time.monotonic() - started < MACHINING_S:
        latest = acme.get_dataset(dataset_id)["latest_version"]
        if latest["version"] > seen:
            seen = latest["version"]
            console.print(f"  the machine runs: version {seen}, {latest['row_count']} rows")
        time.sleep(0.1)
    halted = machine.halt()
    expected = 1 + machine.changes  # the state it began with, then a row per change
    stored = _wait_for_rows(acme, dataset_id, expected)
    stored_at = datetime.fromisoformat(stored["created_at"])
    version = int(stored["version"])
    while (published_version(dataset_id) or 0) < version:
        if datetime.now(UTC) - halted > timedelta(seconds=60):
            raise RuntimeError("the machine's version did not reach the control plane")
        time.sleep(0.02)
    queryable = datetime.now(UTC)
    state = _state(acme, dataset_id)
    online = ", ".join(f"{d} {'online' if up else 'offline'}" for d, up in state["devices"].items())
    at = halted.strftime("%H:%M:%S.%f")[:-3]
    console.print(
        f"lathe-01 stops (running -> false) at {at} UTC: stored on Acme's "
        f"node {(stored_at - halted).total_seconds():.2f} s later (version {version}, "
        f"{stored['row_count']} rows: a row per change), queryable through the control plane "
        f"{(queryable - halted).total_seconds():.2f} s later ({online})",
        highlight=False,
    )
    console.print(
        "  the lag: the subscription's publishing interval, the scheduler's pause between two "
        "runs of a continuous source (VEIL_SOURCE_CONTINUOUS_PAUSE_S), the run (decrypt, "
        "append, encrypt), then the node's next publication to the control plane (between "
        "two of its long-poll claims: up to 10 s)"
    )


def _query(analyst: VeilClient, dataset_id: str, console: Console) -> None:
    deadline = time.monotonic() + 60
    while not any(e["dataset_id"] == dataset_id and 3 in e["tiers"] for e in analyst.catalog()):
        if time.monotonic() > deadline:
            raise RuntimeError("the machine dataset's grant did not reach the control plane")
        time.sleep(0.2)
    job = analyst.submit_job(dataset_id, PURPOSE, 1.0, QUERY)
    final = analyst.wait_for_job(job["id"])
    if final["status"] != "released":
        raise RuntimeError(f"the query on the machine's dataset failed: {final}")
    result = analyst.get_result(job["id"])
    console.print(
        "the provider queries lathe-01's signals through the control plane; Acme's node runs "
        f"the query on version {result['dataset_version']} and releases:"
    )
    _print_result("lathe-01's signals", result, console)


def _state(acme: VeilClient, dataset_id: str) -> dict[str, Any]:
    source = acme.source(dataset_id)
    assert source is not None
    state: dict[str, Any] = source["state"]
    return state


def _wait_for_version(acme: VeilClient, dataset_id: str, version: int) -> dict[str, Any]:
    return _wait_for(acme, dataset_id, lambda v: int(v["version"]) >= version)


def _wait_for_rows(acme: VeilClient, dataset_id: str, rows: int) -> dict[str, Any]:
    return _wait_for(acme, dataset_id, lambda v: int(v["row_count"]) >= rows)


def _wait_for(
    acme: VeilClient, dataset_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    """The dataset's newest version once ``done`` holds for it; the source's error when it
    failed three runs in a row (retried with back-off: 5 s, 10 s) or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        latest = acme.get_dataset(dataset_id)["latest_version"]
        if latest is not None and done(latest):
            return dict(latest)
        state = _state(acme, dataset_id)
        if state["failures"] >= 3 or time.monotonic() > deadline:
            raise RuntimeError(
                f"the source of {dataset_id} stored nothing in time: {state['last_error']}"
            )
        time.sleep(0.05)
