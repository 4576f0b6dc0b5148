"""OPC UA sources through the framework's runs and scheduler: a real asyncua server, mapped,
validated and stored as encrypted versions; liveness in the source's state."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select, update

from sandbox.data.datasets import latest_version, load_frame
from sandbox.runtime.veil import Veil
from sandbox.sources.declarations import declare_source, set_mapping, show_source
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
    # A sampled read within sample_interval_s of the last sample returns nothing without
    # asking the server: let the interval pass, so this run does ask (a fast loop above
    # may have sampled just now).
    time.sleep(0.6)
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


def test_changes_of_failed_runs_are_stored_by_the_next_exactly_once(
    veil: Veil, tenants: Tenants, opcua_machine: Any, monkeypatch: Any
) -> None:
    from sandbox.sources import runs

    opcua_machine.set("Spindle.Speed", 3000)
    opcua_machine.set("Spindle.Temp", 100.0)
    dataset = line_dataset(veil, tenants.acme, "mill-at-least-once")
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
    # A mapping that names a field the source does not give: every run fails.
    wrong = {"columns": {**MAPPING["columns"], "temperature_c": {"field": "temperature"}}}
    declare_source(veil, tenants.acme, dataset, kind="opcua", config=config, interval_s=60,
                   mapping=wrong)  # fmt: skip
    scheduler = SourceScheduler(veil)

    def failures(error: str = "") -> int:
        view = show_source(veil, tenants.acme, dataset)
        assert view is not None
        state = view.as_json()["state"]
        assert error in (state["last_error"] or "")
        return int(state["failures"])

    def change(temp: float) -> None:
        held = kept.held
        opcua_machine.set("Spindle.Temp", temp)
        deadline = time.monotonic() + 20
        while kept.held == held:
            assert time.monotonic() < deadline, "the change never reached the source"
            time.sleep(0.02)

    _run_due(veil, scheduler)  # opens the source; reads the state it began with; fails
    assert failures("temperature") == 1 and _versions(veil, dataset) == []
    (source_id,) = scheduler._open
    kept = scheduler._open[source_id].source
    change(101.0)
    change(102.0)
    _run_due(veil, scheduler)  # fails again: the changes read are not stored
    assert failures("temperature") == 2 and _versions(veil, dataset) == []
    # The mapping mended; now the run fails between writing its version and committing it.
    set_mapping(veil, tenants.acme, dataset, MAPPING)
    commit = runs._commit

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the process died before its commit")

    monkeypatch.setattr(runs, "_commit", crash)
    change(103.0)
    _run_due(veil, scheduler)
    assert failures("RuntimeError") == 3 and _versions(veil, dataset) == []
    monkeypatch.setattr(runs, "_commit", commit)
    change(104.0)
    # The source stayed open across the failed runs: the next run stores every change,
    # each exactly once.
    assert scheduler._open[source_id].source is kept
    _run_due(veil, scheduler)
    assert failures() == 0 and _versions(veil, dataset) == [1]
    temperatures = _frame(veil, tenants, dataset)["temperature_c"].to_list()
    assert temperatures == [100.0, 101.0, 102.0, 103.0, 104.0]
    # What a run stored is not read again; what came since is the next version's.
    change(105.0)
    _run_due(veil, scheduler)
    assert _versions(veil, dataset) == [1, 2]
    temperatures = _frame(veil, tenants, dataset)["temperature_c"].to_list()
    assert temperatures == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0]
    assert scheduler._open[source_id].source is kept
    scheduler.stop()
