"""An evidence pack's format and its offline verification (no server, public keys only).

A pack (``veil-evidence-pack/1``) holds, for one grant: its commitment letter (both
signatures), a usage receipt of the provider's use of the enterprise's data (signed), and
a signed export of the audit log from the grant's creation to the pack's issue, elided to
the enterprise's events (:mod:`policies.audit_export`).  The key server's platform key
signs ``b"veil/evidence-pack\\n"`` + canonical JSON of every field but ``signature`` and
``key_version``.  :func:`verify_pack` checks the pack's signature, each part with its own
verifier, and that the parts belong together: the same grant, enterprise and provider, and
the audit range holds the letter's ``letter.signed`` event and the receipt's
``receipt.issued`` event with the SHA-256 of exactly these documents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from i18n import Msg
from keys import InvalidSignature, Signature, SigningPublicKey, verify_signature
from policies.audit_export import verify_export
from policies.errors import InvalidRequest
from policies.letter_format import letter_sha256, verify_letter
from sandbox.oversight.receipt_format import canonical, receipt_sha256, verify_receipt

FORMAT: Final = "veil-evidence-pack/1"
SIGNING_CONTEXT: Final = b"veil/evidence-pack\n"
UNSIGNED: Final = ("signature", "key_version")


class InvalidPack(InvalidRequest):
    """A pack that cannot be checked, or whose parts do not belong together."""


def signed_message(pack: Mapping[str, Any]) -> bytes:
    return SIGNING_CONTEXT + canonical({k: v for k, v in pack.items() if k not in UNSIGNED})


def sign_pack(body: Mapping[str, Any], sign: Callable[[bytes], Signature]) -> dict[str, Any]:
    signature = sign(signed_message(body))
    return {**body, "key_version": signature.key_version, "signature": signature.to_text()}


def dumps(pack: Mapping[str, Any]) -> str:
    return json.dumps(pack, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def load_pack(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidPack(Msg("the file is not an evidence pack's JSON"))
    return value


def verify_pack(pack: Mapping[str, Any], keys: Mapping[int, SigningPublicKey]) -> dict[str, Any]:
    """Return a summary if the pack and every part verify and belong together; raise
    :class:`keys.InvalidSignature` (altered) or :class:`InvalidPack` otherwise."""
    if not isinstance(pack, Mapping) or pack.get("format") != FORMAT:
        raise InvalidPack(
            Msg("not a Veil evidence pack (its format must be '{format}')", format=FORMAT)
        )
    text = pack.get("signature")
    if not isinstance(text, str):
        raise InvalidPack(Msg("the evidence pack has no signature"))
    signature = Signature.from_text(text)
    if signature.to_text() != text or pack.get("key_version") != signature.key_version:
        raise InvalidSignature()
    key = keys.get(signature.key_version)
    if key is None:
        raise InvalidPack(
            Msg(
                "no public key of version {key_version} was given; export every version "
                "with 'veil audit public-key'",
                key_version=signature.key_version,
            )
        )
    verify_signature(key, signed_message(pack), signature)
    letter, receipt, lines = pack.get("letter"), pack.get("receipt"), pack.get("audit_export")
    if not isinstance(letter, dict) or not isinstance(receipt, dict) or not isinstance(lines, list):
        raise InvalidPack(Msg("the evidence pack lacks its letter, receipt or audit export"))
    verify_letter(letter, keys)
    verify_receipt(receipt, keys)
    report = verify_export([str(line) for line in lines], keys)
    if not report.ok:
        raise InvalidPack(
            Msg("the audit export in the pack does not verify: {problem}", problem=report.problem)
        )
    _belong_together(pack, letter, receipt, lines)
    return {
        "pack": pack.get("id"),
        "grant": pack.get("grant_id"),
        "enterprise": letter["enterprise"].get("name"),
        "provider": letter["provider"].get("name"),
        "letter": letter.get("id"),
        "receipt": receipt.get("id"),
        "receipt_jobs": len(receipt.get("jobs", [])),
        "audit_range": f"{report.from_seq}-{report.to_seq}",
        "audit_events": report.events,
    }


def _belong_together(
    pack: Mapping[str, Any], letter: dict[str, Any], receipt: dict[str, Any], lines: list[Any]
) -> None:
    grant = pack.get("grant_id")
    same = (
        letter.get("grant", {}).get("id") == grant
        and letter.get("enterprise", {}).get("id") == receipt.get("enterprise", {}).get("id")
        and letter.get("provider", {}).get("id") == receipt.get("provider", {}).get("id")
    )
    events = [json.loads(str(line)) for line in lines[1:]]
    signed = any(
        e.get("type") == "event"
        and e.get("action") == "letter.signed"
        and e.get("resource") == f"grant:{grant}"
        and e.get("details", {}).get("letter_sha256") == letter_sha256(letter)
        for e in events
    )
    issued = any(
        e.get("type") == "event"
        and e.get("action") == "receipt.issued"
        and e.get("resource") == f"receipt:{receipt.get('id')}"
        and e.get("details", {}).get("receipt_sha256") == receipt_sha256(receipt)
        for e in events
    )
    if not (same and signed and issued):
        raise InvalidPack(
            Msg(
                "the parts of the evidence pack do not belong together: the letter, the "
                "receipt and the audit events must name the same grant and documents"
            )
        )
