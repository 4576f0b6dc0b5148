"""A KPI verdict's format: canonical bytes, signature, offline verification.

Nothing here needs the server: ``veil kpi verify`` checks a verdict file with the
platform's public signing key alone (``veil keys public-key``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from i18n import Msg
from keys import InvalidSignature, Signature, SigningPublicKey, verify_signature
from policies.errors import VeilError

FORMAT: Final = "veil-kpi-verdict/1"
SIGNING_CONTEXT: Final = b"veil/kpi-verdict\n"
UNSIGNED: Final = ("signature", "key_version")


class InvalidVerdict(VeilError):
    """A verdict that cannot be checked: not a verdict, unsigned, or no key for its version."""


def canonical(value: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signed_message(verdict: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers: every field but ``signature`` and ``key_version``."""
    return SIGNING_CONTEXT + canonical({k: v for k, v in verdict.items() if k not in UNSIGNED})


def sign_verdict(body: Mapping[str, Any], sign: Callable[[bytes], Signature]) -> dict[str, Any]:
    """``body`` with its signature and the signing key's version."""
    signature = sign(signed_message(body))
    return {**body, "key_version": signature.key_version, "signature": signature.to_text()}


def verify_verdict(verdict: Any, public_keys: Mapping[int, SigningPublicKey]) -> None:
    """Return if ``verdict`` is unaltered and signed by one of ``public_keys``.

    Raises :class:`InvalidVerdict` when it cannot be checked and
    :class:`keys.InvalidSignature` when it was altered (or signed by another key).
    """
    if not isinstance(verdict, Mapping) or verdict.get("format") != FORMAT:
        raise InvalidVerdict(
            Msg("not a Veil KPI verdict (its format must be '{format}')", format=FORMAT)
        )
    text = verdict.get("signature")
    if not isinstance(text, str):
        raise InvalidVerdict(Msg("the verdict has no signature"))
    signature = Signature.from_text(text)
    if verdict.get("key_version") != signature.key_version:
        raise InvalidSignature()
    key = public_keys.get(signature.key_version)
    if key is None:
        raise InvalidVerdict(
            Msg(
                "no public key of version {key_version} was given; export every version "
                "with 'veil audit public-key'",
                key_version=signature.key_version,
            )
        )
    verify_signature(key, signed_message(verdict), signature)
