"""The node's signature on what it sends: each document (a release, a refusal, a grant, a
code decision) names the node and is signed by the node's key server, which the control
plane verifies with the key the node enrolled (``keys.node_auth``)."""

from __future__ import annotations

from typing import Any

from keys import key_operation
from keys.node_auth import canonical_json, document_sha256
from policies import audit
from sandbox.runtime.veil import Veil


def sign(veil: Veil, node_id: str, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (naming this node) and its signature by the node's key server.

    Each signature is audited (``node.signed``) and tagged in the key server's log, so
    ``veil audit keys`` on the node explains every use of its signing key."""
    document = {**document, "node_id": node_id}
    ident = document.get("job_id") or document.get("id") or "document"
    tag = f"node:{document.get('kind', 'document')}-{ident}"[:120]
    with key_operation(f"{tag}/1"):
        signature = veil.keys.sign(canonical_json(document)).to_text()
    with veil.db.transaction() as session:
        audit.record(session, "node.signed", resource=tag,
                     details={"sha256": document_sha256(document)})  # fmt: skip
    return {"document": document, "signature": signature}
