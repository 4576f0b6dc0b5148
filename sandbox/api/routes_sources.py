"""Data sources read in place (``docs/sources.md``): the enterprise declares, maps, reads and
runs the sources of its own datasets, on the core where they live (its node)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import Input
from sandbox.sources import declarations, runs

router = APIRouter(prefix="/v1", tags=["sources"])


class SourceIn(Input):
    kind: str = Field(max_length=32, description="sql, opcua or mqtt (docs/sources.md)")
    config: dict[str, Any] = Field(description="The kind's settings; never a secret.")
    credentials: dict[str, str] | None = Field(
        default=None,
        max_length=20,
        description="Secrets (a password), encrypted with the enterprise's keys; never shown "
        "again. Left out: keep those given before.",
    )
    interval_s: float | None = Field(
        default=None, description="Run every this many seconds; left out: continuously."
    )
    mapping: dict[str, Any] | None = Field(
        default=None, description='{"columns": {column: {"field": ...}}} (docs/sources.md)'
    )


class MappingIn(Input):
    columns: dict[str, dict[str, Any]] = Field(max_length=500)


class SourceOut(BaseModel):
    source: dict[str, Any] | None = Field(description="None: the dataset has no source yet.")


class SourcesOut(BaseModel):
    sources: list[dict[str, Any]]


class RunOut(BaseModel):
    run: dict[str, Any] = Field(
        description="{source_id, dataset_id, rows, version, error, problems, queued}; "
        "queued: true when the scheduler that reads this continuous source runs it (at its "
        "next poll) instead: the source's state says the outcome."
    )


@router.get("/sources")
def list_sources(veil: VeilDep, caller: PrincipalDep) -> SourcesOut:
    """The enterprise's sources, each with its state and last error."""
    return SourcesOut(sources=[v.as_json() for v in declarations.list_sources(veil, caller)])


@router.put("/datasets/{dataset_id}/source")
def declare_source(
    dataset_id: str, body: SourceIn, veil: VeilDep, caller: PrincipalDep
) -> SourceOut:
    """Declare (or change) the source of one of the enterprise's datasets."""
    view = declarations.declare_source(
        veil,
        caller,
        dataset_id,
        kind=body.kind,
        config=body.config,
        credentials=body.credentials,
        interval_s=body.interval_s,
        mapping=body.mapping,
    )
    return SourceOut(source=view.as_json())


@router.get("/datasets/{dataset_id}/source")
def show_source(dataset_id: str, veil: VeilDep, caller: PrincipalDep) -> SourceOut:
    """The dataset's source: settings, credential names, mapping, schedule and state."""
    view = declarations.show_source(veil, caller, dataset_id)
    return SourceOut(source=view.as_json() if view is not None else None)


@router.put("/datasets/{dataset_id}/source/mapping")
def set_mapping(dataset_id: str, body: MappingIn, veil: VeilDep, caller: PrincipalDep) -> SourceOut:
    """The source's next mapping version."""
    view = declarations.set_mapping(veil, caller, dataset_id, body.model_dump())
    return SourceOut(source=view.as_json())


@router.post("/datasets/{dataset_id}/source/run")
def run_source(dataset_id: str, veil: VeilDep, caller: PrincipalDep) -> RunOut:
    """Run the source now: the new rows as the dataset's next version, or the run's error;
    or, for a continuous source a scheduler reads, queued for that scheduler (``queued``)."""
    return RunOut(run=runs.run_now(veil, caller, dataset_id).as_json())
