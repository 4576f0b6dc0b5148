"""Collaborations across enterprises (``/v1/collaborations``): a provider proposes a
benchmark, starts runs and reads their releases; enterprises join from their nodes
(``/node/v1/collaborations``, in ``routes_nodes``).  ``docs/collaborations.md``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import Field

from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import NAME_LENGTH, Input
from sandbox.collaborations import proposals, runs

router = APIRouter(prefix="/v1", tags=["collaborations"])


class CollaborationIn(Input):
    title: str = Field(min_length=1, max_length=NAME_LENGTH)
    purpose: str = Field(min_length=1, max_length=500)
    columns: list[dict[str, Any]] | None = Field(
        default=None,
        description='A benchmark\'s common schema: [{"name": ..., "type": "int"|"float"}]',
    )
    benchmark: dict[str, Any] | None = Field(
        default=None,
        description="A benchmark's statistics, by public category, with their budget and the "
        "minimum number of enterprises (docs/collaborations.md)",
    )
    analysis: dict[str, Any] | None = Field(
        default=None,
        description="Instead of a benchmark: a supply-chain analysis template between two "
        "named enterprises (docs/collaborations.md, 'Supply-chain analyses')",
    )


@router.post("/collaborations", status_code=status.HTTP_201_CREATED)
def propose(body: CollaborationIn, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """Propose a benchmark across enterprises, or an analysis between two (provider); each
    enterprise joins (approves) on its node."""
    made = proposals.propose(
        veil, caller, body.title, body.purpose, body.columns, body.benchmark, body.analysis
    )
    return proposals.summary(made, 0)


@router.get("/collaborations")
def list_collaborations(veil: VeilDep, caller: PrincipalDep) -> list[dict[str, Any]]:
    """A provider's own proposals (operators: all), with how many enterprises joined."""
    return proposals.list_for(veil, caller)


@router.get("/collaborations/{collaboration_id}")
def get_collaboration(collaboration_id: str, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    found = proposals.visible(veil, caller, collaboration_id)
    with veil.db.read() as session:
        return proposals.summary(found, proposals.members_joined(session, found.id))


@router.post("/collaborations/{collaboration_id}/close")
def close_collaboration(
    collaboration_id: str, veil: VeilDep, caller: PrincipalDep
) -> dict[str, str]:
    """No more runs (the proposer)."""
    proposals.close(veil, caller, collaboration_id)
    return {"status": "closed"}


@router.post("/collaborations/{collaboration_id}/runs", status_code=status.HTTP_202_ACCEPTED)
def start_run(collaboration_id: str, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """Start a run over the enterprises taking part now (409 ``too_few_participants``
    under the minimum); it ends released or failed, never with a partial release."""
    return runs.run_summary(runs.start(veil, caller, collaboration_id))


@router.get("/collaborations/{collaboration_id}/runs/{run_id}")
def get_run(
    collaboration_id: str, run_id: str, veil: VeilDep, caller: PrincipalDep
) -> dict[str, Any]:
    """A run: its phase, and once released the statistics with their intervals."""
    return runs.show(veil, caller, collaboration_id, run_id)
