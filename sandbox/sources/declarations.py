"""Declaring a dataset's source, its mapping and its credentials, on the core where the
dataset lives (an enterprise's node; refused on the control plane for a node's enterprise).

The credentials (a database password, a broker's login) are one JSON object encrypted with
the enterprise's keys, exactly as a dataset version is (``KeyService.encrypt_bytes``: a
fresh data key from the enterprise's key server, AES-256-GCM or SM4-GCM by the crypto
profile, bound to ``source:<id>`` and the credentials' version). Only the wrapped key and
the ciphertext are stored; they are opened in the process that runs the source, in memory,
and never logged, audited, shown or sent to the control plane (a node publishes datasets,
never sources).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from i18n import Msg
from policies import audit
from policies.capabilities import Capability, require
from policies.db import new_id
from policies.errors import Conflict, InvalidRequest
from policies.principals import Principal
from sandbox.data.datasets import owned_dataset, schema_from_json
from sandbox.runtime.veil import Veil
from sandbox.sources import kinds
from sandbox.sources.mapping import MappingProblem, check_mapping
from sandbox.store.models import Dataset
from sandbox.store.node_models import refuse_if_on_node
from sandbox.store.source_models import SourceDeclaration, SourceMapping, SourceState

MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 31 * 86400.0


def invalid(headline: Msg, problems: list[str]) -> InvalidRequest:
    """422 with one entry per problem (the setting or column it names, never a value)."""
    error = InvalidRequest(headline)
    error.problems = [{"message": p} for p in problems]  # type: ignore[attr-defined]
    return error


@dataclass(frozen=True)
class SourceView:
    """A source as its enterprise sees it: never its credentials."""

    declaration: SourceDeclaration
    mapping: SourceMapping | None
    state: SourceState

    def as_json(self) -> dict[str, Any]:
        d, m, s = self.declaration, self.mapping, self.state

        def when(t: object) -> str | None:
            return t.isoformat() if t is not None else None  # type: ignore[attr-defined]

        return {
            "id": d.id,
            "dataset_id": d.dataset_id,
            "kind": d.kind,
            "config": d.config,
            "credentials": list(d.credential_names),
            "schedule": {"interval_s": d.interval_s, "continuous": d.interval_s is None},
            "mapping": {"version": m.version, **m.mapping} if m is not None else None,
            "state": {
                "cursor": s.cursor,
                "last_run_at": when(s.last_run_at),
                "last_success_at": when(s.last_success_at),
                "last_version": s.last_version,
                "last_rows": s.last_rows,
                "failures": s.failures,
                "next_attempt_at": when(s.next_attempt_at),
                "last_error": s.last_error,
                "running": s.claimed_until is not None,
                "devices": s.devices or {},
            },
        }


def declare_source(
    veil: Veil,
    enterprise: Principal,
    dataset_id: str,
    *,
    kind: str,
    config: Mapping[str, Any],
    credentials: Mapping[str, str] | None = None,
    interval_s: float | None = None,
    mapping: object | None = None,
) -> SourceView:
    """Declare (or replace) the source of the enterprise's dataset: its kind and settings, its
    credentials (``None``: keep those it has), its schedule (``interval_s`` None: continuous)
    and optionally its first mapping. Audited ``source.declared`` (settings and credential
    names, never credentials). The cursor is kept unless the kind changes."""
    require(enterprise, Capability.UPLOAD_DATA)
    assert enterprise.slug is not None
    module = kinds.kind_named(kind)
    config = dict(config)
    problems = module.check_config(config)
    if problems:
        raise invalid(Msg("the source's settings are not usable; correct them"), problems)
    check = getattr(module, "check_secrets", None)
    if credentials is not None and check is not None and (found := check(credentials)):
        raise invalid(Msg("the source's credentials are not usable; correct them"), found)
    _check_interval(interval_s)
    with veil.db.transaction() as session:
        refuse_if_on_node(session, enterprise.id)
        dataset = owned_dataset(session, enterprise, dataset_id)
        schema = schema_from_json(dataset.declaration)
        checked_mapping = None if mapping is None else _checked(mapping, schema)
        source = session.scalar(
            select(SourceDeclaration).where(SourceDeclaration.dataset_id == dataset_id)
        )
        now = veil.clock()
        new = source is None
        if source is None:
            source = SourceDeclaration(
                id=new_id("src"),
                dataset_id=dataset_id,
                enterprise_id=enterprise.id,
                secrets_version=0,
                credential_names=[],
                created_at=now,
            )
            session.add(source)
            session.add(SourceState(source_id=source.id, failures=0, next_attempt_at=now))
        # The cursor stays with new settings (the same data, moved or re-credentialed: reading
        # it again would store its rows twice); another kind of source starts afresh.
        restart = not new and source.kind != kind
        source.kind, source.interval_s, source.updated_at = kind, interval_s, now
        if credentials is not None:
            source.secrets_version += 1
            wrapped, ciphertext = veil.keys.encrypt_bytes(
                enterprise.slug,
                f"source:{source.id}",
                source.secrets_version,
                json.dumps(dict(credentials)).encode(),
            )
            source.secrets_wrapped_key = wrapped
            source.secrets_ciphertext = base64.b64encode(ciphertext).decode()
            source.credential_names = sorted(credentials)
        source.config = config
        session.flush()
        state = session.get(SourceState, source.id)
        assert state is not None
        if restart:
            state.cursor = None
        state.failures, state.last_error, state.next_attempt_at = 0, None, now
        audit.record(
            session,
            "source.declared",
            actor=enterprise,
            tenant_id=enterprise.id,
            resource=f"dataset:{dataset_id}",
            details={
                "source_id": source.id,
                "kind": kind,
                "config": config,
                "credentials": source.credential_names,
                "credentials_version": source.secrets_version,
                "interval_s": interval_s,
                "cursor_reset": restart,
            },
        )
        if checked_mapping is not None:
            _add_mapping(session, enterprise, source, checked_mapping, now)
        return _view(session, source)


def _check_interval(interval_s: float | None) -> None:
    if interval_s is None:
        return
    if not (math.isfinite(interval_s) and MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S):
        raise InvalidRequest(
            Msg(
                "interval_s must be between {low} and {high} seconds, or left out (continuous)",
                low=int(MIN_INTERVAL_S),
                high=int(MAX_INTERVAL_S),
            )
        )


def _checked(mapping: object, schema: Any) -> dict[str, Any]:
    try:
        return check_mapping(mapping, schema)
    except MappingProblem as exc:
        raise invalid(exc.args[0], exc.problems) from None


def set_mapping(veil: Veil, enterprise: Principal, dataset_id: str, mapping: object) -> SourceView:
    """The source's next mapping version (audited ``source.mapping_changed``)."""
    require(enterprise, Capability.UPLOAD_DATA)
    with veil.db.transaction() as session:
        refuse_if_on_node(session, enterprise.id)
        dataset = owned_dataset(session, enterprise, dataset_id)
        source = _source_of(session, dataset_id)
        checked = _checked(mapping, schema_from_json(dataset.declaration))
        _add_mapping(session, enterprise, source, checked, veil.clock())
        return _view(session, source)


def _add_mapping(
    session: Session,
    enterprise: Principal,
    source: SourceDeclaration,
    mapping: dict[str, Any],
    now: Any,
) -> None:
    version = (
        session.scalar(
            select(func.max(SourceMapping.version)).where(SourceMapping.source_id == source.id)
        )
        or 0
    ) + 1
    session.add(
        SourceMapping(
            id=new_id("smap"), source_id=source.id, version=version, mapping=mapping, created_at=now
        )
    )
    session.flush()
    audit.record(
        session,
        "source.mapping_changed",
        actor=enterprise,
        tenant_id=enterprise.id,
        resource=f"dataset:{source.dataset_id}",
        details={"source_id": source.id, "version": version, "mapping": mapping},
    )


def no_source() -> Conflict:
    return Conflict(
        Msg("the dataset has no source yet: declare one first (veil sources declare)"),
        code="no_source",
    )


def _source_of(session: Session, dataset_id: str) -> SourceDeclaration:
    source = session.scalar(
        select(SourceDeclaration).where(SourceDeclaration.dataset_id == dataset_id)
    )
    if source is None:
        raise no_source()
    return source


def current_mapping(session: Session, source_id: str) -> SourceMapping | None:
    return session.scalars(
        select(SourceMapping)
        .where(SourceMapping.source_id == source_id)
        .order_by(SourceMapping.version.desc())
        .limit(1)
    ).first()


def _view(session: Session, source: SourceDeclaration) -> SourceView:
    state = session.get(SourceState, source.id)
    assert state is not None
    return SourceView(source, current_mapping(session, source.id), state)


def show_source(veil: Veil, enterprise: Principal, dataset_id: str) -> SourceView | None:
    """The source of the enterprise's own dataset (None: none declared); another's dataset
    answers like a missing one."""
    require(enterprise, Capability.OWN_DATA)
    with veil.db.read() as session:
        owned_dataset(session, enterprise, dataset_id)
        source = session.scalar(
            select(SourceDeclaration).where(SourceDeclaration.dataset_id == dataset_id)
        )
        return None if source is None else _view(session, source)


def list_sources(veil: Veil, enterprise: Principal) -> list[SourceView]:
    """The enterprise's own sources, oldest first (the query names its tenant: no other's)."""
    require(enterprise, Capability.OWN_DATA)
    with veil.db.read() as session:
        sources = session.scalars(
            select(SourceDeclaration)
            .join(Dataset, Dataset.id == SourceDeclaration.dataset_id)
            .where(
                SourceDeclaration.enterprise_id == enterprise.id,
                Dataset.enterprise_id == enterprise.id,
            )
            .order_by(SourceDeclaration.created_at)
        ).all()
        return [_view(session, s) for s in sources]


def open_credentials(veil: Veil, tenant: str, source: SourceDeclaration) -> dict[str, str]:
    """The source's credentials, decrypted in memory for the run that needs them."""
    if source.secrets_wrapped_key is None or source.secrets_ciphertext is None:
        return {}
    plain = veil.keys.decrypt_bytes(
        tenant,
        f"source:{source.id}",
        source.secrets_version,
        source.secrets_wrapped_key,
        base64.b64decode(source.secrets_ciphertext),
    )
    credentials: dict[str, str] = json.loads(plain)
    return credentials
