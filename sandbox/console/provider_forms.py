"""What the provider's pages show and read: catalog views, the query form, accuracy texts.

The query form is plain HTML fields (a few rows of statistics, group-by boxes, ε and
δ) read as strings, so that whatever the provider typed comes back unchanged when the
page is shown again with an error.  :meth:`QueryForm.submission` turns it into the
same :class:`sandbox.jobs.submit.JobSubmission` the API builds from its JSON body; the
service checks everything else (grant, purpose, budget, the query's shape).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from markupsafe import Markup
from starlette.datastructures import FormData

from analytics.schema import AggregateKind, ColumnClass, ColumnSpec, ColumnType
from i18n import N_, Msg
from i18n.catalog import gettext, translate
from policies.errors import InvalidRequest
from policies.grants import Grant
from policies.tiers import MOCK_TIER, PRIVATE_QUERY_TIER, Tier
from sandbox.api.schemas import ID_LENGTH, PURPOSE_LENGTH, JobOut, ReleasedValueOut
from sandbox.console.charts import day_bars
from sandbox.console.labels import LABELS
from sandbox.console.render import number
from sandbox.data.catalog import CatalogEntry
from sandbox.data.classification import ColumnClassification, columns_of
from sandbox.data.datasets import schema_from_json
from sandbox.jobs.submit import JobSubmission

#: Rows of statistics the form offers (the query document allows more; the API takes them).
AGGREGATE_ROWS = 3
#: Kinds offered in each row, with a word for people (translated when shown); "" leaves
#: the row out.
KINDS: tuple[tuple[str, str], ...] = (
    ("", N_("none")),
    *((str(k), LABELS.get(str(k), str(k))) for k in AggregateKind),
)
_NEEDS_COLUMN = frozenset(str(k) for k in AggregateKind if k != AggregateKind.COUNT)
_KEY_TYPES = frozenset({ColumnType.STRING, ColumnType.INTEGER, ColumnType.BOOLEAN})
#: The tiers as a provider's pages name them (policies.tiers has the enterprise's labels).
TIER_NAMES: dict[int, str] = {
    Tier.CATALOG: N_("catalog"),
    Tier.MOCK: N_("mock data"),
    Tier.AGGREGATE: N_("aggregate tables"),
    Tier.PRIVATE_QUERY: N_("private query"),
    Tier.TRAINING: N_("private training"),
    Tier.CODE: N_("reviewed code"),
}


# ---------------------------------------------------------------- the catalog


@dataclass(frozen=True)
class ColumnView:
    name: str
    type: str
    column_class: str
    declared: str  # bounds or categories, as declared (tier 0)
    granted: bool


@dataclass(frozen=True)
class BudgetView:
    """One grant's privacy budget, as the provider sees it."""

    grant_id: str
    epsilon: float
    epsilon_spent: float
    epsilon_remaining: float
    delta: float
    delta_spent: float
    delta_remaining: float
    valid_until: Any = None

    @classmethod
    def of(cls, grant: Grant) -> BudgetView:
        return cls(grant_id=grant.id, valid_until=grant.valid_until, **grant.budget())


@dataclass(frozen=True)
class DatasetView:
    id: str
    name: str
    rows: int | None
    tiers: list[tuple[int, str]]
    purposes: list[str]
    columns: list[ColumnView]
    budgets: list[BudgetView]
    mock: bool
    queryable: bool
    #: Each column's national classification (sandbox.data.classification), by name.
    national: dict[str, ColumnClassification] = field(default_factory=dict)


def _declared(spec: ColumnSpec) -> str:
    if spec.categories:
        return ", ".join(spec.categories)
    if spec.lower is not None or spec.upper is not None:
        return gettext("{low} to {high}").format(low=_plain(spec.lower), high=_plain(spec.upper))
    return ""


def _plain(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}"


def dataset_view(entry: CatalogEntry, grants: Sequence[Grant]) -> DatasetView:
    """A catalog entry (tier 0) with the budgets of the grants that name it."""
    schema = schema_from_json(entry.dataset.declaration)
    granted = set(entry.columns)
    return DatasetView(
        id=entry.dataset.id,
        name=entry.dataset.name,
        rows=entry.row_count_rounded,
        tiers=[(t, TIER_NAMES.get(t, "")) for t in entry.tiers],
        purposes=entry.purposes,
        columns=[
            ColumnView(c.name, str(c.type), str(c.column_class), _declared(c), c.name in granted)
            for c in schema.columns
        ],
        budgets=[BudgetView.of(g) for g in grants if g.id in entry.grant_ids],
        mock=MOCK_TIER in entry.tiers,
        queryable=PRIVATE_QUERY_TIER in entry.tiers,
        national={c.name: c for c in columns_of(entry.dataset)},
    )


# ---------------------------------------------------------------- the query form


@dataclass(frozen=True)
class AggregateRow:
    kind: str = ""
    column: str = ""
    q: str = ""
    bins: str = ""


@dataclass(frozen=True)
class QueryForm:
    """The query form's fields, as typed."""

    dataset_id: str
    purpose: str = ""
    aggregates: tuple[AggregateRow, ...] = ()
    group_by: tuple[str, ...] = ()
    epsilon: str = "0.1"
    delta: str = "0"

    @classmethod
    def blank(cls, dataset_id: str, purpose: str) -> QueryForm:
        rows = (AggregateRow("count"),) + (AggregateRow(),) * (AGGREGATE_ROWS - 1)
        return cls(dataset_id, purpose, rows)

    @classmethod
    def read(cls, form: FormData) -> QueryForm:
        """The fields of a submitted form; each row's fields come in document order."""

        def texts(name: str) -> list[str]:
            values = [v.strip() for v in form.getlist(name) if isinstance(v, str)]
            return (values + [""] * AGGREGATE_ROWS)[:AGGREGATE_ROWS]

        rows = zip(texts("kind"), texts("column"), texts("q"), texts("bins"), strict=True)
        return cls(
            dataset_id=_text(form, "dataset_id"),
            purpose=_text(form, "purpose"),
            aggregates=tuple(AggregateRow(*row) for row in rows),
            group_by=tuple(v for v in form.getlist("group_by") if isinstance(v, str) and v),
            epsilon=_text(form, "epsilon"),
            delta=_text(form, "delta") or "0",
        )

    def submission(self) -> JobSubmission:
        """The tier-3 job this form asks for; InvalidRequest, in plain words, if incomplete."""
        aggregates = [
            _aggregate(i, row) for i, row in enumerate(self.aggregates, start=1) if row.kind
        ]
        if not aggregates:
            raise InvalidRequest(Msg("choose at least one statistic (a kind other than 'none')"))
        check_purpose(self.purpose)
        if not 1 <= len(self.dataset_id) <= ID_LENGTH:
            raise InvalidRequest(Msg("choose one of the datasets listed"))
        query: dict[str, Any] = {"aggregates": aggregates}
        if self.group_by:
            query["group_by"] = list(self.group_by)
        epsilon, delta = privacy_cost(self.epsilon, self.delta)
        return JobSubmission(
            dataset_id=self.dataset_id,
            purpose=self.purpose,
            query=query,
            tier=PRIVATE_QUERY_TIER,
            epsilon=epsilon,
            delta=delta,
        )


def check_purpose(purpose: str) -> None:
    """InvalidRequest, in plain words, unless ``purpose`` could be a grant's purpose."""
    if not purpose:
        raise InvalidRequest(Msg("choose the purpose of this query"))
    # As the API's schema does: longer values do not fit their columns (PostgreSQL).
    if len(purpose) > PURPOSE_LENGTH:
        raise InvalidRequest(
            Msg("the purpose is longer than {most} characters", most=PURPOSE_LENGTH)
        )
    if not purpose.isprintable():  # as the API refuses it (sandbox.api.routes_jobs)
        raise InvalidRequest(
            Msg("purpose must be 1-64 printable characters, no control characters")
        )


def privacy_cost(epsilon: str, delta: str) -> tuple[float, float]:
    """ε and δ as typed, as numbers; InvalidRequest saying what to type otherwise."""
    return (
        _number(epsilon, Msg("epsilon (ε)"), Msg("a number above 0, such as 0.5")),
        _number(delta, Msg("delta (δ)"), Msg("0, or a small number such as 0.000001")),
    )


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _number(text: str, name: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(
            Msg("{name} must be {expected}", name=name, expected=expected)
        ) from None
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(Msg("{name} must be {expected}", name=name, expected=expected))
    return value


def _aggregate(index: int, row: AggregateRow) -> dict[str, Any]:
    if row.kind not in _NEEDS_COLUMN | {"count"}:
        raise InvalidRequest(Msg("statistic {index}: choose a kind from the list", index=index))
    where = Msg("statistic {index} ({kind})", index=index, kind=Msg(LABELS.get(row.kind, row.kind)))
    item: dict[str, Any] = {"kind": row.kind}
    if row.column:
        item["column"] = row.column
    elif row.kind in _NEEDS_COLUMN:
        raise InvalidRequest(Msg("{where} needs a column: choose one", where=where))
    if row.kind == AggregateKind.QUANTILE:
        q = _number(
            row.q, Msg("{where}: q", where=where), Msg("a number between 0 and 1, such as 0.9")
        )
        if not 0 < q < 1:
            raise InvalidRequest(
                Msg("{where}: q must be between 0 and 1, such as 0.9", where=where)
            )
        item["q"] = q
    if row.kind == AggregateKind.HISTOGRAM and row.bins:
        if not row.bins.isdigit():
            raise InvalidRequest(
                Msg("{where}: bins must be a whole number, such as 10", where=where)
            )
        item["bins"] = int(row.bins)
    return item


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class QueryChoices:
    """What the form offers for one dataset: its granted columns, purposes and budgets."""

    dataset: DatasetView
    purposes: list[str]
    columns: list[Choice]  # for statistics ("" = rows, for a count)
    group_columns: list[Choice]
    kinds: tuple[tuple[str, str], ...] = KINDS
    rows: range = field(default_factory=lambda: range(AGGREGATE_ROWS))


def query_choices(view: DatasetView) -> QueryChoices:
    """Granted, non-secret columns; group keys also exclude confidential ones."""
    usable = [c for c in view.columns if c.granted and c.column_class != ColumnClass.SECRET]
    columns = [Choice("", gettext("rows (count only)"))] + [
        Choice(
            c.name,
            gettext("{name} ({klass} {type})").format(
                name=c.name, klass=_word(c.column_class), type=_word(c.type)
            ),
        )
        for c in usable
    ]
    keys = [
        Choice(c.name, _key_label(c))
        for c in usable
        if c.column_class != ColumnClass.CONFIDENTIAL and c.type in _KEY_TYPES
    ]
    return QueryChoices(view, view.purposes, columns, keys)


# ---------------------------------------------------------------- results and jobs


def _key_label(column: ColumnView) -> str:
    """A group key as the form offers it: its name, class and declared categories."""
    klass = _word(column.column_class)
    if column.declared:
        return gettext("{name} ({klass}; {declared})").format(
            name=column.name, klass=klass, declared=column.declared
        )
    return gettext("{name} ({klass})").format(name=column.name, klass=klass)


def _word(code: object) -> str:
    """The reader's word for a code (a class, a type): see :mod:`sandbox.console.labels`."""
    text = str(code)
    return gettext(LABELS[text]) if text in LABELS else text


def accuracy_statement(value: ReleasedValueOut) -> str:
    """The 95% interval of a released value, in words."""
    low, high = (number(v) for v in value.ci95)
    if value.aggregate.startswith(("quantile(", "median(")):
        # OpenDP states a quantile's accuracy in ranks, which depend on the private data.
        return gettext(
            "with 95% confidence, the true value is between {low} and {high} "
            "(the declared bounds: a quantile's accuracy in the column's units depends on "
            "the private data)"
        ).format(low=low, high=high)
    return gettext("with 95% confidence, the true value is between {low} and {high}").format(
        low=low, high=high
    )


def preview_statement(half_width: float | None, note: str | None) -> str:
    """The expected accuracy of one statistic, before it runs."""
    if half_width is not None:
        text = gettext("within ±{half_width} of the true value, with 95% confidence").format(
            half_width=number(half_width)
        )
        return f"{text} ({translate(note)})" if note else text
    if note:
        return translate(note)
    return gettext("depends on the data; the released value will carry its own interval")


def group_columns(rows: Iterable[Any]) -> list[str]:
    """The group-key columns of released rows, in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        for name in row.group or {}:
            names.setdefault(name, None)
    return list(names)


def jobs_per_day(jobs: Sequence[JobOut]) -> tuple[Markup, list[tuple[str, int]]]:
    """The jobs-per-day chart of these jobs, and its numbers."""
    counts: Counter[date] = Counter(j.created_at.date() for j in jobs)
    unit = gettext(" jobs")
    svg = day_bars(gettext("Jobs per day"), {d: float(n) for d, n in counts.items()}, unit=unit)
    return svg, [(d.isoformat(), n) for d, n in sorted(counts.items())]


@dataclass(frozen=True)
class Step:
    """One stage of a job's life: ``done``, ``current``, ``todo`` or ``failed``."""

    label: str
    state: str
    at: Any = None
    detail: str = ""


def progress_steps(job: JobOut, started_at: Any) -> list[Step]:
    """Submitted → running → released (or where it stopped), for the job page."""
    status = job.status
    if status == "denied":
        return [Step(N_("Refused by the policy; nothing was spent"), "failed", job.created_at)]
    steps = [Step(N_("Submitted; budget debited; queued"), "done", job.created_at)]
    released = Step(N_("Released"), "todo")
    if status == "queued":
        return [*steps, Step(N_("Waiting for a sandbox"), "current"), released]
    if status == "running":
        running = Step(N_("Running in the isolated sandbox"), "current", started_at, _epochs(job))
        return [*steps, running, released]
    if started_at is not None:  # a job cancelled while queued never ran
        steps.append(Step(N_("Ran in the isolated sandbox"), "done", started_at))
    if status == "released":
        return [*steps, Step(N_("Output checked and released"), "done", job.finished_at)]
    if status == "held":
        return [*steps, Step(N_("Held by the output checks for the enterprise"), "current")]
    return [*steps, Step(N_("Failed"), "failed", job.finished_at, job.error or "")]


def _epochs(job: JobOut) -> str:
    progress = job.progress or {}
    epoch, epochs = progress.get("epoch"), progress.get("epochs")
    if isinstance(epoch, int) and isinstance(epochs, int):
        return gettext("epoch {epoch} of {epochs}").format(epoch=epoch, epochs=epochs)
    return ""
