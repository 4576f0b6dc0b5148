"""What a dataset declares about itself, and what a private query asks for.

These are plain, frozen values shared by ingestion (which checks data against
a declaration), the policy engine (which checks a query against a grant) and
the DP engine (which uses declared bounds and categories, never data-derived
ones).  No framework code here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ColumnType(enum.StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    STRING = "string"
    BOOLEAN = "boolean"


class ColumnClass(enum.StrEnum):
    """How sensitive a column is; decides what it may be used for."""

    PUBLIC = "public"  # everything, including group keys
    INTERNAL = "internal"  # aggregates (SDC-checked) and DP
    CONFIDENTIAL = "confidential"  # DP only
    SECRET = "secret"  # noqa: S105 - nothing leaves; not even a filter


NUMERIC_TYPES = frozenset({ColumnType.INTEGER, ColumnType.FLOAT})


@dataclass(frozen=True)
class ColumnSpec:
    """One declared column.

    ``lower``/``upper`` are required for numeric columns (DP clamps to them);
    ``categories`` is required for public string columns (the public key set
    used for group-by).
    """

    name: str
    type: ColumnType
    column_class: ColumnClass
    lower: float | None = None
    upper: float | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False
    #: Declared share of empty values (0..1), used only by mock data; None = no nulls in mocks.
    null_rate: float | None = None

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES


@dataclass(frozen=True)
class PrivacyUnit:
    """What one protected individual is: one row, or all rows sharing an id column value."""

    id_column: str | None = None
    max_rows_per_id: int = 1

    @property
    def per_row(self) -> bool:
        return self.id_column is None


@dataclass(frozen=True)
class DatasetSchema:
    """All declared columns of a dataset, in order, and its privacy unit."""

    columns: tuple[ColumnSpec, ...]
    privacy_unit: PrivacyUnit = field(default_factory=PrivacyUnit)

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


class AggregateKind(enum.StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    QUANTILE = "quantile"  # needs ``q`` in (0, 1)
    MEDIAN = "median"
    HISTOGRAM = "histogram"  # numeric column: ``bins`` equal-width bins over its bounds;
    #                          string column with declared categories: one count per category


@dataclass(frozen=True)
class Aggregate:
    """One statistic of a query; ``column`` is None only for a row count."""

    kind: AggregateKind
    column: str | None = None
    q: float | None = None  # QUANTILE only
    bins: int | None = None  # HISTOGRAM over a numeric column only


class FilterOp(enum.StrEnum):
    """How a filter compares a column with its value (SQL's operators; ``in``: a list)."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"


#: A filter's value: a number, a string or a boolean (a tuple of them for ``in``).
FilterScalar = str | int | float | bool
FilterValue = FilterScalar | tuple[FilterScalar, ...]


@dataclass(frozen=True)
class Filter:
    """One row predicate ``column op value``; a query keeps the rows that pass them all.

    The filter runs inside the DP measurement, row by row, before any aggregate: how
    many rows pass is never released except through the query's noisy statistics.
    """

    column: str
    op: FilterOp
    value: FilterValue


@dataclass(frozen=True)
class PrivateQuery:
    """A declarative DP query: some aggregates over the rows that pass every filter of
    ``where``, optionally grouped by one or more columns.

    Group keys come from declared category sets (public string columns); any
    other allowed key column needs DP key selection, which costs delta > 0.
    """

    aggregates: tuple[Aggregate, ...]
    group_by: tuple[str, ...] = ()
    where: tuple[Filter, ...] = ()

    def columns_used(self) -> frozenset[str]:
        used = {a.column for a in self.aggregates if a.column is not None}
        return frozenset(used | set(self.group_by) | {f.column for f in self.where})
