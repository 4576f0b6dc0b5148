"""Tier-3 queries written in SQL: translated once, at submission, into the query document.

A submission gives either a JSON ``query`` or an ``sql`` text.  The SQL is translated by
``analytics.sql`` into the document a provider could have written, and from then on the
job is that document: the policy decision, the debit and the run see nothing else.  The
job keeps the SQL as submitted (``Job.sql``) next to the document (``Job.query``), so
whoever reads the job sees both.

``FROM`` names the dataset by its id, or by its name among the datasets the provider
holds a grant on (an unknown name and another tenant's dataset answer alike: 404).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.sql import SqlError, SqlTranslation, translate_sql
from i18n import Msg
from policies.capabilities import Capability, require
from policies.errors import InvalidRequest, NotFound
from policies.grants import Grant
from policies.principals import Principal
from policies.tiers import PRIVATE_QUERY_TIER
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset


def translate(sql: str, tier: int = PRIVATE_QUERY_TIER) -> SqlTranslation:
    """The translation of a job's SQL; InvalidRequest (``sql: …``, its code) if refused."""
    if tier != PRIVATE_QUERY_TIER:
        raise InvalidRequest(
            Msg(
                "sql is for tier-3 private queries; a tier-{tier} job takes its JSON "
                "document in query",
                tier=tier,
            ),
            code="sql_tier",
        )
    try:
        return translate_sql(sql)
    except SqlError as error:
        raise InvalidRequest(
            Msg("sql: {problem}", problem=error.args[0]), code=error.code
        ) from None


def resolve_dataset(
    session: Session, provider: Principal, named: str, dataset_id: str | None
) -> str:
    """The id of the dataset ``FROM`` names: an id, or a granted dataset's name.

    When the submission also gives ``dataset_id``, FROM must name that dataset.
    """
    granted = {d.id: d for d in _granted_datasets(session, provider)}
    if named in granted:
        found = named
    else:
        same_name = sorted(d.id for d in granted.values() if d.name == named)
        if len(same_name) > 1:
            raise InvalidRequest(
                Msg(
                    "sql: FROM: several datasets you hold grants on are named so; "
                    "name one by its id ({ids})",
                    ids=", ".join(same_name),
                ),
                code="sql_ambiguous_dataset",
            )
        if not same_name:
            raise NotFound("dataset", named if dataset_id is None else dataset_id)
        found = same_name[0]
    if dataset_id is not None and dataset_id != found:
        raise InvalidRequest(
            Msg(
                "sql: FROM names another dataset than dataset_id '{dataset_id}': give "
                "one of them, or make them agree",
                dataset_id=dataset_id,
            ),
            code="sql_dataset_mismatch",
        )
    return found


def _granted_datasets(session: Session, provider: Principal) -> list[Dataset]:
    grants = session.scalars(select(Grant).where(Grant.provider_id == provider.id))
    ids = {d for g in grants for d in g.dataset_ids}
    if not ids:
        return []
    return list(session.scalars(select(Dataset).where(Dataset.id.in_(sorted(ids)))))


def explain(veil: Veil, provider: Principal, sql: str) -> dict[str, Any]:
    """What an SQL query translates to, without submitting it: the dataset it names (its
    id, when the provider holds a grant on it) and the query document."""
    require(provider, Capability.SUBMIT_JOBS)
    translation = translate(sql)
    with veil.db.transaction() as session:
        dataset_id = resolve_dataset(session, provider, translation.dataset, None)
    return {"dataset_id": dataset_id, "query": translation.document}
