"""A scorecard's format: canonical bytes and the platform's signature (as KPI verdicts).

Verifiable offline with the platform's public signing key (``veil audit public-key``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from keys import Signature
from sandbox.kpi.verdict_format import UNSIGNED, canonical

FORMAT: Final = "veil-scorecard/1"
SIGNING_CONTEXT: Final = b"veil/scorecard\n"


def signed_message(document: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers: every field but ``signature`` and ``key_version``."""
    return SIGNING_CONTEXT + canonical({k: v for k, v in document.items() if k not in UNSIGNED})


def sign_scorecard(body: Mapping[str, Any], sign: Callable[[bytes], Signature]) -> dict[str, Any]:
    """``body`` with its signature and the signing key's version."""
    signature = sign(signed_message(body))
    return {**body, "key_version": signature.key_version, "signature": signature.to_text()}
