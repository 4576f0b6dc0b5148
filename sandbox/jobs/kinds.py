"""Job kinds: what each job tier does, in one registry instead of ``if tier == …``.

A job's tier selects its :class:`JobKind` (``kind_for``); the kind alone knows how to
parse the job's query document, what it may cost, how it is validated against the
dataset's declaration, which columns it reads, what its preview says, what the
sandboxed process computes (its :class:`~sandbox.isolation.child.Task`) and how the sandbox's
answer is shaped for release.  ``sandbox.jobs.submit`` (submit, preview), ``sandbox.jobs.runner``
and ``sandbox.jobs.outcomes`` (run, release) only ask the kind.

Parsing happens once per process step: a submission or a preview parses the document
it received (``sandbox.jobs.submit``); a run parses the stored document once, with
:func:`parse_stored`, in the worker's first transaction (``sandbox.jobs.runner.run_job``),
and hands the parsed query to the re-check, the task and the release.  ``PARSED``
counts the documents parsed per tier so that tests can hold this.

Adding a kind: subclass :class:`JobKind`, give it its tier and the child's task
kind (a function of that name in ``sandbox.isolation.child._COMPUTE``), and list it in
``_KINDS``; ``docs/architecture.md`` ("Job kinds") says the rest.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Final

from sqlalchemy.orm import Session

from analytics.kpi import KpiQuery, parse_kpi, validate_kpi
from analytics.private_query import QueryError, preview_query, validate_query
from analytics.query_document import parse_query
from analytics.schema import DatasetSchema, PrivateQuery
from analytics.sdc import SdcQueryError, SdcRules, TableQuery, validate_table_query
from analytics.sdc_preview import preview_table
from analytics.syft_code import parse_submission
from analytics.training_document import parse_training
from analytics.training_spec import TrainingError, TrainingSpec
from i18n import Msg
from policies.errors import InvalidRequest
from policies.tiers import AGGREGATE_TIER, CODE_TIER, PRIVATE_QUERY_TIER, TRAINING_TIER
from sandbox.isolation.child import Task
from sandbox.jobs.code_runs import all_public
from sandbox.jobs.reviewed_code import MOCK_ROWS, CodeJob, parse_code_job, resolve_code_job
from sandbox.store.models import CodeRequest, Job

JobQuery = PrivateQuery | TableQuery | TrainingSpec | CodeJob | KpiQuery

#: What a query's check may raise, whatever its kind (each becomes ``query: …``).
_CHECK_ERRORS: Final = (QueryError, SdcQueryError, TrainingError)

#: How many job documents this process parsed, per tier (tests and diagnostics read it).
PARSED: Final[Counter[int]] = Counter()
_PARSED_LOCK: Final = threading.Lock()


def _problem(prefix: str, exc: Exception) -> InvalidRequest:
    """An analytics error as the 422 the provider reads (``query: …``, ``training: …``)."""
    problem = exc.args[0] if exc.args else str(exc)
    if prefix == "training":
        return InvalidRequest(Msg("training: {problem}", problem=problem))
    return InvalidRequest(Msg("query: {problem}", problem=problem))


def _needs_epsilon(tier: int, epsilon: int) -> None:
    if epsilon <= 0:
        raise InvalidRequest(
            Msg(
                "a tier-{tier} job needs epsilon > 0 (at least 0.000001)",
                tier=tier,
            )
        )


@dataclass(frozen=True)
class RunInputs:
    """What a run gives the kind to build its task: facts of the job, its grant and data."""

    schema: DatasetSchema
    epsilon: float
    delta: float
    rows_public: int
    min_count: int
    secure_mode: bool
    code: CodeRequest | None = field(default=None, repr=False)


class JobKind:
    """One tier's rules.  Subclasses override what differs; the defaults are tier 3's."""

    tier: int = PRIVATE_QUERY_TIER
    #: The function of ``sandbox.isolation.child`` that computes it.
    task_kind: str = "query"
    #: Validation is slow (seconds): run it once before the write transaction too.
    slow_validation: bool = False
    #: The sandbox's answer carries one blob, the model, stored encrypted before release.
    releases_model: bool = False

    def parse(self, document: dict[str, Any], epsilon: float, delta: float) -> JobQuery:
        """The job's query from its document; InvalidRequest if malformed.  Counted."""
        with _PARSED_LOCK:
            PARSED[self.tier] += 1
        return self._parse(document, epsilon, delta)

    def _parse(self, document: dict[str, Any], epsilon: float, delta: float) -> JobQuery:
        try:
            return parse_query(document)
        except QueryError as exc:
            raise _problem("query", exc) from None

    def cost(self, epsilon: int, delta: int) -> None:
        """Refuse a budget (in units) this kind cannot ask for."""
        _needs_epsilon(self.tier, epsilon)

    def columns(self, query: JobQuery) -> frozenset[str]:
        """The dataset columns the query reads (policy decides on these)."""
        assert isinstance(query, PrivateQuery | TableQuery)
        if isinstance(query, PrivateQuery):
            return query.columns_used()  # filters too: the grant must give their columns
        used = {a.column for a in query.aggregates if a.column is not None}
        return frozenset(used | set(query.group_by))

    def resolve(
        self, session: Session, provider_id: str, dataset_id: str, query: JobQuery
    ) -> tuple[JobQuery, str | None]:
        """The query completed from the database, and why it may not run (None: it may)."""
        return query, None

    def validate(self, schema: DatasetSchema, query: JobQuery, rows_public: int) -> None:
        """Check the query against the declaration; InvalidRequest (``query: …``) if not."""
        assert isinstance(query, PrivateQuery)
        try:
            validate_query(schema, query)
        except _CHECK_ERRORS as exc:
            raise _problem("query", exc) from None

    def require_preview(self) -> None:
        """Raise InvalidRequest when this kind has no preview."""

    def preview(
        self,
        schema: DatasetSchema,
        query: JobQuery,
        budget: tuple[float, float],
        min_count: int,
        rows_public: int,
    ) -> dict[str, Any]:
        """What the job would cost and how accurate it would be
        (``sandbox.jobs.submit.preview_job``)."""
        assert isinstance(query, PrivateQuery)
        epsilon, delta = budget
        try:
            found = preview_query(schema, query, epsilon, delta, rows_hint=rows_public)
        except QueryError as exc:
            raise _problem("query", exc) from None
        return {"allowed": True, "reasons": [], "preview": found}

    def code_request(self, session: Session, query: JobQuery) -> CodeRequest | None:
        """The approved code request the job runs (tier 5 only)."""
        return None

    def needs_cell_secret(self, inputs: RunInputs) -> bool:
        """Whether the run needs the dataset's cell-key secret (made on first need)."""
        return False

    def with_cell_secret(self, task: Task, secret: bytes) -> Task:
        """The task given the secret, when the sandbox perturbs with it."""
        return task

    def task(self, query: JobQuery, inputs: RunInputs) -> Task:
        """What the sandboxed process computes (parsed and checked in the parent)."""
        return Task(
            kind=self.task_kind,
            schema=inputs.schema,
            query=query,
            epsilon=inputs.epsilon,
            delta=inputs.delta,
            rows_public=inputs.rows_public,
            min_count=inputs.min_count,
            secure_mode=inputs.secure_mode,
        )


class TableKind(JobKind):
    """Tier 2: a count / sum / mean table, cell-key perturbed and SDC-checked; no ε."""

    tier = AGGREGATE_TIER
    task_kind = "table"

    def _parse(self, document: dict[str, Any], epsilon: float, delta: float) -> JobQuery:
        query = super()._parse(document, epsilon, delta)
        assert isinstance(query, PrivateQuery)
        if query.where:
            # Two tables differing by a filter would difference out rows that cell-key
            # perturbation and the cell rules cannot protect: filters are DP-only.
            raise InvalidRequest(
                Msg(
                    "query: where (filters) is for tier-3 private queries only; a tier-2 "
                    "table takes no filter: group by the column instead, or use tier 3"
                ),
                code="filter_not_allowed",
            )
        return TableQuery(query.aggregates, query.group_by)

    def cost(self, epsilon: int, delta: int) -> None:
        if epsilon or delta:
            raise InvalidRequest(
                Msg("a tier-2 job costs no privacy budget: leave epsilon and delta at 0")
            )

    def validate(self, schema: DatasetSchema, query: JobQuery, rows_public: int) -> None:
        assert isinstance(query, TableQuery)
        try:
            validate_table_query(schema, query)
        except _CHECK_ERRORS as exc:
            raise _problem("query", exc) from None

    def preview(
        self,
        schema: DatasetSchema,
        query: JobQuery,
        budget: tuple[float, float],
        min_count: int,
        rows_public: int,
    ) -> dict[str, Any]:
        assert isinstance(query, TableQuery)
        table = preview_table(schema, query, SdcRules(min_count=min_count))
        return {"allowed": True, "reasons": [], "preview": None, "table": table}

    def needs_cell_secret(self, inputs: RunInputs) -> bool:
        return True  # the sandbox perturbs every cell with it

    def with_cell_secret(self, task: Task, secret: bytes) -> Task:
        return replace(task, cell_secret=secret)


class QueryKind(JobKind):
    """Tier 3: differentially private statistics (OpenDP); ε (and δ) debited.

    A document ``{"kpi": {...}}`` is a KPI contract's evaluation (``analytics.kpi``): the
    DP statistics of a KPI in two periods, computed by the child's ``kpi`` task.
    """

    def _parse(self, document: dict[str, Any], epsilon: float, delta: float) -> JobQuery:
        if set(document) != {"kpi"}:
            return super()._parse(document, epsilon, delta)
        if delta:
            raise InvalidRequest(Msg("a KPI evaluation is pure epsilon-DP: leave delta at 0"))
        try:
            return parse_kpi(document["kpi"])
        except QueryError as exc:
            raise _problem("query", exc) from None

    def columns(self, query: JobQuery) -> frozenset[str]:
        if isinstance(query, KpiQuery):
            return query.columns_used()
        return super().columns(query)

    def validate(self, schema: DatasetSchema, query: JobQuery, rows_public: int) -> None:
        if not isinstance(query, KpiQuery):
            return super().validate(schema, query, rows_public)
        try:
            validate_kpi(schema, query)
        except QueryError as exc:
            raise _problem("query", exc) from None

    def preview(
        self,
        schema: DatasetSchema,
        query: JobQuery,
        budget: tuple[float, float],
        min_count: int,
        rows_public: int,
    ) -> dict[str, Any]:
        if isinstance(query, KpiQuery):
            raise InvalidRequest(Msg("a KPI evaluation has no preview: docs/verdicts.md"))
        return super().preview(schema, query, budget, min_count, rows_public)

    def task(self, query: JobQuery, inputs: RunInputs) -> Task:
        task = super().task(query, inputs)
        return replace(task, kind="kpi") if isinstance(query, KpiQuery) else task


class TrainingKind(JobKind):
    """Tier 4: a model trained with DP-SGD (Opacus); ε and δ debited, the model stored."""

    tier = TRAINING_TIER
    task_kind = "training"
    slow_validation = True
    releases_model = True

    def _parse(self, document: dict[str, Any], epsilon: float, delta: float) -> JobQuery:
        try:
            return parse_training(_with_budget(document, epsilon, delta))
        except TrainingError as exc:
            raise _problem("training", exc) from None

    def cost(self, epsilon: int, delta: int) -> None:
        _needs_epsilon(self.tier, epsilon)
        if delta <= 0:
            raise InvalidRequest(
                Msg("a tier-4 training job needs delta > 0 (e.g. 1e-6), below 1/rows")
            )

    def columns(self, query: JobQuery) -> frozenset[str]:
        assert isinstance(query, TrainingSpec)
        return frozenset({*query.features, query.target})

    def validate(self, schema: DatasetSchema, query: JobQuery, rows_public: int) -> None:
        assert isinstance(query, TrainingSpec)
        # Imported here: analytics.training loads torch and Opacus (about 3 s), which
        # only training needs; the API and the CLI start without them.
        from analytics.training import preview_training, validate_training

        try:
            validate_training(schema, query)
            preview_training(schema, query, rows_public)  # checks delta against 1/n, etc.
        except _CHECK_ERRORS as exc:
            raise _problem("query", exc) from None

    def preview(
        self,
        schema: DatasetSchema,
        query: JobQuery,
        budget: tuple[float, float],
        min_count: int,
        rows_public: int,
    ) -> dict[str, Any]:
        assert isinstance(query, TrainingSpec)
        from analytics.training import preview_training  # torch: lazily

        training = preview_training(schema, query, rows_public)
        return {"allowed": True, "reasons": [], "preview": None, "training": training}


class CodeKind(JobKind):
    """Tier 5: the provider's reviewed code (an approved code request), output-checked."""

    tier = CODE_TIER
    task_kind = "syft"

    def _parse(self, document: dict[str, Any], epsilon: float, delta: float) -> JobQuery:
        return parse_code_job(document)

    def cost(self, epsilon: int, delta: int) -> None:
        if delta:
            raise InvalidRequest(
                Msg("a tier-5 job's DP helpers are pure epsilon-DP: leave delta at 0")
            )

    def columns(self, query: JobQuery) -> frozenset[str]:
        # Empty until resolved: the code request names them, checked when it was submitted.
        assert isinstance(query, CodeJob)
        return frozenset(query.columns)

    def resolve(
        self, session: Session, provider_id: str, dataset_id: str, query: JobQuery
    ) -> tuple[JobQuery, str | None]:
        assert isinstance(query, CodeJob)
        resolved, _, refused = resolve_code_job(session, provider_id, dataset_id, query)
        return resolved, refused

    def validate(self, schema: DatasetSchema, query: JobQuery, rows_public: int) -> None:
        return  # checked when the code was submitted and approved

    def require_preview(self) -> None:
        raise InvalidRequest(
            Msg(
                "previews are for tiers 2 to 4 (tier 5 shows its output on the mock when submitted)"
            )
        )

    def code_request(self, session: Session, query: JobQuery) -> CodeRequest | None:
        assert isinstance(query, CodeJob)
        code = session.get(CodeRequest, query.code_request_id)
        assert code is not None  # still_allowed checked it is there and approved
        return code

    def needs_cell_secret(self, inputs: RunInputs) -> bool:
        # The aggregates it releases are perturbed unless every granted column is public.
        assert inputs.code is not None
        return not all_public(inputs.schema, tuple(inputs.code.columns))

    def task(self, query: JobQuery, inputs: RunInputs) -> Task:
        # The approved source, its pin checked again inside the sandbox.
        assert inputs.code is not None
        code = inputs.code
        parsed = parse_submission(code.source)
        extra = {"columns": list(code.columns), "approved_sha256": code.sha256,
                 "mock_rows": MOCK_ROWS}  # fmt: skip
        return Task(self.task_kind, inputs.schema, parsed, epsilon=inputs.epsilon, extra=extra)


def _with_budget(document: dict[str, Any], epsilon: float, delta: float) -> dict[str, Any]:
    """The training document with the job's own epsilon and delta (one source of truth)."""
    for name, value in (("epsilon", epsilon), ("delta", delta)):
        if name in document and document[name] != value:
            raise InvalidRequest(
                Msg(
                    "training.{name} differs from the job's {name}; give it once",
                    name=name,
                )
            )
    return document | {"epsilon": epsilon, "delta": delta}


_KINDS: Final[dict[int, JobKind]] = {
    kind.tier: kind for kind in (TableKind(), QueryKind(), TrainingKind(), CodeKind())
}
JOB_TIERS: Final = tuple(sorted(_KINDS))


def kind_for(tier: int) -> JobKind:
    """The kind of a tier-``tier`` job; InvalidRequest for a tier that has no jobs."""
    kind = _KINDS.get(tier)
    if kind is None:
        raise InvalidRequest(
            Msg(
                "tier {tier} has no jobs here: tier 0 is GET /v1/catalog, tier 1 "
                "is GET /v1/datasets/{{id}}/mock, tiers 2 to 5 are jobs",
                tier=tier,
            )
        )
    return kind


def parse_stored(job: Job) -> JobQuery:
    """A stored job's query, parsed with the budget it was charged: the run's one parse."""
    return kind_for(job.tier).parse(job.query, job.cost.epsilon, job.cost.delta)
