"""The node's signature on what it sends: each document (a release, a refusal, a grant, a
code decision) names the node and is signed by the node's key server, which the control
plane verifies with the key the node enrolled (``keys.node_auth``)."""

from __future__ import annotations

from typing import Any

from keys import InvalidSignature, key_operation
from keys.node_auth import canonical_json, document_sha256
from keys.signing import Signature, public_keys_from_pem, verify_signature
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


def peer_document(signing_key: str, signed: Any) -> dict[str, Any] | None:
    """The document of another node's ``{"document", "signature"}`` if the key that node
    enrolled with (``signing_key``, PEM, as the control plane relays it) signed it; None
    otherwise.  The caller checks what the document names (node, run, kind)."""
    signed = signed if isinstance(signed, dict) else {}
    document, signature = signed.get("document"), signed.get("signature")
    if not isinstance(document, dict):
        return None
    try:
        sig = Signature.from_text(str(signature))
        key = public_keys_from_pem(str(signing_key)).get(sig.key_version)
        if key is None:
            return None
        verify_signature(key, canonical_json(document), sig)
    except (InvalidSignature, ValueError):
        return None
    return document
