"""Tiers 0 and 1: what a provider may see without touching any data.

Tier 0, the catalog: schema, column classes, declared bounds and categories,
and a *rounded* row count.  Tier 1, mock data: rows generated from the
declaration alone (``analytics.mock``), reproducible from a seed, free.
Any grant that names a dataset shows its catalog entry (every other tier
implies knowing the schema); mock data needs tier 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from analytics.mock import mock_csv, mock_parquet
from i18n import Msg
from policies import audit
from policies.capabilities import Capability, may, require
from policies.decisions import tier_not_granted
from policies.errors import Forbidden, InvalidRequest, NotFound
from policies.grants import Grant
from policies.principals import Principal
from policies.tiers import MOCK_TIER
from sandbox.data.datasets import latest_version, rounded_count, schema_from_json
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset

MAX_MOCK_ROWS = 100_000


@dataclass(frozen=True)
class CatalogEntry:
    dataset: Dataset
    row_count_rounded: int | None
    tiers: list[int]
    purposes: list[str]
    columns: list[str]  # granted columns
    grant_ids: list[str]


def catalog(veil: Veil, provider: Principal) -> list[CatalogEntry]:
    """The datasets named by the provider's active grants, with what those grants allow."""
    require(provider, Capability.READ_CATALOG)
    now = veil.clock()
    with veil.db.read() as session:
        grants = [
            g
            for g in session.scalars(select(Grant).where(Grant.provider_id == provider.id))
            if g.active_at(now)
        ]
        entries = []
        for dataset_id in sorted({d for g in grants for d in g.dataset_ids}):
            dataset = session.get(Dataset, dataset_id)
            if dataset is None:
                continue
            mine = [g for g in grants if dataset_id in g.dataset_ids]
            version = latest_version(session, dataset_id)
            entries.append(
                CatalogEntry(
                    dataset=dataset,
                    row_count_rounded=rounded_count(version.row_count) if version else None,
                    tiers=sorted({t for g in mine for t in g.tiers}),
                    purposes=sorted({p for g in mine for p in g.purposes}),
                    columns=sorted({c for g in mine for c in g.columns}),
                    grant_ids=[g.id for g in mine],
                )
            )
        return entries


def _may_mock(veil: Veil, principal: Principal, dataset_id: str) -> Dataset:
    """The dataset, if the caller may have its mock data.

    A provider with no active grant on the dataset gets 404, as for a dataset that does
    not exist (never confirm existence); one whose grants name it but none gives tier 1
    is told so (403 ``tier_not_granted``): it knows the dataset from its catalog already.
    """
    with veil.db.read() as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is not None and may(principal, Capability.OWN_DATA):
            if dataset.enterprise_id == principal.id:
                return dataset
        elif dataset is not None and may(principal, Capability.USE_GRANTS):
            now = veil.clock()
            grants = [
                g
                for g in session.scalars(select(Grant).where(Grant.provider_id == principal.id))
                if g.active_at(now) and dataset_id in g.dataset_ids
            ]
            if any(MOCK_TIER in g.tiers for g in grants):
                return dataset
            if grants:
                raise Forbidden(tier_not_granted(MOCK_TIER), code="tier_not_granted")
    raise NotFound("dataset", dataset_id)


def mock_data(
    veil: Veil, principal: Principal, dataset_id: str, *, rows: int, seed: int, fmt: str
) -> bytes:
    """Mock rows of a dataset from its declaration only (no data read, no budget spent)."""
    if not 1 <= rows <= MAX_MOCK_ROWS:
        raise InvalidRequest(
            Msg(
                "rows must be between 1 and {max_mock_rows}",
                max_mock_rows=MAX_MOCK_ROWS,
            )
        )
    if fmt not in ("csv", "parquet"):
        raise InvalidRequest(Msg("format must be 'csv' or 'parquet'"))
    dataset = _may_mock(veil, principal, dataset_id)
    schema = schema_from_json(dataset.declaration)
    data = (mock_csv if fmt == "csv" else mock_parquet)(schema, rows, seed)
    with veil.db.transaction() as session:
        audit.record(
            session,
            "mock.downloaded",
            actor=principal,
            tenant_id=dataset.enterprise_id,
            resource=f"dataset:{dataset_id}",
            details={"rows": rows, "seed": seed, "format": fmt},
        )
    return data
