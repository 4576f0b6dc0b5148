"""The equipment online rate from a real OPC UA machine (``asyncua``'s server on loopback):
the days a source's runs reach it count its device online; a day it is switched off, its
device counts configured and not online (sandbox.data.liveness; docs/sources.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.data.liveness import DayCount, daily_counts
from sandbox.runtime.veil import Veil
from sandbox.sources import runs
from sandbox.sources.declarations import declare_source
from tests.sources.conftest import Tenants, line_dataset
from tests.sources.opcua_fixtures import opcua_machine as opcua_machine  # the fixture
from tests.sources.test_opcua_runs import MAPPING

DAY1 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def test_an_opcua_machines_days_online_and_off(
    veil: Veil, tenants: Tenants, opcua_machine: Any
) -> None:
    opcua_machine.set("Spindle.Temp", 64.5)
    opcua_machine.set("Spindle.Speed", 3000)
    dataset = line_dataset(veil, tenants.acme, "mill-liveness")
    config = {
        "endpoint": opcua_machine.endpoint,
        "fields": {
            "temp": opcua_machine.node_id("Spindle.Temp"),
            "speed": opcua_machine.node_id("Spindle.Speed"),
        },
        "device": "mill-1",
        "mode": "sampled",
        "sample_interval_s": 0.1,
    }
    veil.clock = lambda: DAY1  # type: ignore[method-assign]
    declare_source(veil, tenants.acme, dataset, kind="opcua", config=config, interval_s=60,
                   mapping=MAPPING)  # fmt: skip
    assert runs.run_now(veil, tenants.acme, dataset).error is None
    opcua_machine.stop()
    try:
        veil.clock = lambda: DAY1 + timedelta(days=1)  # type: ignore[method-assign]
        assert runs.run_now(veil, tenants.acme, dataset).error is not None
    finally:
        opcua_machine.start()
    with veil.db.read() as s:
        assert daily_counts(s, enterprise_id=tenants.acme.id) == [
            DayCount(tenants.acme.id, "2026-11-02", 1, 1),
            DayCount(tenants.acme.id, "2026-11-03", 1, 0),
        ]
