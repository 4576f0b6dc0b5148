"""Tier 5: Veil's DP helpers, which a provider's syft function imports as ``veil_dp``.

A reviewed function that was given a confidential column may release only numbers these
helpers returned (``analytics.output_checks`` compares them exactly).  Each helper is a
one-statistic private query of ``analytics.private_query``: OpenDP 0.16's Laplace
mechanism on values clamped to the column's *declared* bounds (never bounds learned from
the data), with its null handling and privacy unit (rows of one id are truncated to
``max_rows_per_id``).  See docs/reviewed-code.md and docs/private-queries.md.

Why the helpers do not trust the frame they are given
-----------------------------------------------------
A function could hand a helper a frame it built itself: rows repeated, or every row set to
one individual's value.  The noise is sized for one unit changing its own rows, so such a
frame would break the guarantee.  The helpers therefore compute on the *trusted* frame
Veil gave the function (bound with ``bound_to`` while the function runs), and refuse a
frame that is not that frame unchanged (same index, same values in the columns used).
Rows are selected with ``where={"column": value}``, a filter that looks at each row alone.

Budget
------
``DpBudget`` holds the epsilon a run may spend.  A call that would take the total over it
raises ``BudgetExceeded`` before any data is read, and costs nothing.  A call is charged
before OpenDP reads the data and never refunded.  ``spent`` is the exact sum of the charges
rounded once (``math.fsum``), so ten calls at 0.1 fit a budget of 1.0.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed
import polars as pl

from analytics.dp_catalog import QueryError, validate_query
from analytics.private_query import ReleasedValue, run_private_query
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    DatasetSchema,
    PrivateQuery,
)

MODULE_NAME: Final = "veil_dp"
_WhereValue = str | int | float | bool


class DpError(Exception):
    """A DP helper call Veil refuses; the message says what to change, never a data value."""


class BudgetExceeded(DpError):
    """The call would take the run's epsilon over its budget; nothing was spent."""


@dataclass(frozen=True)
class DpCharge:
    """One helper call as charged: which statistic, its epsilon and OpenDP's noise scale."""

    statistic: str
    column: str | None
    epsilon: float
    noise_scale: float


class DpBudget:
    """The epsilon one run may spend through the helpers, and what they released."""

    def __init__(self, epsilon: float, schema: DatasetSchema) -> None:
        if not _positive(epsilon):
            raise ValueError("epsilon: expected a finite number greater than 0")
        self._epsilon = float(epsilon)
        self._schema = schema
        self._charges: list[DpCharge] = []
        self._released: list[float] = []

    @property
    def epsilon(self) -> float:
        return self._epsilon

    @property
    def schema(self) -> DatasetSchema:
        return self._schema

    @property
    def spent(self) -> float:
        """The exact sum of all charges, rounded once."""
        return math.fsum(c.epsilon for c in self._charges)

    @property
    def remaining(self) -> float:
        return max(self._epsilon - self.spent, 0.0)

    @property
    def charges(self) -> tuple[DpCharge, ...]:
        return tuple(self._charges)

    @property
    def released(self) -> tuple[float, ...]:
        """Every value the helpers returned, in order (``output_checks``'s ``dp_values``)."""
        return tuple(self._released)

    def _check(self, epsilon: float) -> None:
        """Raise BudgetExceeded if ``epsilon`` more would go over the budget."""
        total = math.fsum([*(c.epsilon for c in self._charges), epsilon])
        if total > self._epsilon:
            raise BudgetExceeded(
                f"epsilon {epsilon:g} is more than the {self.remaining:g} left of this run's "
                f"budget of {self._epsilon:g}; ask for less"
            )

    def _charge(self, charge: DpCharge) -> int:
        self._charges.append(charge)
        return len(self._charges) - 1

    def _settle(self, index: int, noise_scale: float) -> None:
        charge = self._charges[index]
        self._charges[index] = DpCharge(
            charge.statistic, charge.column, charge.epsilon, noise_scale
        )

    def _release(self, value: float) -> float:
        self._released.append(value)
        return value


def _positive(epsilon: object) -> bool:
    number = isinstance(epsilon, int | float) and not isinstance(epsilon, bool)
    return number and math.isfinite(float(epsilon)) and float(epsilon) > 0  # type: ignore[arg-type]


class DpHelpers:
    """``count``, ``sum`` and ``mean`` on ``source`` (the frame Veil gave the function).

    ``frame`` must be ``source`` as the function received it (see the module docstring);
    ``where`` keeps the rows whose columns equal the given values.  ``shadow`` is the mock
    as PySyft holds it: PySyft runs a function on the private data and then on the mock,
    and calls on the mock's frame (told apart by its index) compute on the mock, free and
    not recorded, as that result is never released.
    """

    def __init__(
        self, budget: DpBudget, source: pd.DataFrame, shadow: pd.DataFrame | None = None
    ) -> None:
        self._budget = budget
        self._source = source
        self._shadow = shadow

    def count(
        self, frame: object, *, epsilon: float, where: Mapping[str, _WhereValue] | None = None
    ) -> float:
        """A DP count of rows."""
        return self._run(frame, Aggregate(AggregateKind.COUNT), epsilon, where)

    def sum(
        self,
        frame: object,
        column: str,
        *,
        epsilon: float,
        where: Mapping[str, _WhereValue] | None = None,
    ) -> float:
        """A DP sum of ``column``, its values clamped to the declared bounds."""
        return self._run(frame, Aggregate(AggregateKind.SUM, _name(column)), epsilon, where)

    def mean(
        self,
        frame: object,
        column: str,
        *,
        epsilon: float,
        where: Mapping[str, _WhereValue] | None = None,
    ) -> float:
        """A DP mean of ``column``: a noisy clamped sum over a noisy count, within the bounds."""
        return self._run(frame, Aggregate(AggregateKind.MEAN, _name(column)), epsilon, where)

    def _run(
        self,
        frame: object,
        aggregate: Aggregate,
        epsilon: float,
        where: Mapping[str, _WhereValue] | None,
    ) -> float:
        if not _positive(epsilon):
            raise DpError("epsilon: expected a finite number greater than 0, e.g. epsilon=0.1")
        conditions = self._conditions(where)
        query = PrivateQuery((aggregate,))
        try:
            validate_query(self._budget.schema, query)
        except QueryError as error:
            raise DpError(str(error)) from None
        needed = self._needed(aggregate, conditions)
        trusted, private = self._trusted(frame, needed)
        if private:
            self._budget._check(float(epsilon))
        rows = _rows(trusted, needed)
        for name, wanted in conditions.items():
            rows = rows.filter(pl.col(name) == wanted)
        if not private:
            return _value(rows, self._budget.schema, query, float(epsilon))
        # Charged before OpenDP reads the rows, and never refunded (see the module docstring).
        charge = DpCharge(str(aggregate.kind), aggregate.column, float(epsilon), math.nan)
        index = self._budget._charge(charge)
        released = _released(rows, self._budget.schema, query, float(epsilon))
        self._budget._settle(index, released.noise_scale)
        return self._budget._release(float(released.value))

    def _conditions(self, where: Mapping[str, _WhereValue] | None) -> dict[str, _WhereValue]:
        if where is None:
            return {}
        if not isinstance(where, Mapping):
            raise DpError('where: expected a dict of column: value, e.g. {"machine": "press-1"}')
        conditions: dict[str, _WhereValue] = {}
        for name, value in where.items():
            spec = self._declared(_name(name))
            if not isinstance(value, str | int | float | bool):
                raise DpError(f"where[{name!r}]: expected a string, number or boolean")
            if spec.column_class is ColumnClass.SECRET:
                raise DpError(f"where: column {name!r} is secret and cannot filter")
            conditions[name] = value
        return conditions

    def _declared(self, name: str) -> ColumnSpec:
        try:
            return self._budget.schema.column(name)
        except KeyError:
            raise DpError(f"where: column {name!r} is not declared in the dataset") from None

    def _needed(self, aggregate: Aggregate, conditions: Mapping[str, object]) -> list[str]:
        """The source columns this call reads; all must have been given to the function."""
        names = [*conditions]
        if aggregate.column is not None:
            names.append(aggregate.column)
        unit = self._budget.schema.privacy_unit.id_column
        if unit is not None:
            names.append(unit)
        needed = list(dict.fromkeys(names))
        for name in needed:
            if name not in self._source.columns:
                what = "the privacy unit's id column" if name == unit else "column"
                raise DpError(
                    f"{what} {name!r} was not given to this function; name it in your code "
                    "so that it is in the granted frame"
                )
        return needed

    def _trusted(self, frame: object, needed: list[str]) -> tuple[pd.DataFrame, bool]:
        """The trusted frame ``frame`` stands for, and whether it is the private one.

        Anything but a frame the function received, unchanged in ``needed``, is refused.
        """
        if isinstance(frame, pd.DataFrame):
            for trusted, private in ((self._source, True), (self._shadow, False)):
                if trusted is not None and _unchanged(frame, trusted, needed):
                    return trusted, private
        raise DpError(
            "pass the data frame your function received, unchanged (not a filtered, sorted "
            'or modified copy); select rows with where={"column": value}'
        )


def _rows(trusted: pd.DataFrame, needed: list[str]) -> pl.DataFrame:
    """The columns a call reads, as polars; a plain count reads none but keeps the rows."""
    if not needed:
        return pl.select(pl.repeat(True, len(trusted), eager=False).alias("#row"))
    return pl.from_pandas(trusted[needed].reset_index(drop=True))


def _unchanged(frame: pd.DataFrame, trusted: pd.DataFrame, needed: list[str]) -> bool:
    if not frame.index.equals(trusted.index):
        return False
    for name in needed:
        if name not in trusted.columns:
            return False
        if name in frame.columns and not frame[name].equals(trusted[name]):
            return False
    return True


def _released(
    rows: pl.DataFrame, schema: DatasetSchema, query: PrivateQuery, epsilon: float
) -> ReleasedValue:
    try:
        release = run_private_query(rows, schema, query, epsilon)
    except QueryError as error:
        raise DpError(str(error)) from None
    return release.rows[0].values[0]


def _value(rows: pl.DataFrame, schema: DatasetSchema, query: PrivateQuery, epsilon: float) -> float:
    return float(_released(rows, schema, query, epsilon).value)


def _name(column: object) -> str:
    if not isinstance(column, str):
        raise DpError("column: expected a column name (a string)")
    return column


# ---------------------------------------------------------------- the veil_dp module


class _Installed:
    """The budget of the installed ``veil_dp`` and the frame it computes on, while bound."""

    def __init__(self, budget: DpBudget) -> None:
        self.budget = budget
        self.source: pd.DataFrame | None = None
        self.shadow: pd.DataFrame | None = None

    def helpers(self) -> DpHelpers:
        if self.source is None:
            raise DpError("veil_dp works only while Veil runs your function on a dataset")
        return DpHelpers(self.budget, self.source, self.shadow)


_installed: _Installed | None = None


def install(budget: DpBudget) -> None:
    """Register ``veil_dp`` in ``sys.modules``, charging ``budget``; replaces an earlier one.

    The module exposes only ``count``, ``sum``, ``mean``, ``DpError`` and
    ``BudgetExceeded``; the budget is reachable only through dunder attributes, which
    reviewed code may not use.  Its helpers work while a frame is bound (``bound_to``).
    """
    global _installed
    state = _Installed(budget)

    def count(
        frame: object, *, epsilon: float, where: Mapping[str, _WhereValue] | None = None
    ) -> float:
        """A DP count of rows of the frame your function received (see Veil's docs)."""
        return state.helpers().count(frame, epsilon=epsilon, where=where)

    def sum_(
        frame: object,
        column: str,
        *,
        epsilon: float,
        where: Mapping[str, _WhereValue] | None = None,
    ) -> float:
        """A DP sum of a column, clamped to its declared bounds."""
        return state.helpers().sum(frame, column, epsilon=epsilon, where=where)

    def mean(
        frame: object,
        column: str,
        *,
        epsilon: float,
        where: Mapping[str, _WhereValue] | None = None,
    ) -> float:
        """A DP mean of a column, clamped to its declared bounds."""
        return state.helpers().mean(frame, column, epsilon=epsilon, where=where)

    sum_.__name__ = "sum"
    module = types.ModuleType(MODULE_NAME, "Veil's differentially private helpers.")
    module.__dict__.update(
        count=count, sum=sum_, mean=mean, DpError=DpError, BudgetExceeded=BudgetExceeded
    )
    sys.modules[MODULE_NAME] = module
    _installed = state


def uninstall() -> None:
    """Remove ``veil_dp`` from ``sys.modules`` (a later ``import veil_dp`` fails)."""
    global _installed
    _installed = None
    sys.modules.pop(MODULE_NAME, None)


def installed_budget() -> DpBudget | None:
    """The budget of the installed ``veil_dp``, if any."""
    return None if _installed is None else _installed.budget


@contextmanager
def bound_to(source: pd.DataFrame, shadow: pd.DataFrame | None = None) -> Iterator[None]:
    """While inside, the installed helpers compute on ``source`` (no-op when none is installed).

    ``analytics.syft_code`` binds the very frames it uploads: the private data, and the
    mock (``shadow``, with an index of its own) that PySyft also runs the function on.
    """
    state = _installed
    if state is None:
        yield
        return
    previous = state.source, state.shadow
    state.source, state.shadow = source, shadow
    try:
        yield
    finally:
        state.source, state.shadow = previous
