"""Errors raised by the ``keys`` package.

Every error derives from :class:`KeysError`.  Messages say what went wrong and
how to fix it; they never contain key material, plaintext or tokens.
"""

from __future__ import annotations

from i18n import Msg


class KeysError(Exception):
    """Base class of every error raised by ``keys``."""


class KeyServerUnavailable(KeysError):
    """The key server cannot be reached, is sealed, or is not answering.

    Callers must fail closed: nothing that needs a key can proceed.  The API
    maps this error to 503.
    """


class KeyServerMisconfigured(KeysError):
    """The key server answers, but Veil cannot use it as configured.

    For example the token lacks a capability Veil needs, or a credential is
    wrong.  The message names what is missing and how to fix it.
    """


class KeyServerStartError(KeysError):
    """The embedded key server could not be started."""


class UnknownTenant(KeysError):
    """The tenant has no keys in the key server (never created, or shredded)."""


class InvalidTenantId(KeysError, ValueError):
    """A tenant id does not have the form required for a key-server namespace."""


class DecryptionError(KeysError):
    """Ciphertext could not be decrypted.

    Raised for every tamper, truncation, reordering, splicing, wrong-context or
    parse failure alike, so that the error itself reveals nothing about which
    check failed (no oracle).
    """

    def __init__(self) -> None:
        super().__init__(
            Msg(
                "the encrypted object could not be decrypted: it is damaged, incomplete, "
                "or does not belong to this tenant, object and version"
            )
        )


class InvalidSignature(KeysError):
    """A signature does not verify against the message and public key."""

    def __init__(self) -> None:
        super().__init__(Msg("the signature does not match the message and public key"))
