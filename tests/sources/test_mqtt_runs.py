"""MQTT sources through the framework's runs and scheduler: a real amqtt broker, mapped,
validated and stored as encrypted versions; liveness in the source's state."""

from __future__ import annotations

from sqlalchemy import select, update

from sandbox.data.datasets import latest_version, load_frame
from sandbox.runtime.veil import Veil
from sandbox.sources.declarations import declare_source, show_source
from sandbox.sources.scheduler import SourceScheduler
from sandbox.store.models import DatasetVersion
from sandbox.store.source_models import SourceState
from tests.sources.conftest import Tenants, line_dataset
from tests.sources.mqtt_broker import Broker, Publisher, wait_for
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
    scheduler.stop()
