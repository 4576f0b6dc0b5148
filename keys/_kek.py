"""SM4 data keys wrapped by a tenant's SM4 key-encryption key (the GM profile; private).

OpenBao's transit engine has no SM4 keys, so under ``VEIL_CRYPTO_PROFILE=gm`` a tenant's
data keys are wrapped here, in Veil's memory, by the tenant's **KEK**: 16 random bytes
kept in a KV v2 secret of the tenant's own (``TenantLocation.kek_mount``, secret
``kek``), each KV version a KEK version.  The platform token writes versions (creation,
rotation), lists them and destroys old ones; only the tenant's own service token reads
them.  A KEK is read for one call and never cached, inside the caller's
``key_operation``, so that every use is in the key server's audit log with its object
and a key server that is gone means no key at all (fail-closed).

Wrapped form (text, stored like transit's ``vault:vN:...``)::

    veil-sm4:v<KEK version>:base64( nonce (12 random bytes) | SM4-GCM(KEK, nonce, key, aad) )
    aad = "veil.sm4-wrap.v1" | len-prefixed tenant | KEK version u32

The associated data binds the tenant and the KEK version (and, by its label, this
format): a wrapped key copied to another tenant, or relabelled with another version,
fails to unwrap with the same opaque :class:`~keys.errors.DecryptionError`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
from typing import Any

import hvac
import hvac.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from i18n import Msg
from keys.errors import DecryptionError, KeyServerMisconfigured
from keys.tenancy import KEK, TenantLocation
from keys.vault import KeyServerClient

PREFIX = "veil-sm4"
WRAPPED = re.compile(rf"^{PREFIX}:v([1-9][0-9]{{0,8}}):([A-Za-z0-9+/=]{{16,1024}})$")
KEK_SIZE = 16
_NONCE_SIZE = 12
_TAG_SIZE = 16
_AAD_LABEL = b"veil.sm4-wrap.v1"


# -- wrapping, in memory ---------------------------------------------------------------------
def _aad(tenant: str, kek_version: int) -> bytes:
    name = tenant.encode()
    return _AAD_LABEL + struct.pack(">H", len(name)) + name + struct.pack(">I", kek_version)


def wrap(kek: bytes, kek_version: int, tenant: str, key: bytes) -> str:
    """``key`` sealed by ``kek`` (version ``kek_version``) for ``tenant``: ``veil-sm4:vN:...``."""
    nonce = os.urandom(_NONCE_SIZE)
    encryptor = Cipher(algorithms.SM4(kek), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(_aad(tenant, kek_version))
    sealed = encryptor.update(key) + encryptor.finalize() + encryptor.tag
    return f"{PREFIX}:v{kek_version}:{base64.b64encode(nonce + sealed).decode()}"


def parse(wrapped: str) -> tuple[int, bytes]:
    """(KEK version, nonce | sealed key) of a ``veil-sm4:`` wrapped key; DecryptionError if
    it is not one."""
    match = WRAPPED.fullmatch(wrapped)
    if not match:
        raise DecryptionError()
    try:
        blob = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        raise DecryptionError() from None
    if len(blob) <= _NONCE_SIZE + _TAG_SIZE:
        raise DecryptionError()
    return int(match.group(1)), blob


def unwrap(kek: bytes, tenant: str, wrapped: str) -> bytes:
    """The key inside ``wrapped``; :class:`DecryptionError` for any damage or mismatch."""
    version, blob = parse(wrapped)
    nonce, sealed, tag = blob[:_NONCE_SIZE], blob[_NONCE_SIZE:-_TAG_SIZE], blob[-_TAG_SIZE:]
    decryptor = Cipher(
        algorithms.SM4(kek), modes.GCM(nonce, tag, min_tag_length=_TAG_SIZE)
    ).decryptor()
    decryptor.authenticate_additional_data(_aad(tenant, version))
    try:
        return decryptor.update(sealed) + decryptor.finalize()
    except InvalidTag:
        raise DecryptionError() from None


# -- the KEK in the key server ------------------------------------------------------------------
class KekStore:
    """A tenant's KEK versions in the key server: read (tenant token), write, list and
    destroy (platform token), and the key server's random bytes."""

    def __init__(self, server: KeyServerClient) -> None:
        self._server = server

    def random(self, tenant: str, size: int) -> bytes:
        """``size`` random bytes from the key server (the tenant's transit ``random``)."""
        mount = self._server.location(tenant).transit_mount
        response = self._server.with_tenant(
            tenant,
            Msg("make a data key"),
            lambda c: c.adapter.post(f"/v1/{mount}/random/{size}", json={"format": "base64"}),
        )
        return _exact(response["data"]["random_bytes"], size)

    def read(self, tenant: str, version: int | None = None) -> tuple[int, bytes]:
        """(version, key) of the tenant's KEK: ``version``, or the newest.

        :class:`hvac.exceptions.InvalidPath` when there is no such version (never made,
        destroyed by retirement, or the tenant's KEK mount is not there).
        """
        mount = self._server.location(tenant).kek_mount
        query = "" if version is None else f"?version={version}"

        def read(c: hvac.Client) -> dict[str, Any]:
            return dict(c.adapter.get(f"/v1/{mount}/data/{KEK}{query}"))

        response = self._server.with_tenant(tenant, Msg("read the tenant's SM4 key"), read)
        data = response.get("data") or {}
        meta, secret = data.get("metadata") or {}, data.get("data") or {}
        if not secret or meta.get("destroyed") or meta.get("deletion_time"):
            raise hvac.exceptions.InvalidPath("no such KEK version")
        return int(meta["version"]), _exact(secret.get("key"), KEK_SIZE)

    # -- the platform's side --------------------------------------------------------------
    def _admin(self, loc: TenantLocation) -> hvac.Client:
        return self._server.platform_in(loc.namespace)

    def versions(self, tenant: str) -> tuple[int, int]:
        """(oldest readable, newest) KEK versions; (0, 0) when the tenant has no KEK."""
        loc = self._server.location(tenant)
        admin = self._admin(loc)
        try:
            meta = self._server.call(
                Msg("read the tenant's SM4 key versions"),
                lambda: admin.adapter.get(f"/v1/{loc.kek_mount}/metadata/{KEK}"),
            )["data"]
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
            return 0, 0
        alive = [
            int(v)
            for v, info in (meta.get("versions") or {}).items()
            if not info.get("destroyed") and not info.get("deletion_time")
        ]
        return (min(alive), max(alive)) if alive else (0, int(meta.get("current_version") or 0))

    def add_version(self, tenant: str, *, first: bool = False) -> int:
        """Write a new KEK version from the key server's random bytes; return its number.

        ``first``: only if the tenant has no KEK yet (check-and-set 0), so that two Veil
        processes making it at once end with one first version.
        """
        loc = self._server.location(tenant)
        admin = self._admin(loc)
        base = self._server.platform()
        raw = self._server.call(
            Msg("make the tenant's SM4 key"),
            lambda: base.adapter.post(
                f"/v1/sys/tools/random/{KEK_SIZE}", json={"format": "base64"}
            ),
        )["data"]["random_bytes"]
        body: dict[str, Any] = {"data": {"key": raw, "algorithm": "SM4"}}
        if first:
            body["options"] = {"cas": 0}
        try:
            written = self._server.call(
                Msg("write the tenant's SM4 key"),
                lambda: admin.adapter.post(f"/v1/{loc.kek_mount}/data/{KEK}", json=body),
            )
        except hvac.exceptions.InvalidRequest as exc:
            if first and "check-and-set" in str(exc):
                return self.versions(tenant)[1]  # made by someone else a moment ago
            raise
        return int(written["data"]["version"])

    def destroy_below(self, tenant: str, version: int) -> None:
        """Destroy every KEK version older than ``version`` (irreversible)."""
        loc = self._server.location(tenant)
        admin = self._admin(loc)
        old = list(range(1, version))
        if old:
            self._server.call(
                Msg("destroy old versions of the tenant's SM4 key"),
                lambda: admin.adapter.post(
                    f"/v1/{loc.kek_mount}/destroy/{KEK}", json={"versions": old}
                ),
            )


def _exact(text: object, size: int) -> bytes:
    try:
        value = base64.b64decode(str(text), validate=True)
    except binascii.Error:
        value = b""
    if len(value) != size:
        raise KeyServerMisconfigured(
            Msg("the key server returned a key of the wrong size; check its SM4 key store")
        )
    return value
