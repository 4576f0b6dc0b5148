"""What the node tells the control plane: its signing public keys, its catalog (declarations
and public row counts, never data), its grants (signed by the node's key server), its
equipment's daily counts (``node.catalog.liveness``), and the provider directory it takes
back.  Each is sent when it changed since it was last sent."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from sqlalchemy import select

from keys.node_auth import canonical_json
from node.catalog import letters
from node.catalog.liveness import LivenessReporter
from node.protocol.client import ControlPlane, ControlPlaneRefused
from node.protocol.signing import sign
from policies.grants import DELTA_UNIT, EPSILON_UNIT, Grant
from policies.principals import Principal, Role, Status
from sandbox.data.datasets import rounded_count
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, DatasetVersion


def dataset_document(dataset: Dataset, versions: list[DatasetVersion]) -> dict[str, Any]:
    return {
        "id": dataset.id,
        "name": dataset.name,
        "declaration": dataset.declaration,
        "classification": dataset.classification,
        "epsilon_cap": dataset.epsilon_cap / EPSILON_UNIT,
        "delta_cap": dataset.delta_cap / DELTA_UNIT,
        "versions": [
            {
                "version": v.version,
                "rows_public": rounded_count(v.row_count),  # never the exact count
                "created_at": v.created_at.isoformat(),
            }
            for v in versions
        ],
    }


def grant_document(grant: Grant) -> dict[str, Any]:
    return {
        "kind": "grant",
        "id": grant.id,
        "enterprise_id": grant.enterprise_id,
        "provider_id": grant.provider_id,
        "dataset_ids": list(grant.dataset_ids),
        "columns": list(grant.columns),
        "tiers": list(grant.tiers),
        "purposes": list(grant.purposes),
        "valid_from": grant.valid_from.isoformat(),
        "valid_until": grant.valid_until.isoformat(),
        "min_group_size": grant.min_group_size,
        "epsilon_budget": grant.epsilon_budget,
        "delta_budget": grant.delta_budget,
        "revoked_at": grant.revoked_at.isoformat() if grant.revoked_at else None,
        "letter_required": grant.letter_required,
    }


log = logging.getLogger(__name__)

#: How often the provider directory is read again (a new provider is grantable on the node
#: within this long).
PROVIDERS_EVERY_S = 5.0
#: How often the node's signing public keys are read again from its key server: a version
#: made while the link runs (a rotation) reaches the control plane within this long; one
#: made before the link started (``veil keys migrate``), in the link's first round.
KEYS_EVERY_S = 30.0


class Publisher:
    """Sends what changed; remembers (in memory) the digest of what was sent."""

    def __init__(self, veil: Veil, control: ControlPlane, node_id: str) -> None:
        self.veil, self.control, self.node_id = veil, control, node_id
        self._sent: dict[str, str] = {}
        self._providers_at: float | None = None
        self._keys_at: float | None = None
        self.signatures = letters.SignatureDesk(veil, control)
        self.liveness = LivenessReporter(veil, control, node_id)

    def _changed(self, key: str, document: Any) -> bool:
        digest = hashlib.sha256(canonical_json(document)).hexdigest()
        if self._sent.get(key) == digest:
            return False
        self._sent[key] = digest
        return True

    def publish_keys(self) -> int:
        """Send every version of the node's signing public key when they changed since sent
        (read at the link's first round, then every ``KEYS_EVERY_S``), before any document
        they sign: the control plane checks those with the keys it holds, and takes new
        versions only, never a change to one it has.  How many were sent (0 or 1)."""
        now = time.monotonic()
        if self._keys_at is not None and now - self._keys_at < KEYS_EVERY_S:
            return 0
        pem = "".join(k.to_pem() for k in self.veil.keys.signing_public_keys())
        self._keys_at = now
        if not self._changed("signing-keys", pem):
            return 0
        try:
            self.control.call("PUT", "/node/v1/signing-keys", {"signing_keys": pem})
        except ControlPlaneRefused as exc:
            if exc.status >= 500 or exc.code == "signing_keys_changed":
                self._sent.pop("signing-keys", None)  # sent again next time
                raise
            # Not sent again until the keys change: the control plane's operator and this
            # node's must look (the documents a refused version signs are refused there).
            log.error("the control plane refused this node's signing keys: %s", exc)
            return 0
        except Exception:
            self._sent.pop("signing-keys", None)
            raise
        return 1

    def sync(self) -> int:
        """Providers in (every ``PROVIDERS_EVERY_S``), then datasets, grants and commitment
        letters out when they changed, and the providers' signatures of letters in (each
        checked here); how many documents were sent or taken."""
        now = time.monotonic()
        if self._providers_at is None or now - self._providers_at >= PROVIDERS_EVERY_S:
            self.mirror_providers(self.control.call("GET", "/node/v1/providers"))
            self._providers_at = now
        sent = 0
        with self.veil.db.read() as session:
            datasets = list(session.scalars(select(Dataset).order_by(Dataset.created_at)))
            versions = {
                d.id: list(
                    session.scalars(
                        select(DatasetVersion)
                        .where(DatasetVersion.dataset_id == d.id)
                        .order_by(DatasetVersion.version)
                    )
                )
                for d in datasets
            }
            grants = list(session.scalars(select(Grant).order_by(Grant.created_at)))
            docs = [(d.id, dataset_document(d, versions[d.id])) for d in datasets]
            grant_docs = [grant_document(g) for g in grants]
        for dataset_id, doc in docs:
            if self._changed(f"dataset:{dataset_id}", doc):
                try:
                    self.control.call("PUT", f"/node/v1/datasets/{dataset_id}", doc)
                except Exception:
                    self._sent.pop(f"dataset:{dataset_id}", None)
                    raise
                sent += 1
        for doc in grant_docs:
            if self._changed(f"grant:{doc['id']}", doc):
                try:
                    signed = sign(self.veil, self.node_id, doc)
                    self.control.call("PUT", f"/node/v1/grants/{doc['id']}", signed)
                except Exception:
                    self._sent.pop(f"grant:{doc['id']}", None)
                    raise
                sent += 1
        for doc in letters.documents(self.veil):
            if self._changed(f"letter:{doc['id']}", doc):
                try:
                    letters.publish(self.veil, self.control, self.node_id, doc)
                except Exception:
                    self._sent.pop(f"letter:{doc['id']}", None)
                    raise
                sent += 1
        sent += self.liveness.report()  # the equipment online rate's daily counts
        return sent + self.signatures.sync()

    def mirror_providers(self, providers: list[dict[str, Any]]) -> None:
        """Keep a row for each provider (id, name, status) so grants can name them here,
        and the keys it registered to sign commitment letters (so letters issued here name
        them); a provider has no token on the node and cannot sign in to it."""
        with self.veil.db.transaction() as session:
            for entry in providers:
                ident, name = str(entry["id"]), str(entry["name"])[:200]
                state = Status(entry.get("status", Status.ACTIVE))
                row = session.get(Principal, ident)
                if row is None:
                    session.add(Principal(id=ident, role=Role.PROVIDER, name=name, status=state))
                elif row.role == Role.PROVIDER:
                    row.name, row.status = name, state
                else:
                    continue
                session.flush()
                letters.mirror_keys(session, ident, entry.get("letter_keys"))
