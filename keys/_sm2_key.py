"""Where the ``gm`` profile's SM2 signing key lives: a KV v2 secret of Veil's own.

OpenBao's transit engine has no SM2 keys, so the key pair is kept in the KV v2
mount :data:`~keys.tenancy.PLATFORM_GM_MOUNT` of Veil's base namespace, secret
:data:`~keys.tenancy.SM2_SIGNING_KEY`:

* its data: ``key_version``, ``private_key`` and ``public_key`` (base64), read by
  every signature (never cached, so a lost key server stops signing at once and
  every use is in the key server's audit log with the caller's ``X-Veil-Object``);
* its metadata's ``custom_metadata``: ``key_version`` and ``public_key`` only, so
  that listing the public keys never reads the private one.

The key is made on first need with check-and-set 0 (two processes racing make one
key), its version one above every signing-key version in use.  There is one SM2
key: switching back to the standard profile is refused (``docs/keys.md``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass
from typing import Any

import hvac
import hvac.exceptions

from i18n import Msg
from keys.errors import KeyServerMisconfigured
from keys.gm.sm2 import Sm2PrivateKey, Sm2PublicKey
from keys.tenancy import PLATFORM_GM_MOUNT, SM2_SIGNING_KEY
from keys.vault import KeyServerClient

_ABSENT = (hvac.exceptions.InvalidPath,)


@dataclass(frozen=True)
class Sm2SigningKey:
    """The SM2 signing key pair and its version (in memory for one signature)."""

    key_version: int
    key: Sm2PrivateKey


def _damaged() -> KeyServerMisconfigured:
    return KeyServerMisconfigured(
        Msg(
            "'{mount}/{secret}' in the key server is not a Veil SM2 signing key; "
            "restore it from the key server's backup",
            mount=PLATFORM_GM_MOUNT,
            secret=SM2_SIGNING_KEY,
        )
    )


def read_key(server: KeyServerClient) -> Sm2SigningKey | None:
    """The SM2 signing key, read now from the key server; None if it was never made."""
    client = server.platform()
    try:
        response = server.call(
            Msg("read the SM2 signing key"),
            lambda: client.secrets.kv.v2.read_secret_version(
                SM2_SIGNING_KEY, mount_point=PLATFORM_GM_MOUNT, raise_on_deleted_version=True
            ),
        )
    except _ABSENT:
        return None
    data: dict[str, Any] = response["data"]["data"]
    try:
        public = Sm2PublicKey(base64.b64decode(data["public_key"], validate=True))
        private = base64.b64decode(data["private_key"], validate=True)
        return Sm2SigningKey(int(data["key_version"]), Sm2PrivateKey(private, public))
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise _damaged() from None


def _metadata(server: KeyServerClient) -> dict[str, Any] | None:
    client = server.platform()
    try:
        response = server.call(
            Msg("read the SM2 signing key's public half"),
            lambda: client.secrets.kv.v2.read_secret_metadata(
                SM2_SIGNING_KEY, mount_point=PLATFORM_GM_MOUNT
            ),
        )
    except (*_ABSENT, hvac.exceptions.Forbidden):
        return None  # never made (under a policy older than the gm profile, never made here)
    return dict(response["data"])


def public_key(server: KeyServerClient) -> tuple[int, bytes] | None:
    """The SM2 signing key's version and public half (``x || y``), from its metadata
    alone; None if there is no SM2 key (a standard deployment whose policy predates the
    gm profile may not even look: it never made one)."""
    meta = (_metadata(server) or {}).get("custom_metadata") or {}
    if not meta:
        return None  # none, or made a moment ago by another process that publishes it next
    try:
        raw = base64.b64decode(meta["public_key"], validate=True)
        Sm2PublicKey(raw)
        return int(meta["key_version"]), raw
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise _damaged() from None


def publish_if_missing(server: KeyServerClient) -> None:
    """Publish the key's public half if a process died between making the key and
    publishing it (reads the private key: only then, at start-up)."""
    meta = _metadata(server)
    if meta is None or meta.get("custom_metadata") or not meta.get("current_version"):
        return
    key = read_key(server)
    if key is not None:
        _publish(server, key)


def create_key(server: KeyServerClient, version: int) -> Sm2SigningKey:
    """Make the SM2 signing key at ``version`` (its mount too, if needed); if another
    process made one first, that one."""
    client = server.platform()
    _ensure_mount(server, client)
    made = Sm2PrivateKey.generate()
    secret = {
        "key_version": str(version),
        "private_key": base64.b64encode(made.private_bytes()).decode(),
        "public_key": base64.b64encode(made.public_key().raw).decode(),
    }
    try:
        server.call(
            Msg("create the SM2 signing key"),
            lambda: client.secrets.kv.v2.create_or_update_secret(
                SM2_SIGNING_KEY, secret=secret, cas=0, mount_point=PLATFORM_GM_MOUNT
            ),
        )
    except hvac.exceptions.InvalidRequest:  # check-and-set: another process made it
        existing = read_key(server)
        if existing is None:
            raise
        return existing
    made_key = Sm2SigningKey(version, made)
    _publish(server, made_key)
    return made_key


def _publish(server: KeyServerClient, key: Sm2SigningKey) -> None:
    client = server.platform()
    public = base64.b64encode(key.key.public_key().raw).decode()
    server.call(
        Msg("publish the SM2 signing key's public half"),
        lambda: client.secrets.kv.v2.update_metadata(
            SM2_SIGNING_KEY,
            custom_metadata={"key_version": str(key.key_version), "public_key": public},
            mount_point=PLATFORM_GM_MOUNT,
        ),
    )


def _ensure_mount(server: KeyServerClient, client: hvac.Client) -> None:
    # "path is already in use": another Veil process mounted it just now.
    with contextlib.suppress(hvac.exceptions.InvalidRequest):
        server.call(
            Msg("mount Veil's SM2 key store"),
            lambda: client.sys.enable_secrets_engine(
                "kv", path=PLATFORM_GM_MOUNT, options={"version": "2"}
            ),
        )
