"""MQTT sources through the framework's runs and scheduler: a real amqtt broker, mapped,
validated and stored as encrypted versions; liveness in the source's state."""

from __future__ import annotations

from sqlalchemy import select, update

from policies.audit import AuditEvent
from sandbox.data.datasets import latest_version, load_frame
from sandbox.runtime.veil import Veil
from sandbox.sources.declarations import declare_source, show_source
from sandbox.sources.scheduler import SourceScheduler
from sandbox.store.models import DatasetVersion
from sandbox.store.source_models import SourceState
from tests.sources.conftest import Tenants, line_dataset
from tests.sources.mqtt_broker import Broker, Publisher, telemetry_source, wait_for
from tests.sources.mqtt_broker import mqtt_broker as mqtt_broker
from tests.sources.mqtt_broker import publisher as publisher

MAPPING = {
    "columns": {
        "machine": {"field": "device"},
        "temperature_c": {"field": "temp"},
        "cycle_time_s": {"field": "cycle_ms", "scale": 0.001},
        "plant": {"constant": "plant-a"},
        "note": {"field": "received_at"},
    }
}


def _versions(veil: Veil, dataset: str) -> list[int]:
    with veil.db.read() as s:
        return list(
            s.scalars(select(DatasetVersion.version).where(DatasetVersion.dataset_id == dataset))
        )


def _due_now(veil: Veil) -> None:
    with veil.db.transaction() as s:
        s.execute(update(SourceState).values(next_attempt_at=veil.clock()))


def _opened(veil: Veil, tenants: Tenants, broker: Broker, name: str) -> tuple[str, SourceScheduler]:
    """A dataset fed by an MQTT source on ``broker`` (every device), opened by a scheduler's
    first run (which reads nothing yet)."""
    dataset = line_dataset(veil, tenants.acme, name)
    config = telemetry_source(broker)
    declare_source(
        veil, tenants.acme, dataset, kind="mqtt", config=config, interval_s=1, mapping=MAPPING
    )
    scheduler = SourceScheduler(veil)
    assert scheduler.run_due() == 1
    return dataset, scheduler


def test_mqtt_runs_store_versions_and_liveness(
    veil: Veil, tenants: Tenants, mqtt_broker: Broker, publisher: Publisher
) -> None:
    dataset = line_dataset(veil, tenants.acme, "mqtt-line")
    config = {
        "host": "127.0.0.1",
        "port": mqtt_broker.port,
        "devices": ["press-1", "press-2", "mill-1"],
        "topics": [
            {"topic": "factory/+device/telemetry", "fields": {"$.t": "temp", "$.c": "cycle_ms"}}
        ],
    }
    declare_source(
        veil, tenants.acme, dataset, kind="mqtt", config=config, interval_s=1, mapping=MAPPING
    )
    scheduler = SourceScheduler(veil)
    assert scheduler.run_due() == 1  # opens the source: nothing yet
    publisher.publish("factory/press-1/telemetry", {"t": 70.5, "c": 30000})
    publisher.publish("factory/press-2/telemetry", {"t": 71, "c": 31000})

    def ran() -> bool:
        _due_now(veil)
        scheduler.run_due()
        return _versions(veil, dataset) == [1]

    wait_for(ran, "a version")
    view = show_source(veil, tenants.acme, dataset)
    assert view is not None
    state = view.as_json()["state"]
    assert state["devices"] == {"press-1": True, "press-2": True, "mill-1": False}
    with veil.db.read() as s:
        version = latest_version(s, dataset)
        assert version is not None
        s.expunge(version)
    assert tenants.acme.slug is not None
    frame = load_frame(veil, tenants.acme.slug, version)
    assert frame["temperature_c"].to_list() == [70.5, 71.0]
    assert frame["cycle_time_s"].to_list() == [30.0, 31.0]
    assert sorted(frame["machine"].to_list()) == ["press-1", "press-2"]
    # A row that fails validation (a machine not declared): the run fails, nothing stored.
    publisher.publish("factory/lathe-9/telemetry", {"t": 70, "c": 30000})
    kept = next(iter(scheduler._open.values())).source
    wait_for(lambda: kept.held >= 1, "the message held")
    _due_now(veil)
    scheduler.run_due()
    view = show_source(veil, tenants.acme, dataset)
    assert view is not None
    state = view.as_json()["state"]
    assert state["failures"] == 1 and "machine" in state["last_error"]
    assert _versions(veil, dataset) == [1]
    # The failed run left the source open: the message it could not store is still held,
    # to be read again once the declaration or the mapping lets it through.
    assert next(iter(scheduler._open.values())).source is kept
    assert kept.held >= 1
    scheduler.stop()


def test_a_run_records_what_the_source_could_not_read(
    veil: Veil, tenants: Tenants, mqtt_broker: Broker, publisher: Publisher
) -> None:
    dataset, scheduler = _opened(veil, tenants, mqtt_broker, "mqtt-problems")
    publisher.publish("factory/press-1/telemetry", b"not json: 1234.5")
    publisher.publish("factory/press-1/telemetry", {"t": 70.5, "c": 30000})

    def ran() -> bool:
        _due_now(veil)
        scheduler.run_due()
        return _versions(veil, dataset) == [1]

    wait_for(ran, "a version")
    scheduler.stop()
    with veil.db.read() as s:
        details = s.scalars(
            select(AuditEvent.details)
            .where(AuditEvent.action == "dataset.uploaded")
            .where(AuditEvent.resource == f"dataset:{dataset}")
        ).one()
    assert details["problems"] and "topics[0]" in details["problems"][0]
    assert "1234" not in repr(details)  # a count and the setting, never the payload


def test_a_broker_killed_mid_run_leaves_no_version_and_the_retry_stores_each_message_once(
    veil: Veil, tenants: Tenants, mqtt_broker: Broker, publisher: Publisher
) -> None:
    dataset, scheduler = _opened(veil, tenants, mqtt_broker, "mqtt-killed")
    kept = next(iter(scheduler._open.values())).source
    publisher.publish("factory/press-1/telemetry", {"t": 70.5, "c": 30000})
    wait_for(lambda: kept.held >= 1, "the message held")
    # The broker dies between the message and the run: the run fails, nothing is stored.
    mqtt_broker.kill()
    wait_for(lambda: kept._failure is not None, "the source to see the broker gone")
    _due_now(veil)
    scheduler.run_due()
    view = show_source(veil, tenants.acme, dataset)
    assert view is not None
    state = view.as_json()["state"]
    assert state["failures"] == 1 and "not connected" in state["last_error"]
    assert _versions(veil, dataset) == []
    # Back on the same port: the retry stores the message from before the outage and the
    # one after, each once, as one version; the failures are cleared.
    mqtt_broker.start()
    wait_for(lambda: kept._failure is None, "the source to reconnect", timeout=120)
    after = Publisher(mqtt_broker.port)
    try:
        after.publish("factory/press-1/telemetry", {"t": 71, "c": 31000})
        wait_for(lambda: kept.held >= 2, "the second message held")
    finally:
        after.close()
    _due_now(veil)
    scheduler.run_due()
    assert _versions(veil, dataset) == [1]
    view = show_source(veil, tenants.acme, dataset)
    assert view is not None and view.as_json()["state"]["failures"] == 0
    with veil.db.read() as s:
        version = latest_version(s, dataset)
        assert version is not None
        s.expunge(version)
    assert tenants.acme.slug is not None
    frame = load_frame(veil, tenants.acme.slug, version)
    assert frame["temperature_c"].to_list() == [70.5, 71.0]
    assert next(iter(scheduler._open.values())).source is kept
    scheduler.stop()
