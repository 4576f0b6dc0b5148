"""The equipment online rate table (设备联网率) cannot isolate an enterprise, and its rate is a
ratio of released figures (sandbox.programme.tables.equipment; docs/programme.md).

The attacks of ``test_protection`` run on this table as on every protected one; here, what
is particular to it, and the same attacks against the table with its protection removed
(each must then succeed: the mutation checks that show the attacks can see a leak).
"""

from __future__ import annotations

import secrets

import pytest

from sandbox.programme import protection
from sandbox.programme.protection import Cell, Protector
from sandbox.programme.tables import BREAKDOWNS, TOTAL, TableName, build
from tests.programme.test_protection import (
    LONE,
    LONE_MONTH,
    MONTHS,
    differencing,
    enterprise,
    facts,
    lone_rows,
    truth,
)

T = TableName.EQUIPMENT


def test_the_table_has_one_block_per_month_and_its_columns() -> None:
    table = build(T, facts(), "industry", Protector(secrets.token_bytes(32)))
    assert table.columns == (
        "enterprises_reporting",
        "devices_configured",
        "devices_online",
        "online_rate",
    )
    assert sorted({r.month for r in table.rows}) == MONTHS
    assert table.protected


def test_the_rate_is_online_over_configured_as_released() -> None:
    """Never a ratio of exact sums: the released (perturbed) sums, capped at 1."""
    protect = Protector(secrets.token_bytes(32))
    for by in BREAKDOWNS:
        for row in build(T, facts(), by, protect).rows:
            configured, online = row.values["devices_configured"], row.values["devices_online"]
            rate = row.values["online_rate"]
            if configured.value is None or online.value is None:
                assert rate.suppressed
                continue
            assert rate.value == round(min(1.0, online.value / configured.value), 3)


def test_a_group_with_fewer_than_five_enterprises_online_hides_its_rate() -> None:
    """Six enterprises with devices, only one with a device online: configured is released,
    online (one enterprise's) and so the rate are suppressed, in every breakdown."""
    world = facts(lone_activity=0)
    world.equipment = {(enterprise(i), MONTHS[0]): (10.0, 0.0) for i in range(1, 13, 2)}
    world.equipment[(enterprise(1), MONTHS[0])] = (10.0, 7.0)
    for by in BREAKDOWNS:
        table = build(T, world, by, Protector(secrets.token_bytes(32)))
        for row in table.rows:
            assert row.values["devices_online"].suppressed, (by, row.group)
            assert row.values["online_rate"].suppressed
        total = next(r for r in table.rows if r.total and r.month == MONTHS[0])
        assert not total.values["devices_configured"].suppressed


def test_one_enterprise_with_most_devices_dominates_and_is_suppressed() -> None:
    world = facts(lone_activity=0)
    world.equipment = {(enterprise(i), MONTHS[0]): (2.0, 1.0) for i in range(8)}
    world.equipment[(enterprise(8), MONTHS[0])] = (500.0, 400.0)
    table = build(T, world, TOTAL, Protector(secrets.token_bytes(32)))
    row = next(r for r in table.rows if r.month == MONTHS[0])
    assert row.values["enterprises_reporting"].value is not None
    assert row.values["devices_configured"].suppressed
    assert row.values["online_rate"].suppressed


def test_the_lone_enterprise_and_its_lone_month_are_suppressed() -> None:
    table = build(T, facts(), "district", Protector(secrets.token_bytes(32)))
    rows = lone_rows(table) + [r for r in table.rows if r.month == LONE_MONTH]
    assert rows
    assert all(c.suppressed and c.value is None for r in rows for c in r.values.values())


# -- the attacks against the table without its protection (mutation checks) ---------------


class Unprotected(Protector):
    """The protection removed: every figure exact, nothing suppressed."""

    def count(self, label: str, members: set[str]) -> Cell:
        return Cell(float(len(members)))

    def total(self, label: str, contributions: dict[str, float], *, whole: bool) -> Cell:  # type: ignore[override]
        return Cell(float(sum(contributions.values())))


class Unperturbed(Protector):
    """Threshold and dominance kept, the cell-key perturbation removed."""

    def count(self, label: str, members: set[str]) -> Cell:
        shown = super().count(label, members)
        return shown if shown.suppressed else Cell(float(len(members)))

    def total(self, label: str, contributions: dict[str, float], *, whole: bool) -> Cell:  # type: ignore[override]
        shown = super().total(label, contributions, whole=whole)
        return shown if shown.suppressed else Cell(float(sum(contributions.values())))


def _exact_hits(protect: Protector) -> int:
    """How many of the lone enterprise's equipment figures the differencing attacker (the
    total minus the other rows) recovers exactly, over every breakdown and month."""
    world, hits = facts(), 0
    for by in BREAKDOWNS:
        for figure, month, estimate in differencing(build(T, world, by, protect)):
            hits += abs(estimate - truth(T, figure, month, world)) < 1e-6
    return hits


def test_without_the_perturbation_the_differencing_attack_succeeds() -> None:
    assert _exact_hits(Unperturbed(secrets.token_bytes(32))) > 0
    assert _exact_hits(Unprotected(secrets.token_bytes(32))) > 0


def test_with_the_protection_it_mostly_misses() -> None:
    hits = sum(_exact_hits(Protector(secrets.token_bytes(32))) for _ in range(40))
    tries = 40 * sum(
        1
        for by in BREAKDOWNS
        for _ in differencing(build(T, facts(), by, Protector(secrets.token_bytes(32))))
    )
    assert tries and hits / tries < 0.5


def test_without_the_threshold_the_lone_enterprise_is_shown_alone() -> None:
    """The isolation attack (read the lone enterprise's own row) against the table with the
    protection removed reads its figures; with it, nothing (above)."""
    world = facts()
    table = build(T, world, "industry", Unprotected(b"k" * 32))
    own = next(r for r in lone_rows(table) if r.month == MONTHS[0])
    assert own.values["devices_configured"].value == world.equipment[(LONE, MONTHS[0])][0]


def test_without_the_threshold_a_lone_row_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    """The threshold is what suppresses the lone rows' counts: at one, they appear (its sums
    stay suppressed by the dominance rule, which one contributor always fails)."""
    monkeypatch.setattr(protection, "MIN_ENTERPRISES", 1)
    table = build(T, facts(), "size_band", Protector(secrets.token_bytes(32)))
    assert any(not c.suppressed for r in lone_rows(table) for c in r.values.values())
