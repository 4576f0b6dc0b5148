"""Rotating an enterprise's key: a new version of its transit key, and every data key Veil
stores for it rewrapped under that version, audited ``key.rotated``.

Steps: rotate the key in the key server (new data keys use the new version), read every
wrapped data key of the enterprise (its dataset versions, its released models), rewrap them
inside the key server (no data key leaves it, no bulk data is touched), and save each one in
the transaction that records ``key.rotated`` — only where the stored key is still the one
that was rewrapped, so an upload or a model stored meanwhile is left as it is.  Older key
versions keep decrypting (they are not retired here): whatever raced the rotation stays
readable.  ``KeyService.retire_key_versions_below`` retires them once nothing stored uses
them.

Every key-server request of a rotation carries the tag ``rotation:<id>/1``, and the event
records the rotation's id and when it started, so ``veil audit keys`` explains exactly
those requests.  A rotation that fails records ``key.rotated`` with outcome ``failed``
before the error is raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keys import key_operation
from policies import audit
from policies.db import new_id
from policies.errors import NotFound
from policies.principals import Principal, Role
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, DatasetVersion, Job


@dataclass(frozen=True)
class Rotation:
    """A finished rotation: its id, the key version new data keys use, how many stored data
    keys were rewrapped."""

    id: str
    version: int
    rewrapped: int


def rotate_enterprise_key(veil: Veil, actor: Principal | None, enterprise_id: str) -> Rotation:
    """Rotate ``enterprise_id``'s key and rewrap its stored data keys (see the module).

    ``actor`` None: the operator of this machine (the local CLI).
    """
    rotation_id, started = new_id("rot"), veil.clock()
    with veil.db.read() as session:
        enterprise = session.get(Principal, enterprise_id)
        if enterprise is None or enterprise.role != Role.ENTERPRISE or not enterprise.slug:
            raise NotFound("enterprise", enterprise_id)
        slug = enterprise.slug
        stored = _wrapped_keys(session, enterprise_id)
    details = {"rotation": rotation_id, "started_at": started.isoformat()}
    try:
        with key_operation(f"rotation:{rotation_id}/1"):
            version = veil.keys.rotate_tenant_key(slug)
            rewrapped = veil.keys.rewrap_data_keys(slug, [wrapped for _, _, wrapped in stored])
        with veil.db.transaction() as session:
            saved = sum(
                _save(session, kind, ident, old, new)
                for (kind, ident, old), new in zip(stored, rewrapped, strict=True)
            )
            audit.record(
                session,
                "key.rotated",
                actor=actor,
                tenant_id=enterprise_id,
                resource=f"principal:{enterprise_id}",
                details=details | {"version": version, "rewrapped": saved},
            )
    except Exception:
        with veil.db.transaction() as session:
            audit.record(
                session,
                "key.rotated",
                actor=actor,
                outcome=audit.Outcome.FAILED,
                tenant_id=enterprise_id,
                resource=f"principal:{enterprise_id}",
                details=details | {"error": "the rotation did not finish; run it again"},
            )
        raise
    return Rotation(rotation_id, version, saved)


def _wrapped_keys(session: Session, enterprise_id: str) -> list[tuple[str, str, str]]:
    """(kind, row id, wrapped key) of every data key stored for the enterprise."""
    versions = session.execute(
        select(DatasetVersion.id, DatasetVersion.wrapped_key)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(Dataset.enterprise_id == enterprise_id)
        .order_by(DatasetVersion.id)
    )
    models = session.execute(
        select(Job.id, Job.artifact_wrapped_key)
        .where(Job.enterprise_id == enterprise_id, Job.artifact_wrapped_key.is_not(None))
        .order_by(Job.id)
    )
    return [("dataset", i, w) for i, w in versions] + [("model", i, w) for i, w in models if w]


def _save(session: Session, kind: str, ident: str, old: str, new: str) -> int:
    """Store one rewrapped key where the stored one is still ``old``; 1 if saved."""
    if kind == "dataset":
        statement = (
            update(DatasetVersion)
            .where(DatasetVersion.id == ident, DatasetVersion.wrapped_key == old)
            .values(wrapped_key=new)
        )
    else:
        statement = (
            update(Job)
            .where(Job.id == ident, Job.artifact_wrapped_key == old)
            .values(artifact_wrapped_key=new)
        )
    return int(session.execute(statement.execution_options(synchronize_session=False)).rowcount)
