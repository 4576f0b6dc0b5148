"""Reviewed code (tier 5) on the node: the enterprise reviews here, and only here.

Each round the node reads the pending code requests on its datasets from the control plane
(``sandbox.nodes.code``).  A request it has not seen is checked again against the node's own
grants and run on the mock in the node's own sandbox (``sandbox.jobs.reviewed_code.submit_code``
on the node's core), and kept here under the control plane's id with the SHA-256 of the
source the node received.  The enterprise approves or denies it on its node (its console or
``veil code approve`` pointed at the node); the node signs the decision and sends it while
the control plane still lists the request as pending.  A tier-5 job runs here only on the
node's own approved copy (``sandbox.jobs.reviewed_code.resolve_code_job``): a request the control
plane marks approved, or whose source it changed, is refused.
"""

from __future__ import annotations

import logging
from typing import Any

from analytics.syft_code import source_sha256
from i18n import Msg
from node.protocol.client import ControlPlane, ControlPlaneRefused
from node.protocol.signing import sign
from policies import audit
from policies.errors import Denied, InvalidRequest, VeilError
from policies.principals import Principal, Role
from sandbox.jobs.reviewed_code import submit_code
from sandbox.nodes.code import PENDING_BATCH
from sandbox.nodes.mirror import checked_id
from sandbox.runtime.veil import Veil
from sandbox.store.models import CodeRequest, CodeStatus, Dataset

log = logging.getLogger(__name__)


def decision_document(code: CodeRequest) -> dict[str, Any]:
    return {
        "kind": "code_decision",
        "id": code.id,
        "sha256": code.sha256,
        "approved": code.status == CodeStatus.APPROVED,
        "reason": code.review_reason or "",
    }


class CodeDesk:
    """Takes the control plane's pending code requests and sends back the decisions."""

    def __init__(self, veil: Veil, control: ControlPlane, node_id: str, enterprise_id: str):
        self.veil, self.control = veil, control
        self.node_id, self.enterprise_id = node_id, enterprise_id
        self._unsendable: set[str] = set()  # decisions the control plane will never take

    def sync(self) -> int:
        """Take new requests and send the decisions the control plane waits for; how many
        requests were taken or decisions sent."""
        done, after = 0, ""
        while True:
            path = "/node/v1/code-requests" + (f"?after={after}" if after else "")
            documents = self.control.call("GET", path) or []
            for document in documents:
                done += self._one(document)
            if len(documents) < PENDING_BATCH:
                return done
            after = str(documents[-1].get("id", ""))

    def _one(self, document: dict[str, Any]) -> int:
        try:
            code_id = checked_id(document.get("id"), "code request")
        except InvalidRequest:
            return 0
        with self.veil.db.read() as session:
            local = session.get(CodeRequest, code_id)
            known = local is not None
        if not known and not self._take(code_id, document):
            return 0
        with self.veil.db.read() as session:
            local = session.get(CodeRequest, code_id)
            assert local is not None
            if local.status == CodeStatus.PENDING or code_id in self._unsendable:
                return 0 if known else 1
            decision = decision_document(local)
        signed = sign(self.veil, self.node_id, decision)
        try:
            self.control.call("POST", f"/node/v1/code-requests/{code_id}/decision", signed)
        except ControlPlaneRefused as exc:
            if exc.status >= 500:
                raise
            # e.g. its copy's source is not the one the node reviewed: kept here, not sent
            # again; the request stays pending there and never runs here unapproved.
            log.warning("the control plane refused the decision on %s: %s", code_id, exc.code)
            self._unsendable.add(code_id)
        return 1

    def _take(self, code_id: str, document: dict[str, Any]) -> bool:
        """Check and keep a new request (pending, or denied by the node); False when its
        provider is not mirrored here yet (taken in a later round)."""
        with self.veil.db.read() as session:
            provider = session.get(Principal, str(document.get("provider_id", "")))
            if provider is None or provider.role != Role.PROVIDER:
                return False
            session.expunge(provider)
        try:
            submit_code(
                self.veil, provider, str(document["dataset_id"]), str(document["purpose"]),
                str(document["source"]), request_id=code_id,
            )  # fmt: skip
        except (KeyError, TypeError):
            self._refuse(code_id, provider, document, Msg("the code request is incomplete"))
        except Denied as exc:
            self._refuse(code_id, provider, document, "; ".join(exc.reasons))
        except VeilError as exc:
            self._refuse(code_id, provider, document, exc.message)
        return True

    def _refuse(
        self, code_id: str, provider: Principal, document: dict[str, Any], reason: str
    ) -> None:
        """Keep a request this node refuses as denied (with why), for the control plane."""
        source = str(document.get("source", ""))
        text = Msg("refused by the enterprise's node: {reason}", reason=reason)
        now = self.veil.clock()
        with self.veil.db.transaction() as session:
            dataset = session.get(Dataset, str(document.get("dataset_id", "")))
            session.add(
                CodeRequest(
                    id=code_id,
                    provider_id=provider.id,
                    enterprise_id=self.enterprise_id,
                    dataset_id=dataset.id if dataset is not None else "",
                    purpose=str(document.get("purpose", ""))[:64],
                    function_name="",
                    source=source,
                    sha256=source_sha256(source),
                    columns=[],
                    status=CodeStatus.DENIED,
                    review_reason=text,
                    created_at=now,
                    decided_at=now,
                )
            )
            audit.record(
                session,
                "code.refused",
                outcome=audit.Outcome.DENIED,
                tenant_id=self.enterprise_id,
                resource=f"code:{code_id}",
                details={"reason": reason, "provider_id": provider.id},
            )
