"""A scorecard's format: canonical bytes and the platform's signature (as KPI verdicts).

Verifiable offline with the platform's public signing key (``veil audit public-key``).

A document (``sandbox.scorecards.periods``) names the period, the provider, each component
with what it rests on, the weights, the pass mark, the score, the result and the reasons.
``components.assessors`` is the mean of the registered third-party assessors' scores and
lists each one's assessment: ``assessor_id`` (the assessor's principal), ``assessor`` (its
name), ``assessor_status`` (``suspended`` when the bureau suspended it after it recorded:
its score, recorded while it was active, still counts), ``score``, ``reason`` and
``recorded_at``; ``components.bureau`` is the bureau's own score and reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from i18n import Msg
from keys import InvalidSignature, Signature, SigningPublicKey, verify_signature
from policies.errors import VeilError
from sandbox.kpi.verdict_format import UNSIGNED, canonical

FORMAT: Final = "veil-scorecard/1"
SIGNING_CONTEXT: Final = b"veil/scorecard\n"


class InvalidScorecard(VeilError):
    """A scorecard that cannot be checked: not one, unsigned, or no key for its version."""


def signed_message(document: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers: every field but ``signature`` and ``key_version``."""
    return SIGNING_CONTEXT + canonical({k: v for k, v in document.items() if k not in UNSIGNED})


def sign_scorecard(body: Mapping[str, Any], sign: Callable[[bytes], Signature]) -> dict[str, Any]:
    """``body`` with its signature and the signing key's version."""
    signature = sign(signed_message(body))
    return {**body, "key_version": signature.key_version, "signature": signature.to_text()}


def verify_scorecard(document: Any, public_keys: Mapping[int, SigningPublicKey]) -> None:
    """Return if ``document`` is an unaltered scorecard signed by one of ``public_keys``.

    Raises :class:`InvalidScorecard` when it cannot be checked and
    :class:`keys.InvalidSignature` when it was altered (or signed by another key).
    """
    if not isinstance(document, Mapping) or document.get("format") != FORMAT:
        raise InvalidScorecard(
            Msg("not a Veil scorecard (its format must be '{format}')", format=FORMAT)
        )
    text = document.get("signature")
    if not isinstance(text, str):
        raise InvalidScorecard(Msg("the scorecard has no signature"))
    signature = Signature.from_text(text)
    if document.get("key_version") != signature.key_version:
        raise InvalidSignature()
    key = public_keys.get(signature.key_version)
    if key is None:
        raise InvalidScorecard(
            Msg(
                "no public key of version {key_version} was given; export every version "
                "with 'veil audit public-key'",
                key_version=signature.key_version,
            )
        )
    verify_signature(key, signed_message(document), signature)
