"""Tier 5: Veil's DP helpers, which a provider's syft function imports as ``veil_dp``.

A reviewed function that was given a confidential column may release only numbers these
helpers returned (``analytics.output_checks`` compares them exactly).  Each helper is a
one-statistic private query of ``analytics.private_query``: OpenDP 0.16's Laplace
mechanism on values clamped to the column's *declared* bounds (never bounds learned from
the data), with its null handling and privacy unit (rows of one id are truncated to
``max_rows_per_id``).  See docs/reviewed-code.md and docs/private-queries.md.

Who computes, who records
-------------------------
Nothing the provider's process holds can be trusted to say what was produced by a DP
mechanism: its code can reach any object in its own memory.  So the helpers are split:

* ``DpService`` is the **trusted side**, in the job worker (outside the sandbox): it holds
  its own copy of the granted columns and the run's ``DpBudget``, computes each call with
  OpenDP, charges the budget, and records every value it released.  The output checks use
  that record; the provider's process never holds it.
* ``DpHelpers`` is what the provider's function calls, inside the sandbox.  A call on the
  private frame becomes a ``DpCall`` sent to the trusted side (``ask``), whose answer it
  returns.  Whatever the process sends, the trusted side computes on its own rows, with its
  own budget: a forged request is just another charged DP call.

PySyft runs an approved function on the private data and then on the mock; calls during
the mock run (told apart by the mock's index) compute on the mock in the process, free,
unrecorded, and their output is never released.

The frame argument
------------------
A call names the frame the function received, unchanged (same index, same values in the
columns used); rows are selected with ``where={"column": value}``, a filter that looks at
each row alone.  The in-process helpers refuse any other frame, so that a function cannot
believe it computed on a modified copy; the trusted side never looks at a frame from the
process at all.

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
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed
import polars as pl

from analytics.dp_catalog import QueryError, validate_query
from analytics.private_query import ReleasedValue, run_private_query
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    DatasetSchema,
    PrivateQuery,
)
from i18n import Msg

MODULE_NAME: Final = "veil_dp"
#: The statistics the helpers compute.
STATISTICS: Final = {
    "count": AggregateKind.COUNT,
    "sum": AggregateKind.SUM,
    "mean": AggregateKind.MEAN,
}
#: Most conditions in one ``where``.
MAX_CONDITIONS: Final = 16
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
                Msg(
                    "epsilon {epsilon} is more than the {remaining} left of this "
                    "run's budget of {epsilon2}; ask for less",
                    epsilon=f"{epsilon:g}",
                    remaining=f"{self.remaining:g}",
                    epsilon2=f"{self._epsilon:g}",
                )
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


# ---------------------------------------------------------------- one call


@dataclass(frozen=True)
class DpCall:
    """One helper call: a statistic of a column (None for a count), its epsilon, and the
    conditions that select rows.  What travels from the sandbox to the trusted side."""

    statistic: str
    column: str | None
    epsilon: float
    where: tuple[tuple[str, _WhereValue], ...] = ()

    @classmethod
    def of(
        cls,
        statistic: str,
        column: object,
        epsilon: object,
        where: object,
    ) -> DpCall:
        """A checked call (any input: it may come from the sandbox); DpError if malformed."""
        if statistic not in STATISTICS:
            raise DpError(
                Msg(
                    "statistic: expected one of {statistics}",
                    statistics=", ".join(STATISTICS),
                )
            )
        if statistic == "count":
            if column is not None:
                raise DpError(Msg("a count takes no column"))
        elif not isinstance(column, str):
            raise DpError(Msg("column: expected a column name (a string)"))
        if not _positive(epsilon):
            raise DpError(Msg("epsilon: expected a finite number greater than 0, e.g. epsilon=0.1"))
        return cls(statistic, column, float(epsilon), _conditions(where))  # type: ignore[arg-type]

    def message(self) -> dict[str, Any]:
        """The call as the JSON message the sandbox sends."""
        return {
            "type": "request",
            "kind": "dp",
            "statistic": self.statistic,
            "column": self.column,
            "epsilon": self.epsilon,
            "where": [list(condition) for condition in self.where],
        }

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> DpCall:
        """The call in a message from the sandbox (untrusted); DpError if malformed."""
        if message.get("kind") != "dp":
            raise DpError(Msg("Veil answers only DP helper calls here"))
        where = message.get("where") or []
        if not isinstance(where, list) or not all(
            isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) for c in where
        ):
            raise DpError(
                Msg('where: expected a dict of column: value, e.g. {"machine": "press-1"}')
            )
        statistic = message.get("statistic")
        return cls.of(
            statistic if isinstance(statistic, str) else "",
            message.get("column"),
            message.get("epsilon"),
            {name: value for name, value in where},
        )


def _conditions(where: object) -> tuple[tuple[str, _WhereValue], ...]:
    if where is None:
        return ()
    if not isinstance(where, Mapping):
        raise DpError(Msg('where: expected a dict of column: value, e.g. {"machine": "press-1"}'))
    if len(where) > MAX_CONDITIONS:
        raise DpError(
            Msg(
                "where: at most {max_conditions} conditions",
                max_conditions=MAX_CONDITIONS,
            )
        )
    conditions = []
    for name, value in where.items():
        if not isinstance(name, str):
            raise DpError(Msg("where: expected column names (strings) as keys"))
        if not isinstance(value, str | int | float | bool):
            raise DpError(
                Msg(
                    "where[{name}]: expected a string, number or boolean",
                    name=repr(name),
                )
            )
        conditions.append((name, value))
    return tuple(conditions)


# ---------------------------------------------------------------- the trusted side


class DpService:
    """Computes DP calls on trusted rows, charges the run's budget, records what it released.

    Lives outside the sandbox (the job worker); ``answer`` takes a message from the sandbox.
    ``rows`` are the granted columns of the private data (the privacy unit's id column
    included when the schema has one and the grant gives it).
    """

    def __init__(self, budget: DpBudget, rows: pl.DataFrame) -> None:
        self.budget = budget
        self._rows = rows
        self._lock = threading.Lock()
        #: Every call answered, with the value released, in order.
        self.calls: list[tuple[DpCall, float]] = []

    def compute(self, call: DpCall) -> float:
        """The DP value of ``call``; DpError (or BudgetExceeded) if refused, at no cost."""
        with self._lock:
            query, rows = _prepare(self.budget.schema, self._rows, call)
            self.budget._check(call.epsilon)
            # Charged before OpenDP reads the rows, and never refunded.
            charge = DpCharge(call.statistic, call.column, call.epsilon, math.nan)
            index = self.budget._charge(charge)
            released = _released(rows, self.budget.schema, query, call.epsilon)
            self.budget._settle(index, released.noise_scale)
            value = self.budget._release(float(released.value))
            self.calls.append((call, value))
            return value

    def answer(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """The answer to a message from the sandbox: ``{"value": …}`` or the refusal."""
        try:
            return {"value": self.compute(DpCall.from_message(message))}
        except DpError as error:
            return {"error": type(error).__name__, "message": str(error)}


def _prepare(
    schema: DatasetSchema, source: pl.DataFrame, call: DpCall
) -> tuple[PrivateQuery, pl.DataFrame]:
    """The one-statistic query of ``call`` and the rows it reads (``where`` applied)."""
    kind = STATISTICS[call.statistic]
    query = PrivateQuery((Aggregate(kind, call.column),))
    try:
        validate_query(schema, query)
    except QueryError as error:
        raise DpError(error.args[0] if error.args else str(error)) from None
    for name, _ in call.where:
        try:
            column_class = schema.column(name).column_class
        except KeyError:
            raise DpError(
                Msg(
                    "where: column {name} is not declared in the dataset",
                    name=repr(name),
                )
            ) from None
        if column_class is ColumnClass.SECRET:
            raise DpError(
                Msg(
                    "where: column {name} is secret and cannot filter",
                    name=repr(name),
                )
            )
    needed = _needed(schema, source, call)
    rows = _rows(source, needed)
    for name, wanted in call.where:
        rows = rows.filter(pl.col(name) == wanted)
    return query, rows


def _needed(schema: DatasetSchema, source: pl.DataFrame, call: DpCall) -> list[str]:
    """The source columns ``call`` reads; all must have been given to the function."""
    names = [name for name, _ in call.where]
    if call.column is not None:
        names.append(call.column)
    unit = schema.privacy_unit.id_column
    if unit is not None:
        names.append(unit)
    needed = list(dict.fromkeys(names))
    for name in needed:
        if name not in source.columns:
            what = Msg("the privacy unit's id column") if name == unit else Msg("column")
            raise DpError(
                Msg(
                    "{what} {name} was not given to this function; name it in your "
                    "code so that it is in the granted frame",
                    what=what,
                    name=repr(name),
                )
            )
    return needed


def _rows(source: pl.DataFrame, needed: list[str]) -> pl.DataFrame:
    """The columns a call reads; a plain count reads none but keeps the rows."""
    if not needed:
        return pl.select(pl.repeat(True, source.height, eager=False).alias("#row"))
    return source.select(needed)


def _released(
    rows: pl.DataFrame, schema: DatasetSchema, query: PrivateQuery, epsilon: float
) -> ReleasedValue:
    try:
        release = run_private_query(rows, schema, query, epsilon)
    except QueryError as error:
        raise DpError(error.args[0] if error.args else str(error)) from None
    return release.rows[0].values[0]


# ---------------------------------------------------------------- inside the sandbox

#: Sends a call to the trusted side and returns its value (raising its refusal).
Ask = Callable[[DpCall], float]


class DpHelpers:
    """``count``, ``sum`` and ``mean`` as the provider's function calls them.

    A call on ``source`` (the frame the function received) goes to ``ask`` — the trusted
    side; a call on ``shadow`` (the mock as PySyft holds it for its second run) is computed
    here on the mock, free and unrecorded.  Any other frame is refused.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        source: pd.DataFrame,
        ask: Ask,
        shadow: pd.DataFrame | None = None,
    ) -> None:
        self._schema = schema
        self._source = source
        self._shadow = shadow
        self._ask = ask

    def count(
        self, frame: object, *, epsilon: float, where: Mapping[str, _WhereValue] | None = None
    ) -> float:
        """A DP count of rows."""
        return self._run(frame, DpCall.of("count", None, epsilon, where))

    def sum(
        self,
        frame: object,
        column: str,
        *,
        epsilon: float,
        where: Mapping[str, _WhereValue] | None = None,
    ) -> float:
        """A DP sum of ``column``, its values clamped to the declared bounds."""
        return self._run(frame, DpCall.of("sum", column, epsilon, where))

    def mean(
        self,
        frame: object,
        column: str,
        *,
        epsilon: float,
        where: Mapping[str, _WhereValue] | None = None,
    ) -> float:
        """A DP mean of ``column``: a noisy clamped sum over a noisy count, within the bounds."""
        return self._run(frame, DpCall.of("mean", column, epsilon, where))

    def _run(self, frame: object, call: DpCall) -> float:
        names = [*(name for name, _ in call.where), *([call.column] if call.column else [])]
        if isinstance(frame, pd.DataFrame):
            if _unchanged(frame, self._source, names):
                return self._ask(call)
            if self._shadow is not None and _unchanged(frame, self._shadow, names):
                mock = pl.from_pandas(self._shadow.reset_index(drop=True))
                query, rows = _prepare(self._schema, mock, call)
                return float(_released(rows, self._schema, query, call.epsilon).value)
        raise DpError(
            Msg(
                "pass the data frame your function received, unchanged (not a "
                "filtered, sorted or modified copy); select rows with "
                'where={"column": value}'
            )
        )


def _unchanged(frame: pd.DataFrame, trusted: pd.DataFrame, names: list[str]) -> bool:
    if not frame.index.equals(trusted.index):
        return False
    return all(
        name not in frame.columns or (name in trusted.columns and frame[name].equals(trusted[name]))
        for name in names
    )


def local(budget: DpBudget, rows: pl.DataFrame) -> Ask:
    """An ``ask`` computing in this process: for the reviewer's run on the mock only,
    where nothing is private and nothing is released."""
    return DpService(budget, rows).compute


# ---------------------------------------------------------------- the veil_dp module


class _Installed:
    """The installed ``veil_dp``'s schema and ``ask``, and the frames it works on, while bound."""

    def __init__(self, schema: DatasetSchema, ask: Ask) -> None:
        self.schema = schema
        self.ask = ask
        self.source: pd.DataFrame | None = None
        self.shadow: pd.DataFrame | None = None

    def helpers(self) -> DpHelpers:
        if self.source is None:
            raise DpError(Msg("veil_dp works only while Veil runs your function on a dataset"))
        return DpHelpers(self.schema, self.source, self.ask, self.shadow)


_installed: _Installed | None = None


def install(schema: DatasetSchema, ask: Ask) -> None:
    """Register ``veil_dp`` in ``sys.modules``, its private calls answered by ``ask``.

    The module exposes only ``count``, ``sum``, ``mean``, ``DpError`` and
    ``BudgetExceeded``.  Its helpers work while a frame is bound (``bound_to``).
    """
    global _installed
    state = _Installed(schema, ask)

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


@contextmanager
def bound_to(source: pd.DataFrame, shadow: pd.DataFrame | None = None) -> Iterator[None]:
    """While inside, the installed helpers work on ``source`` (no-op when none is installed).

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
