"""A usage receipt's format: canonical bytes, signature, offline verification, the page.

Nothing here needs the server: ``veil receipts verify`` uses it with a receipt file
and the public key alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, Final

from i18n import Msg
from keys import InvalidSignature, Signature, SigningPublicKey, verify_signature
from keys.signing import public_keys_from_pem
from policies.errors import VeilError

FORMAT: Final = "veil-usage-receipt/1"
SIGNING_CONTEXT: Final = b"veil/receipt\n"
UNSIGNED: Final = ("signature", "key_version")


class InvalidReceipt(VeilError):
    """A receipt that cannot be checked: not a receipt, unsigned, or no key for its version."""


# ---------------------------------------------------------------- signing and verifying


def canonical(value: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, ASCII: the encoding the audit log hashes, too."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signed_message(receipt: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers: every field but ``signature`` and ``key_version``."""
    return SIGNING_CONTEXT + canonical({k: v for k, v in receipt.items() if k not in UNSIGNED})


def sign_receipt(body: Mapping[str, Any], sign: Callable[[bytes], Signature]) -> dict[str, Any]:
    """``body`` with its signature and the signing key's version."""
    signature = sign(signed_message(body))
    return {**body, "key_version": signature.key_version, "signature": signature.to_text()}


def dumps(receipt: Mapping[str, Any]) -> str:
    """The receipt as a readable JSON file (verification does not depend on the layout)."""
    return json.dumps(receipt, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def receipt_sha256(receipt: Mapping[str, Any]) -> str:
    """SHA-256 of the whole signed receipt, canonical (what ``receipt.issued`` records)."""
    return hashlib.sha256(canonical(receipt)).hexdigest()


def verify_receipt(
    receipt: Mapping[str, Any],
    public_keys: Mapping[int, SigningPublicKey] | Iterable[SigningPublicKey],
) -> None:
    """Return if the receipt is unaltered and signed by one of ``public_keys``; raise otherwise.

    Raises :class:`InvalidReceipt` when it cannot be checked and
    :class:`keys.InvalidSignature` when it was altered (or signed by another key).
    """
    keys = (
        public_keys if isinstance(public_keys, Mapping) else {k.key_version: k for k in public_keys}
    )
    if not isinstance(receipt, Mapping) or receipt.get("format") != FORMAT:
        raise InvalidReceipt(
            Msg(
                "not a Veil usage receipt (its format must be '{format}')",
                format=FORMAT,
            )
        )
    text = receipt.get("signature")
    if not isinstance(text, str):
        raise InvalidReceipt(Msg("the receipt has no signature"))
    signature = Signature.from_text(text)
    if receipt.get("key_version") != signature.key_version:
        raise InvalidSignature()
    key = keys.get(signature.key_version)
    if key is None:
        raise InvalidReceipt(
            Msg(
                "no public key of version {key_version} was given; export every "
                "version with 'veil audit public-key' (or the newest with 'veil "
                "keys public-key')",
                key_version=signature.key_version,
            )
        )
    verify_signature(key, signed_message(receipt), signature)


def load_public_keys(text: str) -> dict[int, SigningPublicKey]:
    """Every key version in a file of PEM blocks as ``veil keys public-key`` writes them."""
    try:
        return public_keys_from_pem(text)
    except ValueError as exc:
        raise InvalidReceipt(
            Msg(
                "the key file: {problem}; write it with 'veil keys public-key'",
                problem=exc.args[0] if exc.args else str(exc),
            )
        ) from None


# ---------------------------------------------------------------- the readable page


class _ReceiptJson(HTMLParser):
    """Finds the text of ``<pre id="signed-receipt">`` in a receipt page."""

    def __init__(self) -> None:
        super().__init__()
        self.inside, self.text = False, ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.inside = self.inside or (tag == "pre" and ("id", "signed-receipt") in attrs)

    def handle_endtag(self, tag: str) -> None:
        self.inside = self.inside and tag != "pre"

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text += data


def load_receipt(text: str) -> dict[str, Any]:
    """A receipt from its JSON, or from the signed JSON embedded in its HTML page."""
    if text.lstrip().startswith("<"):
        parser = _ReceiptJson()
        parser.feed(text)
        text = parser.text
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidReceipt(Msg("the file is not a receipt's JSON (or its HTML page)")) from None
    if not isinstance(value, dict):
        raise InvalidReceipt(Msg("the file is not a receipt's JSON (or its HTML page)"))
    return value


@functools.lru_cache(maxsize=1)
def _templates() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sandbox.oversight", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = lambda v: "-" if v is None else f"{v:.10g}"
    env.filters["when"] = _readable_time
    return env


def _readable_time(value: str | None) -> str:
    """``2026-11-26 22:14:29 UTC`` for the page (the JSON keeps microseconds)."""
    if value is None:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_html(receipt: Mapping[str, Any]) -> str:
    """A self-contained, printable page of the receipt (inline CSS, no script)."""
    template = _templates().get_template("receipt.html")
    page: str = template.render(r=receipt, signed_json=dumps(receipt))
    return page
