"""The equipment online rate's record on the core that runs the sources
(``sandbox.data.liveness``, recorded by ``sandbox.sources.runs``): per day, each device a
machine source watched and whether it answered at least one read; a read that fails is one
no device answered. A fake kind, registered for the test, plays the machines."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType, SimpleNamespace
from typing import Any

import polars as pl
import pytest
from sqlalchemy import select

from sandbox.data.liveness import DayCount, daily_counts
from sandbox.programme.service import load_facts
from sandbox.runtime.veil import Veil
from sandbox.sources import kinds, runs
from sandbox.sources.base import Batch, SourceError
from sandbox.sources.declarations import declare_source
from sandbox.store.models import DatasetVersion
from sandbox.store.source_models import DeviceDay, LivenessDay
from tests.sources.conftest import Tenants, line_dataset

MAPPING = {
    "columns": {
        "machine": {"field": "machine"},
        "temperature_c": {"field": "t"},
        "cycle_time_s": {"field": "c"},
        "plant": {"constant": "plant-a"},
    }
}


@dataclass
class Machines:
    """What the fake machines answer: per device, whether it is on; ``down``: the whole
    source unreachable (its reads raise ``SourceError``)."""

    on: dict[str, bool] = field(default_factory=dict)
    down: bool = False
    reads: int = 0
    #: Devices that answer the first read of a run only (a machine switched off mid-run).
    first_only: set[str] = field(default_factory=set)


class FakeSource:
    def __init__(self, machines: Machines) -> None:
        self.machines = machines

    def read(self, cursor: str | None) -> Batch:
        self.machines.reads += 1
        if self.machines.down:
            raise SourceError("the machines' endpoint did not answer")
        answering = [d for d, on in self.machines.on.items() if on]
        rows = pl.DataFrame(
            {"machine": answering, "t": [50.0] * len(answering), "c": [30.0] * len(answering)},
            schema={"machine": pl.String, "t": pl.Float64, "c": pl.Float64},
        )
        # One batch with the answering machines' rows, then an empty one: the run ends.
        position = int(cursor or 0)
        if position % 2:
            rows = rows.clear()
        answered = {
            d: on and not (position % 2 and d in self.machines.first_only)
            for d, on in self.machines.on.items()
        }
        return Batch(rows, str(position + 1), answered)

    def close(self) -> None:
        pass


@pytest.fixture
def machines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Machines]:
    plant = Machines({"press-1": True, "press-2": False, "mill-1": True})

    def open_source(config: Mapping[str, Any], secrets: Mapping[str, str]) -> FakeSource:
        return FakeSource(plant)

    fake = SimpleNamespace(
        check_config=lambda config: [], continuous=lambda config: False, open_source=open_source
    )
    monkeypatch.setattr(kinds, "KINDS", MappingProxyType({**kinds.KINDS, "fake": fake}))
    yield plant


def at(veil: Veil, moment: datetime) -> None:
    veil.clock = lambda: moment  # type: ignore[method-assign]


DAY1 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def _declare(veil: Veil, tenants: Tenants) -> str:
    dataset = line_dataset(veil, tenants.acme)
    declare_source(
        veil, tenants.acme, dataset, kind="fake", config={}, interval_s=60, mapping=MAPPING
    )
    return dataset


def test_a_device_is_online_for_the_day_if_it_answered_one_read(
    veil: Veil, tenants: Tenants, machines: Machines
) -> None:
    at(veil, DAY1)
    dataset = _declare(veil, tenants)
    first = runs.run_now(veil, tenants.acme, dataset)
    assert first.error is None and first.rows == 2
    machines.on = {"press-1": False, "press-2": False, "mill-1": True}
    at(veil, DAY1 + timedelta(hours=6))
    assert runs.run_now(veil, tenants.acme, dataset).error is None
    with veil.db.read() as s:
        counts = daily_counts(s, enterprise_id=tenants.acme.id)
        rows = {d.device: d for d in s.scalars(select(DeviceDay))}
    # press-1 answered the morning's reads: online for the day; press-2 never did.
    assert counts == [DayCount(tenants.acme.id, "2026-11-02", 3, 2)]
    assert (rows["press-1"].answered, rows["press-2"].answered) == (True, False)
    assert rows["mill-1"].runs == rows["mill-1"].answered_runs == 2  # a run, a record

    # The next day press-1 is off all day.
    at(veil, DAY2)
    assert runs.run_now(veil, tenants.acme, dataset).error is None
    with veil.db.read() as s:
        assert daily_counts(s, enterprise_id=tenants.acme.id)[-1] == DayCount(
            tenants.acme.id, "2026-11-03", 3, 1
        )
        # A day still under way is left out when asked for finished days only.
        assert [c.day for c in daily_counts(s, before=DAY2.date())] == ["2026-11-02"]


def test_an_unreachable_source_counts_its_devices_configured_and_not_online(
    veil: Veil, tenants: Tenants, machines: Machines
) -> None:
    at(veil, DAY1)
    dataset = _declare(veil, tenants)
    assert runs.run_now(veil, tenants.acme, dataset).error is None
    machines.down = True
    at(veil, DAY2)
    failed = runs.run_now(veil, tenants.acme, dataset)
    assert failed.error is not None and failed.version is None
    with veil.db.read() as s:
        assert daily_counts(s, enterprise_id=tenants.acme.id)[-1] == DayCount(
            tenants.acme.id, "2026-11-03", 3, 0
        )


def test_liveness_is_recorded_even_when_the_rows_fail_validation(
    veil: Veil, tenants: Tenants, machines: Machines
) -> None:
    """The devices answered: they are online, whatever becomes of the rows."""
    at(veil, DAY1)
    machines.on = {"lathe-9": True}  # not a declared machine: the rows fail validation
    dataset = _declare(veil, tenants)
    outcome = runs.run_now(veil, tenants.acme, dataset)
    assert outcome.error is not None and outcome.version is None
    with veil.db.read() as s:
        assert s.scalars(select(DatasetVersion)).first() is None
        assert daily_counts(s) == [DayCount(tenants.acme.id, "2026-11-02", 1, 1)]


def test_a_source_never_read_and_a_source_without_devices_count_nothing(
    veil: Veil, tenants: Tenants, machines: Machines
) -> None:
    at(veil, DAY1)
    machines.down = True
    dataset = _declare(veil, tenants)
    assert runs.run_now(veil, tenants.acme, dataset).error is not None
    machines.down, machines.on = False, {}
    assert runs.run_now(veil, tenants.acme, dataset).error is None
    with veil.db.read() as s:
        assert daily_counts(s) == []
        assert daily_counts(s, since=date(2026, 1, 1)) == []


def test_the_programme_counts_hosted_enterprises_here_and_nodes_as_reported(
    veil: Veil, tenants: Tenants, machines: Machines
) -> None:
    """A hosted enterprise's sources run on the control plane: its month is the mean of its
    finished days counted here; a day a node reported (``liveness_days``) is taken as is."""
    at(veil, DAY1)
    dataset = _declare(veil, tenants)
    assert runs.run_now(veil, tenants.acme, dataset).error is None  # 3 configured, 2 online
    machines.on = {"press-1": False, "press-2": False, "mill-1": True}
    at(veil, DAY2)
    assert runs.run_now(veil, tenants.acme, dataset).error is None  # 3 configured, 1 online
    with veil.db.transaction() as s:
        s.add(
            LivenessDay(
                enterprise_id=tenants.globex.id,
                day="2026-11-02",
                configured=8,
                online=6,
                node_id="node_x",
            )
        )
    with veil.db.read() as s:
        during = load_facts(s, DAY2).equipment  # the second day still under way
        after = load_facts(s, DAY2 + timedelta(days=1)).equipment
    assert during[(tenants.acme.id, "2026-11")] == (3.0, 2.0)
    assert after[(tenants.acme.id, "2026-11")] == (3.0, 1.5)
    assert after[(tenants.globex.id, "2026-11")] == (8.0, 6.0)


def test_a_device_that_answered_one_read_of_a_run_answered_the_run(
    veil: Veil, tenants: Tenants, machines: Machines
) -> None:
    at(veil, DAY1)
    machines.first_only = {"mill-1"}
    dataset = _declare(veil, tenants)
    assert runs.run_now(veil, tenants.acme, dataset).error is None
    with veil.db.read() as s:
        assert daily_counts(s) == [DayCount(tenants.acme.id, "2026-11-02", 3, 2)]
