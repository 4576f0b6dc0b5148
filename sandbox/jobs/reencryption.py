"""Switching a deployment's crypto profile: the audit chain's hash, then every stored object
re-encrypted under the profile's algorithms (``veil keys migrate``; ``docs/keys.md``).

What is re-encrypted — everything Veil stores encrypted under an enterprise's key:

* ``dataset``: each dataset version's object (``dataset:<id>``, its version);
* ``model``: a released model's weights (``job:<id>``, version 1);
* ``held``: a held tier-5 output (``held:<id>``, version 1);
* ``cellkey``: a dataset's cell-key secret (wrapped only; the secret itself is kept, so
  every perturbed cell keeps its value).

Each object is decrypted in memory with the key that made it, encrypted to a **new** file
under a fresh data key of the current profile, and switched over in one transaction that
records ``object.reencrypted`` — only where the stored wrapped key is still the one that was
read (an object changed meanwhile is left for the next run); the old file is deleted after
that commit.  A crash leaves either the old object in place or the new one (at worst an
orphan file no row names).  So the migration is **resumable**: a second run takes whatever
is still of the other profile.  An object that cannot be read (damaged, or its key retired)
is recorded as failed and kept as it is; the run goes on with the others.

Which objects a profile still has to migrate is read from the wrapped keys themselves
(``keys.profile.wrapped_key_profile``): nothing else marks them.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from i18n import Msg
from keys import CryptoProfile, DecryptionError, key_operation
from keys.profile import wrapped_key_profile
from policies import audit
from policies.db import new_id
from policies.errors import Conflict
from policies.principals import Principal
from sandbox.data.objects import write_encrypted
from sandbox.jobs.artifacts import ARTIFACT_VERSION
from sandbox.jobs.held_outputs import HELD_VERSION
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, DatasetVersion, Job

KINDS: Final = ("dataset", "model", "held", "cellkey")


@dataclass(frozen=True)
class StoredItem:
    """One thing stored under an enterprise's key."""

    kind: str  # one of KINDS
    row: str  # the dataset version's, job's or dataset's id
    enterprise_id: str
    tenant: str  # the enterprise's name in the key server
    object_id: str  # what its ciphertext is bound to, e.g. dataset:ds_1
    version: int
    wrapped_key: str
    path: str | None  # relative to the objects directory; None for a cell-key secret

    @property
    def profile(self) -> CryptoProfile | None:
        return wrapped_key_profile(self.wrapped_key)


@dataclass
class Migration:
    """What one run did: its id, the profile it migrated to, and what happened to each kind."""

    id: str
    profile: CryptoProfile
    chain_switched: bool = False
    reencrypted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    changed_meanwhile: int = 0
    failed: list[str] = field(default_factory=list)  # "<kind> <object id> v<version>"
    remaining: int = 0

    @property
    def done(self) -> bool:
        return not self.failed and self.remaining == 0


def stored_items(session: Session) -> list[StoredItem]:
    """Every object and secret stored under an enterprise's key (node-held datasets' rows on
    the control plane hold none and are skipped)."""
    slugs = dict(session.execute(select(Principal.id, Principal.slug)).tuples().all())
    items: list[StoredItem] = []
    for v, enterprise_id in session.execute(
        select(DatasetVersion, Dataset.enterprise_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(DatasetVersion.wrapped_key != "")
        .order_by(DatasetVersion.id)
    ).tuples():
        items.append(StoredItem("dataset", v.id, enterprise_id, slugs.get(enterprise_id) or "",
                                f"dataset:{v.dataset_id}", v.version, v.wrapped_key,
                                v.object_path))  # fmt: skip
    for job in session.scalars(
        select(Job).where(Job.artifact_wrapped_key.is_not(None)).order_by(Job.id)
    ):
        assert job.artifact_wrapped_key is not None and job.artifact_path is not None
        assert job.enterprise_id is not None  # a stored object is always an enterprise's
        held = Path(job.artifact_path).parent.name == "held"
        kind, obj, version = (
            ("held", f"held:{job.id}", HELD_VERSION)
            if held
            else ("model", f"job:{job.id}", ARTIFACT_VERSION)
        )
        items.append(StoredItem(kind, job.id, job.enterprise_id,
                                slugs.get(job.enterprise_id) or "", obj, version,
                                job.artifact_wrapped_key, job.artifact_path))  # fmt: skip
    for dataset in session.scalars(
        select(Dataset).where(Dataset.cellkey_wrapped.is_not(None)).order_by(Dataset.id)
    ):
        assert dataset.cellkey_wrapped is not None
        items.append(StoredItem("cellkey", dataset.id, dataset.enterprise_id,
                                slugs.get(dataset.enterprise_id) or "",
                                f"cellkey:{dataset.id}", 1, dataset.cellkey_wrapped,
                                None))  # fmt: skip
    return items


def census(session: Session) -> dict[str, dict[str, int]]:
    """How many stored items of each kind each profile holds: {profile: {kind: n}} (a key
    of neither profile would count under ``unknown``)."""
    counts: dict[str, dict[str, int]] = {str(p): dict.fromkeys(KINDS, 0) for p in CryptoProfile}
    for item in stored_items(session):
        counts.setdefault(str(item.profile or "unknown"), dict.fromkeys(KINDS, 0))[item.kind] += 1
    return counts


def pending(session: Session, profile: CryptoProfile) -> list[StoredItem]:
    """The stored items not yet under ``profile``.  Cell-key secrets wrapped by an SM4 KEK
    stay so under the standard profile (transit wraps only the keys it makes itself, and
    the secret must be kept): they are readable whatever the profile."""
    return [
        item
        for item in stored_items(session)
        if item.profile is not profile
        and not (profile is CryptoProfile.STANDARD and item.kind == "cellkey")
    ]


class ProfileNotMigrated(Conflict):
    """The deployment's stored data is under another profile than the one it is started with."""


def check_profile(veil: Veil) -> bool:
    """At start: switch the audit chain to ``veil.keys.profile`` by itself when nothing stored
    needs re-encrypting (a new deployment, or one with no data yet); return whether it
    switched.  Otherwise raise :class:`ProfileNotMigrated`, which says to run
    ``veil keys migrate``: a deployment's data is switched by that command only."""
    profile = veil.keys.profile
    with veil.db.transaction() as session:
        left = pending(session, profile)
        if left:
            raise ProfileNotMigrated(
                Msg(
                    "this deployment stores {count} object(s) encrypted under another crypto "
                    "profile than VEIL_CRYPTO_PROFILE={profile}: run `veil keys migrate` "
                    "with that setting to re-encrypt them (resumable), or start Veil with the "
                    "profile they are in",
                    count=len(left),
                    profile=str(profile),
                )
            )
        return audit.switch_chain_hash(session, profile, actor=None)


def migrate(
    veil: Veil,
    actor: Principal | None = None,
    *,
    progress: Callable[[int, int, StoredItem], None] | None = None,
) -> Migration:
    """Switch the deployment to ``veil.keys.profile`` (see the module); audited.

    ``progress(done, total, item)`` is called before each item.  Raises what the key server
    raises when it is unavailable (after recording the run as failed): run it again later.
    """
    profile = veil.keys.profile
    run = Migration(new_id("mig"), profile)
    started = veil.clock()
    with veil.db.transaction() as session:
        run.chain_switched = audit.switch_chain_hash(session, profile, actor=actor)
        todo = pending(session, profile)
        audit.record(session, "crypto.migration_started", actor=actor,
                     details={"migration": run.id, "profile": str(profile),
                              "pending": len(todo)})  # fmt: skip
    try:
        if profile is CryptoProfile.GM:
            _prepare_tenants(veil, actor, run, todo, started.isoformat())
        for done, item in enumerate(todo):
            if progress is not None:
                progress(done, len(todo), item)
            _migrate_one(veil, actor, run, item, started.isoformat())
    except Exception:
        _finish(veil, actor, run, outcome=audit.Outcome.FAILED)
        raise
    _finish(veil, actor, run, outcome=audit.Outcome.OK)
    return run


def _prepare_tenants(
    veil: Veil, actor: Principal | None, run: Migration, todo: list[StoredItem], started: str
) -> None:
    """Give each enterprise with something to migrate its SM4 key-encryption key (and its
    key-server policy the lines for it) first, tagged ``migration:<id>/1`` and audited
    ``crypto.tenant_prepared``, so that ``veil audit keys`` explains those requests."""
    tenants = sorted({(item.enterprise_id, item.tenant) for item in todo})
    with key_operation(f"migration:{run.id}/1"):
        for enterprise_id, tenant in tenants:
            veil.keys.ensure_tenant_kek(tenant)
            with veil.db.transaction() as session:
                audit.record(session, "crypto.tenant_prepared", actor=actor,
                             tenant_id=enterprise_id, resource=f"principal:{enterprise_id}",
                             details={"migration": run.id, "started_at": started,
                                      "profile": str(run.profile)})  # fmt: skip


def _finish(veil: Veil, actor: Principal | None, run: Migration, *, outcome: audit.Outcome) -> None:
    with veil.db.transaction() as session:
        run.remaining = len(pending(session, run.profile))
        audit.record(session, "crypto.migration_finished", actor=actor, outcome=outcome,
                     details={"migration": run.id, "profile": str(run.profile),
                              "reencrypted": run.reencrypted, "failed": len(run.failed),
                              "changed_meanwhile": run.changed_meanwhile,
                              "remaining": run.remaining})  # fmt: skip
    veil.checkpoint()


def _migrate_one(
    veil: Veil, actor: Principal | None, run: Migration, item: StoredItem, started: str
) -> None:
    digests: dict[str, object] = {}
    new_path: str | None = None
    try:
        if item.kind == "cellkey":
            new_key = _rewrap_secret(veil, item)
        else:
            new_key, new_path, digests = _reencrypt_object(veil, item)
    except (DecryptionError, OSError) as exc:
        # Damaged, its key retired, or its file gone: kept as it is, for someone to look at.
        error = ("it cannot be decrypted with its key" if isinstance(exc, DecryptionError)
                 else "its file cannot be read")  # fmt: skip
        run.failed.append(f"{item.kind} {item.object_id} v{item.version}: {error}")
        with veil.db.transaction() as session:
            audit.record(session, "object.reencrypted", actor=actor, outcome=audit.Outcome.FAILED,
                         tenant_id=item.enterprise_id, resource=item.object_id,
                         details={"migration": run.id, "started_at": started, "kind": item.kind,
                                  "version": item.version, "error": error})  # fmt: skip
        return
    with veil.db.transaction() as session:
        saved = _save(session, item, new_key, new_path, digests)
        if saved:
            audit.record(session, "object.reencrypted", actor=actor,
                         tenant_id=item.enterprise_id, resource=item.object_id,
                         details={"migration": run.id, "started_at": started, "kind": item.kind,
                                  "version": item.version, "profile": str(run.profile),
                                  **digests})  # fmt: skip
    if not saved:  # changed meanwhile: keep what is stored, drop what was made
        run.changed_meanwhile += 1
        if new_path is not None:
            (veil.settings.objects_dir / new_path).unlink(missing_ok=True)
        return
    run.reencrypted[item.kind] += 1
    if item.path is not None:
        (veil.settings.objects_dir / item.path).unlink(missing_ok=True)


def _reencrypt_object(veil: Veil, item: StoredItem) -> tuple[str, str, dict[str, object]]:
    assert item.path is not None
    plain = io.BytesIO()
    with open(veil.settings.objects_dir / item.path, "rb") as src:
        veil.keys.decrypt_stream(
            item.tenant, item.object_id, item.version, item.wrapped_key, src, plain
        )
    old = Path(item.path)
    stem = old.stem.rsplit("-", 1)[0] if item.kind == "dataset" else old.stem.split("-")[0]
    relative = old.with_name(f"{stem}-{secrets.token_hex(4)}.veil")
    stored = write_encrypted(
        veil, item.tenant, item.object_id, item.version, plain.getvalue(), relative
    )
    return (
        stored.wrapped_key,
        stored.path,
        {
            "ciphertext_sha256": stored.ciphertext_sha256,
            "size_bytes": stored.size,
        },
    )


def _rewrap_secret(veil: Veil, item: StoredItem) -> str:
    secret = veil.keys.open_secret(item.tenant, item.object_id, item.version, item.wrapped_key)
    return veil.keys.wrap_secret(item.tenant, item.object_id, item.version, secret)


def _save(
    session: Session,
    item: StoredItem,
    new_key: str,
    new_path: str | None,
    digests: dict[str, object],
) -> bool:
    """Store the new wrapped key (and object) where the stored key is still the old one."""
    if item.kind == "dataset":
        statement = (
            update(DatasetVersion)
            .where(DatasetVersion.id == item.row, DatasetVersion.wrapped_key == item.wrapped_key)
            .values(
                wrapped_key=new_key,
                object_path=new_path,
                ciphertext_sha256=digests["ciphertext_sha256"],
                size_bytes=digests["size_bytes"],
            )
        )
    elif item.kind == "cellkey":
        statement = (
            update(Dataset)
            .where(Dataset.id == item.row, Dataset.cellkey_wrapped == item.wrapped_key)
            .values(cellkey_wrapped=new_key)
        )
    else:
        statement = (
            update(Job)
            .where(Job.id == item.row, Job.artifact_wrapped_key == item.wrapped_key)
            .values(artifact_wrapped_key=new_key, artifact_path=new_path)
        )
    return bool(session.execute(statement.execution_options(synchronize_session=False)).rowcount)
