"""OPC UA sources through the framework's runs and scheduler: a real asyncua server, mapped,
validated and stored as encrypted versions; liveness in the source's state."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select, update

from sandbox.data.datasets import latest_version, load_frame
from sandbox.runtime.veil import Veil
from sandbox.sources.declarations import declare_source, show_source
from sandbox.sources.scheduler import SourceScheduler
from sandbox.store.models import DatasetVersion
from sandbox.store.source_models import SourceState
from tests.sources.conftest import Tenants, line_dataset
from tests.sources.opcua_fixtures import opcua_machine as opcua_machine  # the fixture

MAPPING = {
    "columns": {
        "machine": {"constant": "mill-1"},
        "temperature_c": {"field": "temp"},
        "cycle_time_s": {"field": "speed", "scale": 0.01},
        "plant": {"constant": "plant-a"},
        "note": {"field": "ts"},
    }
}


def _versions(veil: Veil, dataset: str) -> list[int]:
    with veil.db.read() as s:
        return list(
            s.scalars(select(DatasetVersion.version).where(DatasetVersion.dataset_id == dataset))
        )


def _run_due(veil: Veil, scheduler: SourceScheduler) -> None:
    with veil.db.transaction() as s:
        s.execute(update(SourceState).values(next_attempt_at=veil.clock()))
    scheduler.run_due()


def _frame(veil: Veil, tenants: Tenants, dataset: str) -> Any:
    with veil.db.read() as s:
        version = latest_version(s, dataset)
        assert version is not None
        s.expunge(version)
    assert tenants.acme.slug is not None
    return load_frame(veil, tenants.acme.slug, version)


def test_opcua_runs_store_versions_and_liveness(
    veil: Veil, tenants: Tenants, opcua_machine: Any
) -> None:
    opcua_machine.set("Spindle.Temp", 64.5)
    opcua_machine.set("Spindle.Speed", 3000)
    scheduler = SourceScheduler(veil)
    datasets = {}
    for mode in ("sampled", "subscribed"):
        datasets[mode] = line_dataset(veil, tenants.acme, f"mill-{mode}")
        config = {
            "endpoint": opcua_machine.endpoint,
            "fields": {
                "temp": opcua_machine.node_id("Spindle.Temp"),
                "speed": opcua_machine.node_id("Spindle.Speed"),
            },
            "device": "mill-1",
            "mode": mode,
            "sample_interval_s": 0.5,
            "publishing_interval_ms": 50,
        }
        declare_source(veil, tenants.acme, datasets[mode], kind="opcua", config=config,
                       interval_s=60, mapping=MAPPING)  # fmt: skip
    _run_due(veil, scheduler)
    for mode, dataset in datasets.items():
        assert _versions(veil, dataset) == [1], mode
        frame = _frame(veil, tenants, dataset)
        # A sample (a second one if the run's reads were 0.5 s apart); a subscription's start.
        assert set(frame["temperature_c"].to_list()) == {64.5}
        assert set(frame["cycle_time_s"].to_list()) == {30.0}
        view = show_source(veil, tenants.acme, dataset)
        assert view is not None and view.as_json()["state"]["devices"] == {"mill-1": True}
    # The subscribed source stays open between runs: changes made meanwhile are the next run's.
    opcua_machine.set("Spindle.Temp", 65.0)
    opcua_machine.set("Spindle.Temp", 65.5)
    kept = scheduler._open  # the scheduler's open sources, by source id
    deadline = time.monotonic() + 20
    while _frame(veil, tenants, datasets["subscribed"])["temperature_c"].to_list()[-1] != 65.5:
        assert time.monotonic() < deadline, "the changes never reached a version"
        _run_due(veil, scheduler)
        time.sleep(0.05)
    temperatures = _frame(veil, tenants, datasets["subscribed"])["temperature_c"].to_list()
    assert temperatures[0] == 64.5 and temperatures[-2:] == [65.0, 65.5]
    assert len(kept) == 2
    # The machine switched off: the run fails, nothing stored, the failure in the state.
    versions = _versions(veil, datasets["sampled"])
    opcua_machine.stop()
    try:
        _run_due(veil, scheduler)
        view = show_source(veil, tenants.acme, datasets["sampled"])
        assert view is not None
        state = view.as_json()["state"]
        assert state["failures"] == 1 and "endpoint" in state["last_error"]
        assert _versions(veil, datasets["sampled"]) == versions
    finally:
        opcua_machine.start()
    time.sleep(0.5)  # the sample interval since the last stored sample
    _run_due(veil, scheduler)
    assert len(_versions(veil, datasets["sampled"])) == len(versions) + 1
    scheduler.stop()
