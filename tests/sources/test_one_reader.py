"""A continuous source has one reader: the scheduler that holds its lease (a real amqtt
broker, a real asyncua server). A run now is queued for that scheduler instead of opening a
copy; a second scheduler (another process on the same database) leaves the source to the
first until its lease is given back or runs out, then opens it afresh; no row is stored
twice on any of these paths."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from typer.testing import CliRunner

from policies.principals import issue_token
from sandbox.cli.app import app
from sandbox.client import VeilClient
from sandbox.console.session import csrf_token
from sandbox.data.datasets import latest_version, load_frame
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.sources import runs
from sandbox.sources.declarations import declare_source
from sandbox.sources.scheduler import SourceScheduler
from sandbox.store.source_models import SourceState
from tests.sources.conftest import Tenants, line_dataset
from tests.sources.mqtt_broker import Broker, Publisher, telemetry_source, wait_for
from tests.sources.mqtt_broker import mqtt_broker as mqtt_broker
from tests.sources.mqtt_broker import publisher as publisher
from tests.sources.opcua_fixtures import opcua_machine as opcua_machine  # the fixture

MQTT_MAPPING = {
    "columns": {
        "machine": {"field": "device"},
        "temperature_c": {"field": "temp"},
        "cycle_time_s": {"field": "cycle_ms", "scale": 0.001},
        "plant": {"constant": "plant-a"},
        "note": {"field": "received_at"},
    }
}
OPCUA_MAPPING = {
    "columns": {
        "machine": {"constant": "mill-1"},
        "temperature_c": {"field": "temp"},
        "cycle_time_s": {"field": "speed", "scale": 0.01},
        "plant": {"constant": "plant-a"},
        "note": {"field": "ts"},
    }
}


def _mqtt(veil: Veil, tenants: Tenants, broker: Broker, name: str, interval_s: float) -> str:
    dataset = line_dataset(veil, tenants.acme, name)
    config = telemetry_source(broker)
    declare_source(veil, tenants.acme, dataset, kind="mqtt", config=config,
                   interval_s=interval_s, mapping=MQTT_MAPPING)  # fmt: skip
    return dataset


def _due_now(veil: Veil) -> None:
    with veil.db.transaction() as s:
        s.execute(update(SourceState).values(next_attempt_at=veil.clock()))


def _temperatures(veil: Veil, tenants: Tenants, dataset: str) -> list[float]:
    """The latest version's temperatures (every version is a full snapshot)."""
    with veil.db.read() as s:
        version = latest_version(s, dataset)
        if version is None:
            return []
        s.expunge(version)
    assert tenants.acme.slug is not None
    return list(load_frame(veil, tenants.acme.slug, version)["temperature_c"].to_list())


def _until_stored(
    veil: Veil, tenants: Tenants, dataset: str, last: float, *schedulers: SourceScheduler
) -> list[float]:
    """Run the schedulers (each due at once) until ``last`` is stored; the temperatures."""

    def stored() -> bool:
        for scheduler in schedulers:
            _due_now(veil)
            scheduler.run_due()
        return last in _temperatures(veil, tenants, dataset)

    wait_for(stored, f"{last} stored")
    return _temperatures(veil, tenants, dataset)


def _held(scheduler: SourceScheduler) -> Any:
    (kept,) = scheduler._open.values()
    return kept.source


def _lease(veil: Veil) -> tuple[str | None, Any]:
    with veil.db.read() as s:
        state = s.scalars(select(SourceState)).one()
        return state.claimed_by, state.claimed_until


def test_run_now_of_a_source_a_scheduler_reads_is_queued_for_it_and_stores_nothing_twice(
    veil: Veil, tenants: Tenants, mqtt_broker: Broker, publisher: Publisher
) -> None:
    dataset = _mqtt(veil, tenants, mqtt_broker, "mqtt-run-now", interval_s=60)
    scheduler = SourceScheduler(veil)
    assert scheduler.run_due() == 1  # opens the source: nothing yet
    publisher.publish("factory/press-1/telemetry", {"t": 70.5, "c": 30000})
    publisher.publish("factory/press-2/telemetry", {"t": 71, "c": 31000})
    assert _until_stored(veil, tenants, dataset, 71.0, scheduler) == [70.5, 71.0]
    holder, until = _lease(veil)  # between runs: the lease of the source it keeps open
    # held for VEIL_SOURCE_HOLD_S, not a run's VEIL_SOURCE_LEASE_S: a dead reader is
    # replaced within it
    assert holder is not None and until is not None
    hold = timedelta(seconds=veil.settings.source_hold_s)
    assert veil.clock() < until.replace(tzinfo=veil.clock().tzinfo) <= veil.clock() + hold
    kept = _held(scheduler)
    with veil.db.transaction() as s:
        token = issue_token(s, s.merge(tenants.acme), lifetime=timedelta(hours=1)).secret
    with ApiThread(veil.settings, veil) as api:
        run = VeilClient(api, token).run_source(dataset)  # the API: queued, not run here
        cli = CliRunner().invoke(app, ["sources", "run-now", dataset, "--token", token,
                                       "--url", api])  # fmt: skip
        with httpx.Client(base_url=api, cookies={"veil_console": token}) as http:
            button = http.post(f"/console/sources/{dataset}/run", data={"csrf": csrf_token(token)},
                               headers={"x-csrf-token": csrf_token(token)})  # fmt: skip
    with veil.db.read() as s:
        due = s.scalars(select(SourceState.next_attempt_at)).one() <= veil.clock()
    assert scheduler.run_due() in (0, 1)  # (main's behaviour: not due, a minute away)
    publisher.publish("factory/press-1/telemetry", {"t": 72, "c": 32000})
    wait_for(lambda: kept.held >= 1, "the message held")
    # No row stored twice, in any version: the message that came after once.
    assert _until_stored(veil, tenants, dataset, 72.0, scheduler) == [70.5, 71.0, 72.0]
    assert _held(scheduler) is kept  # one reader all along: never opened again
    assert run == run | {"queued": True, "rows": 0, "version": None, "error": None}
    assert cli.exit_code == 0 and "queued" in cli.output and dataset in cli.output
    assert "source-queued" in button.headers.get("location", "")  # the console's notice
    assert due  # queued: due at once for the scheduler, though its interval is a minute
    assert holder == scheduler.owner
    scheduler.stop()
    assert _lease(veil) == (None, None)  # given back when it stops
    # No scheduler holds it: run now opens the source for its run (a new opening, nothing
    # held from before) and closes it after.
    alone = runs.run_now(veil, tenants.acme, dataset)
    assert not alone.queued and alone.error is None
    assert _temperatures(veil, tenants, dataset) == [70.5, 71.0, 72.0]


def test_a_second_scheduler_leaves_the_source_to_the_first_until_it_stops(
    veil: Veil, tenants: Tenants, mqtt_broker: Broker, publisher: Publisher
) -> None:
    dataset = _mqtt(veil, tenants, mqtt_broker, "mqtt-two", interval_s=1)
    first, second = SourceScheduler(veil), SourceScheduler(veil)  # two processes' schedulers
    assert first.run_due() == 1  # opens the source and keeps its lease
    _due_now(veil)
    second.run_due()  # due, but held by the first (main's behaviour: opened here too)
    publisher.publish("factory/press-1/telemetry", {"t": 70.5, "c": 30000})
    publisher.publish("factory/press-2/telemetry", {"t": 71, "c": 31000})
    assert _until_stored(veil, tenants, dataset, 71.0, first, second) == [70.5, 71.0]
    assert second._open == {}
    for _ in range(3):  # the second never reads it, however often it is due
        for scheduler in (second, first):
            _due_now(veil)
            scheduler.run_due()
    assert second._open == {} and _temperatures(veil, tenants, dataset) == [70.5, 71.0]
    # The first stops (its process ends): the second takes the source over, opened afresh.
    first.stop()
    _due_now(veil)
    assert second.run_due() == 1
    assert _lease(veil)[0] == second.owner
    publisher.publish("factory/press-1/telemetry", {"t": 72, "c": 32000})
    wait_for(lambda: _held(second).held >= 1, "the message held")
    assert _until_stored(veil, tenants, dataset, 72.0, second) == [70.5, 71.0, 72.0]
    second.stop()


def test_a_lease_that_ran_out_goes_to_another_reader_and_the_first_opens_afresh(
    veil: Veil, tenants: Tenants, mqtt_broker: Broker, publisher: Publisher
) -> None:
    dataset = _mqtt(veil, tenants, mqtt_broker, "mqtt-ran-out", interval_s=1)
    first, second = SourceScheduler(veil), SourceScheduler(veil)
    assert first.run_due() == 1
    publisher.publish("factory/press-1/telemetry", {"t": 70.5, "c": 30000})
    assert _until_stored(veil, tenants, dataset, 70.5, first) == [70.5]
    stale = _held(first)
    # The first hangs past its lease (its renewals stop): the second takes the source.
    with veil.db.transaction() as s:
        s.execute(update(SourceState).values(claimed_until=veil.clock() - timedelta(seconds=1)))
    _due_now(veil)
    assert second.run_due() == 1
    publisher.publish("factory/press-2/telemetry", {"t": 71, "c": 31000})
    wait_for(lambda: _held(second).held >= 1, "the message held by the second")
    assert _until_stored(veil, tenants, dataset, 71.0, second) == [70.5, 71.0]
    # The first wakes up: its lease is lost, so its copy (which holds 70.5 and 71 too) is
    # closed; it does not read the source while the second holds it.
    _due_now(veil)
    first.run_due()
    assert _temperatures(veil, tenants, dataset) == [70.5, 71.0]
    closed = (first._open == {}, stale._closed)
    # The second stops; the first takes the source again, opened afresh (the stale copy's
    # items, stored by the second, are never stored again).
    second.stop()
    _due_now(veil)
    assert first.run_due() == 1
    publisher.publish("factory/press-1/telemetry", {"t": 72, "c": 32000})
    wait_for(lambda: _held(first).held >= 1, "the message held by the first")
    assert _until_stored(veil, tenants, dataset, 72.0, first) == [70.5, 71.0, 72.0]
    assert closed == (True, True) and _held(first) is not stale
    first.stop()


def test_opcua_subscribed_has_one_reader_too(
    veil: Veil, tenants: Tenants, opcua_machine: Any
) -> None:
    opcua_machine.set("Spindle.Speed", 3000)
    opcua_machine.set("Spindle.Temp", 64.5)
    dataset = line_dataset(veil, tenants.acme, "mill-one-reader")
    config = {
        "endpoint": opcua_machine.endpoint,
        "fields": {
            "temp": opcua_machine.node_id("Spindle.Temp"),
            "speed": opcua_machine.node_id("Spindle.Speed"),
        },
        "device": "mill-1",
        "mode": "subscribed",
        "publishing_interval_ms": 50,
    }
    declare_source(veil, tenants.acme, dataset, kind="opcua", config=config, interval_s=60,
                   mapping=OPCUA_MAPPING)  # fmt: skip
    first, second = SourceScheduler(veil), SourceScheduler(veil)
    assert first.run_due() == 1  # the state the subscription began with
    assert _temperatures(veil, tenants, dataset) == [64.5]
    kept = _held(first)
    queued = runs.run_now(veil, tenants.acme, dataset)  # main's behaviour: a copy's run
    _due_now(veil)
    second.run_due()  # held by the first (main's behaviour: opened here too)

    def change(temp: float) -> None:
        held = kept.held
        opcua_machine.set("Spindle.Temp", temp)
        deadline = time.monotonic() + 20
        while kept.held == held:
            assert time.monotonic() < deadline, "the change never reached the source"
            time.sleep(0.02)

    change(65.0)
    assert _until_stored(veil, tenants, dataset, 65.0, second, first) == [64.5, 65.0]
    assert queued.queued and _held(first) is kept and second._open == {}
    first.stop()
    second.stop()


def test_a_run_now_asked_during_the_schedulers_run_stays_due(
    veil: Veil, tenants: Tenants, mqtt_broker: Broker, publisher: Publisher, monkeypatch: Any
) -> None:
    dataset = _mqtt(veil, tenants, mqtt_broker, "mqtt-asked-meanwhile", interval_s=60)
    scheduler = SourceScheduler(veil)
    assert scheduler.run_due() == 1
    publisher.publish("factory/press-1/telemetry", {"t": 70.5, "c": 30000})
    wait_for(lambda: _held(scheduler).held >= 1, "the message held")
    snapshot, asked = runs._snapshot, []

    def meanwhile(*args: Any) -> Any:  # the run under way: a run now comes in
        asked.append(runs.run_now(veil, tenants.acme, dataset))
        return snapshot(*args)

    monkeypatch.setattr(runs, "_snapshot", meanwhile)
    _due_now(veil)
    assert scheduler.run_due() == 1 and asked[0].queued
    monkeypatch.setattr(runs, "_snapshot", snapshot)
    assert _temperatures(veil, tenants, dataset) == [70.5]
    # Still due (not a minute away, the schedule's next run): the run asked for is not lost.
    assert scheduler.run_due() == 1
    scheduler.stop()
