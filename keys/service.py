"""``KeyService``: the safe front door of ``keys``.

Encrypt and decrypt objects under a tenant's key (envelope encryption with the
streaming format), rotate, crypto-shred, and sign.  Data keys exist in clear
only in this process's memory for the duration of one call; only their
wrapped form is returned for storage: ``vault:vN:...`` (an AES-256 data key
wrapped by the tenant's transit key, streaming format 1) or, under the GM
profile, ``veil-sm4:vN:...`` (an SM4 data key wrapped by the tenant's SM4
key-encryption key, streaming format 2; ``keys._kek``).  Decryption follows
what the wrapped key and the stream's header say, whatever the profile.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Callable, Sequence
from typing import BinaryIO
from urllib.parse import quote

import hvac
import hvac.exceptions

from i18n import Msg
from keys import _kek, _sm2_key, _stream, provisioning
from keys.errors import DecryptionError, KeyServerMisconfigured
from keys.gm import _sm4_stream
from keys.profile import CryptoProfile
from keys.signing import SM2, Signature, SigningPublicKey
from keys.tenancy import DATA_KEY, PLATFORM_MOUNT, SIGNING_KEY, Tenancy, TenantLocation
from keys.vault import KeyServerClient, KeyServerConfig, key_operation

_WRAPPED_KEY = re.compile(r"^vault:v([1-9][0-9]{0,8}):[A-Za-z0-9+/=]{16,1024}$")
_REWRAP_BATCH = 250  # stays under the server's 1000-strings JSON limit
_SECRET_SIZE = 32


def object_label(object_id: str, version: int) -> str:
    """How data-key requests for ``object_id`` at ``version`` are tagged in the key server's
    audit log: ``<object id, percent-encoded>/<version>``, e.g. ``dataset:ds_12/3``."""
    return f"{quote(object_id, safe=':_.@-')}/{version}"


def wrapped_key_version(wrapped_key: str) -> int:
    """The version of the tenant key that wrapped ``wrapped_key``: of its transit key for
    ``vault:vN:...``, of its SM4 key-encryption key for ``veil-sm4:vN:...``."""
    if wrapped_key.startswith(f"{_kek.PREFIX}:"):
        return _kek.parse(wrapped_key)[0]
    match = _WRAPPED_KEY.fullmatch(wrapped_key)
    if not match:
        raise DecryptionError()
    return int(match.group(1))


def _is_sm4(wrapped_key: str) -> bool:
    return wrapped_key.startswith(f"{_kek.PREFIX}:")


class KeyService:
    """Tenant keys, envelope encryption, rotation, shredding and signing."""

    def __init__(
        self, server: KeyServerClient, *, profile: CryptoProfile = CryptoProfile.STANDARD
    ) -> None:
        self._server = server
        self._profile = CryptoProfile(profile)
        self._keks = _kek.KekStore(server)

    @classmethod
    def connect(
        cls, config: KeyServerConfig, *, profile: CryptoProfile = CryptoProfile.STANDARD
    ) -> KeyService:
        """Connect and check the server: reachable, unsealed, credentials and capabilities.

        ``profile`` chooses the algorithms of what is encrypted and signed from now on
        (``keys.profile``); whatever either profile made stays readable.

        Raises :class:`~keys.errors.KeyServerUnavailable` or
        :class:`~keys.errors.KeyServerMisconfigured` with what to fix.
        """
        server = KeyServerClient(config)
        server.check_ready(CryptoProfile(profile))
        server.ensure_platform_keys()
        service = cls(server, profile=profile)
        service._check_signing_profile()
        return service

    @property
    def profile(self) -> CryptoProfile:
        """The crypto profile of what this service encrypts and signs from now on."""
        return self._profile

    @property
    def tenancy(self) -> Tenancy:
        return self._server.tenancy

    @property
    def base_namespace(self) -> str:
        """Veil's base namespace in the key server ("" for the root namespace)."""
        return self._server.config.namespace.strip("/")

    def tenant_location(self, tenant: str) -> TenantLocation:
        """Where ``tenant``'s key, policy and login live (to read the key server's audit log)."""
        return self._server.location(tenant)

    def on_unavailable(self, callback: Callable[[str], None] | None) -> None:
        """Call ``callback(action)`` each time the key server is found unavailable, before
        :class:`~keys.errors.KeyServerUnavailable` is raised (Veil audits these failures).
        It runs in the failing caller's thread: it must be quick and must not raise."""
        self._server.on_unavailable = callback

    def check(self) -> None:
        """Raise :class:`~keys.errors.KeyServerUnavailable` unless the server answers now."""
        client = self._server.platform()
        self._server.call(Msg("check its health"), lambda: client.auth.token.lookup_self())

    # -- tenants ----------------------------------------------------------------------
    def create_tenant(self, tenant: str) -> None:
        """Give ``tenant`` its own namespace, key, policy and login (idempotent); under the
        GM profile also its SM4 key-encryption key."""
        provisioning.create_tenant(self._server, tenant, kek=self._gm)

    def ensure_tenant_kek(self, tenant: str) -> None:
        """Give a tenant made earlier its SM4 key-encryption key and bring its policy up to
        date (idempotent).  GM encryption does it on first need."""
        provisioning.ensure_tenant_kek(self._server, tenant)

    @property
    def _gm(self) -> bool:
        return self._profile is CryptoProfile.GM

    def tenant_exists(self, tenant: str) -> bool:
        return self._server.tenant_exists(tenant)

    def destroy_tenant(self, tenant: str) -> None:
        """Crypto-shred every object of ``tenant`` by destroying its keys. Irreversible."""
        provisioning.destroy_tenant(self._server, tenant)

    # -- envelope encryption -------------------------------------------------------------
    def encrypt_stream(
        self,
        tenant: str,
        object_id: str,
        version: int,
        src: BinaryIO,
        dst: BinaryIO,
        *,
        chunk_size: int = _stream.DEFAULT_CHUNK_SIZE,
    ) -> str:
        """Encrypt ``src`` into ``dst`` under a fresh data key; return the wrapped data key.

        Store the wrapped key with the object's metadata: it is needed, together
        with the same tenant, object id and version, to decrypt.  Under the GM profile
        the stream is format 2 (SM4-GCM) and the key ``veil-sm4:vN:...``.
        """
        context = _stream.object_context(tenant, object_id, version)
        if self._gm:
            key, wrapped = self._new_sm4_key(tenant, object_id, version, _sm4_stream.SM4_KEY_SIZE)
            _sm4_stream.encrypt_stream_sm4(key, context, src, dst, chunk_size=chunk_size)
            return wrapped
        key, wrapped = self._new_data_key(tenant, object_id, version)
        _stream.encrypt_stream(key, context, src, dst, chunk_size=chunk_size)
        return wrapped

    def _new_sm4_key(
        self, tenant: str, object_id: str, version: int, size: int
    ) -> tuple[bytes, str]:
        """Random bytes from the key server, wrapped by the newest KEK version (two calls,
        both tagged with the object: the key server's log tells a new key from an unwrap)."""

        def fetch() -> tuple[bytes, int, bytes]:
            return self._keks.random(tenant, size), *self._keks.read(tenant)

        with key_operation(object_label(object_id, version)):
            try:
                key, kek_version, kek = fetch()
            except (
                hvac.exceptions.InvalidPath,
                hvac.exceptions.InvalidRequest,
                KeyServerMisconfigured,
            ):
                # A tenant made before the GM profile: its KEK (and policy) on first need.
                provisioning.ensure_tenant_kek(self._server, tenant)
                key, kek_version, kek = fetch()
        return key, _kek.wrap(kek, kek_version, tenant, key)

    def _new_data_key(self, tenant: str, object_id: str, version: int) -> tuple[bytes, str]:
        with key_operation(object_label(object_id, version)):
            data = self._server.with_tenant(
                tenant,
                Msg("issue a data key"),
                lambda c: c.secrets.transit.generate_data_key(
                    DATA_KEY,
                    key_type="plaintext",
                    bits=256,
                    mount_point=self._server.location(tenant).transit_mount,
                ),
            )["data"]
        return base64.b64decode(data["plaintext"]), str(data["ciphertext"])

    def decrypt_stream(
        self,
        tenant: str,
        object_id: str,
        version: int,
        wrapped_key: str,
        src: BinaryIO,
        dst: BinaryIO,
        *,
        on_unwrapped: Callable[[], None] | None = None,
    ) -> int:
        """Decrypt ``src`` into ``dst``; return the plaintext length.

        Raises :class:`~keys.errors.DecryptionError` for any damage or mismatch;
        then whatever reached ``dst`` must be discarded.

        ``on_unwrapped`` is called once the key server has handed the data key back and
        before the first byte of plaintext is produced: the one point from which the
        object can be read.  If it raises, nothing is decrypted.
        """
        context = _stream.object_context(tenant, object_id, version)
        sm4 = _is_sm4(wrapped_key)  # the artefact decides, never the profile
        size = _sm4_stream.SM4_KEY_SIZE if sm4 else _stream.KEY_SIZE
        with key_operation(object_label(object_id, version)):
            key = self._unwrap(tenant, wrapped_key, size)
        if on_unwrapped is not None:
            on_unwrapped()
        if sm4:  # each decoder refuses the other's header: a mismatch is a DecryptionError
            return _sm4_stream.decrypt_stream_sm4(key, context, src, dst)
        return _stream.decrypt_stream(key, context, src, dst)

    def encrypt_bytes(
        self, tenant: str, object_id: str, version: int, data: bytes
    ) -> tuple[str, bytes]:
        """Encrypt a small object in memory; return (wrapped key, ciphertext)."""
        out = io.BytesIO()
        # Small objects get one small chunk instead of 1 MiB buffers.
        chunk = min(_stream.DEFAULT_CHUNK_SIZE, max(_stream.MIN_CHUNK_SIZE, len(data)))
        wrapped = self.encrypt_stream(
            tenant, object_id, version, io.BytesIO(data), out, chunk_size=chunk
        )
        return wrapped, out.getvalue()

    def decrypt_bytes(
        self, tenant: str, object_id: str, version: int, wrapped_key: str, ciphertext: bytes
    ) -> bytes:
        out = io.BytesIO()
        self.decrypt_stream(tenant, object_id, version, wrapped_key, io.BytesIO(ciphertext), out)
        return out.getvalue()

    def _unwrap(self, tenant: str, wrapped_key: str, size: int) -> bytes:
        """The key inside ``wrapped_key`` (either kind), which must be ``size`` bytes."""
        wrapped_key_version(wrapped_key)  # malformed -> DecryptionError before any call
        key = self._unwrap_sm4(tenant, wrapped_key) if _is_sm4(wrapped_key) else None
        if key is None:
            key = self._unwrap_transit(tenant, wrapped_key)
        if len(key) != size:
            raise DecryptionError()
        return key

    def _unwrap_sm4(self, tenant: str, wrapped_key: str) -> bytes:
        try:
            _, kek = self._keks.read(tenant, wrapped_key_version(wrapped_key))
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
            raise DecryptionError() from None  # no such KEK version: retired, or shredded
        return _kek.unwrap(kek, tenant, wrapped_key)

    def _unwrap_transit(self, tenant: str, wrapped_key: str) -> bytes:
        mount = self._server.location(tenant).transit_mount

        def decrypt(c: hvac.Client) -> str:
            response = c.secrets.transit.decrypt_data(
                DATA_KEY, ciphertext=wrapped_key, mount_point=mount
            )
            return str(response["data"]["plaintext"])

        try:
            plaintext = self._server.with_tenant(tenant, Msg("unwrap a data key"), decrypt)
            key = base64.b64decode(plaintext, validate=True)
        except (hvac.exceptions.InvalidRequest, binascii.Error):
            # Wrong tenant, damaged, or a key version retired by rotation: one opaque error.
            raise DecryptionError() from None
        return key

    # -- secrets for keyed computations ------------------------------------------------------
    def issue_secret(self, tenant: str, object_id: str, version: int) -> tuple[bytes, str]:
        """A fresh random 32-byte secret of ``tenant`` and its wrapped form.

        For keyed computations on the tenant's data (a dataset's cell-key record keys):
        store only the wrapped form; the secret itself stays in the caller's memory.
        ``object_id`` and ``version`` tag the request in the key server's audit log.
        Under the GM profile it is wrapped by the tenant's SM4 key-encryption key.
        """
        if self._gm:
            return self._new_sm4_key(tenant, object_id, version, _SECRET_SIZE)
        return self._new_data_key(tenant, object_id, version)

    def wrap_secret(self, tenant: str, object_id: str, version: int, secret: bytes) -> str:
        """``secret`` (one :meth:`issue_secret` made, opened with :meth:`open_secret`) wrapped
        again by the newest version of the tenant's SM4 key-encryption key: a change of profile
        keeps the secret itself.  GM profile only (the transit key of the standard profile
        wraps only the keys it makes itself); raises ``ValueError`` otherwise."""
        if not self._gm:
            raise ValueError("only the GM profile wraps a given secret")
        if len(secret) != _SECRET_SIZE:
            raise ValueError(f"a secret is {_SECRET_SIZE} bytes")
        with key_operation(object_label(object_id, version)):
            try:
                kek_version, kek = self._keks.read(tenant)
            except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
                provisioning.ensure_tenant_kek(self._server, tenant)
                kek_version, kek = self._keks.read(tenant)
        return _kek.wrap(kek, kek_version, tenant, secret)

    def open_secret(self, tenant: str, object_id: str, version: int, wrapped: str) -> bytes:
        """The secret that ``wrapped`` holds; :class:`~keys.errors.DecryptionError` if it is
        not one of ``tenant``'s (or its key version was retired)."""
        with key_operation(object_label(object_id, version)):
            return self._unwrap(tenant, wrapped, _SECRET_SIZE)

    # -- rotation ---------------------------------------------------------------------------
    def rotate_tenant_key(self, tenant: str) -> int:
        """Add a new version of the tenant's key (new data keys use it); return the version.

        A tenant may hold data keys of both kinds (made under either profile): both of its
        keys that exist are rotated, its transit key and, if it has one, its SM4 KEK, so
        that :meth:`rewrap_data_keys` moves every stored key to a new version.  The version
        returned is that of the key the profile makes data keys with.
        """
        loc = self._server.location(tenant)
        admin = self._server.platform_in(loc.namespace)
        self._server.call(
            Msg("rotate the tenant key"),
            lambda: admin.secrets.transit.rotate_key(DATA_KEY, mount_point=loc.transit_mount),
        )
        transit_version = self._latest_version(admin, loc.transit_mount)
        if self._gm:
            if not self._kek_versions(tenant)[1]:  # a tenant made before the GM profile
                provisioning.ensure_tenant_kek(self._server, tenant)
            return self._keks.add_version(tenant)
        if self._kek_versions(tenant)[1]:
            self._keks.add_version(tenant)
        return transit_version

    def _kek_versions(self, tenant: str) -> tuple[int, int]:
        """The tenant's KEK versions; (0, 0) also when Veil's policy predates the GM profile
        (then the tenant cannot have a KEK)."""
        try:
            return self._keks.versions(tenant)
        except hvac.exceptions.Forbidden:
            return 0, 0

    def rewrap_data_keys(self, tenant: str, wrapped_keys: Sequence[str]) -> list[str]:
        """Rewrap data keys, each in its own kind under the newest version of that kind,
        without exposing them (transit keys in the key server; SM4-wrapped keys in this
        process's memory, one KEK read per version per call)."""
        for wrapped in wrapped_keys:
            wrapped_key_version(wrapped)
        sm4 = [w for w in wrapped_keys if _is_sm4(w)]
        if not sm4:
            return self._rewrap_transit(tenant, wrapped_keys)
        transit = [w for w in wrapped_keys if not _is_sm4(w)]
        new_sm4 = iter(self._rewrap_sm4(tenant, sm4))
        new_transit = iter(self._rewrap_transit(tenant, transit) if transit else [])
        return [next(new_sm4) if _is_sm4(w) else next(new_transit) for w in wrapped_keys]

    def _rewrap_sm4(self, tenant: str, wrapped_keys: Sequence[str]) -> list[str]:
        newest, kek = self._keks.read(tenant)
        keks = {newest: kek}
        result = []
        for wrapped in wrapped_keys:
            version = wrapped_key_version(wrapped)
            if version not in keks:
                try:
                    keks[version] = self._keks.read(tenant, version)[1]
                except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
                    raise DecryptionError() from None
            key = _kek.unwrap(keks[version], tenant, wrapped)
            result.append(_kek.wrap(kek, newest, tenant, key))
        return result

    def _rewrap_transit(self, tenant: str, wrapped_keys: Sequence[str]) -> list[str]:
        mount = self._server.location(tenant).transit_mount
        result: list[str] = []
        for start in range(0, len(wrapped_keys), _REWRAP_BATCH):
            batch = [{"ciphertext": w} for w in wrapped_keys[start : start + _REWRAP_BATCH]]

            def rewrap(c: hvac.Client, items: list[dict[str, str]] = batch) -> list[str]:
                response = c.secrets.transit.rewrap_data(
                    DATA_KEY, ciphertext="", batch_input=items, mount_point=mount
                )
                results = response["data"]["batch_results"]
                if any("error" in r and r["error"] for r in results):
                    raise DecryptionError()
                return [str(r["ciphertext"]) for r in results]

            try:
                result.extend(self._server.with_tenant(tenant, Msg("rewrap data keys"), rewrap))
            except hvac.exceptions.InvalidRequest:
                raise DecryptionError() from None
        return result

    def retire_key_versions_below(self, tenant: str, version: int) -> None:
        """Refuse, from now on, data keys wrapped by a key version older than ``version``.

        Call it only after every stored wrapped key was rewrapped and saved.  The key is
        the one the profile makes data keys with (the version :meth:`rotate_tenant_key`
        returned).  Under the GM profile the older KEK versions are **destroyed**
        (irreversible: no one can bring them back); the transit key's minimum decryption
        version (standard profile) can be lowered again by an administrator.
        """
        if self._gm:
            latest = self._kek_versions(tenant)[1]
            if not 1 <= version <= latest:
                raise ValueError(f"version must be between 1 and the latest key version ({latest})")
            self._keks.destroy_below(tenant, version)
            return
        loc = self._server.location(tenant)
        admin = self._server.platform_in(loc.namespace)
        latest = self._latest_version(admin, loc.transit_mount)
        if not 1 <= version <= latest:
            raise ValueError(f"version must be between 1 and the latest key version ({latest})")
        self._server.call(
            Msg("raise the minimum decryption version"),
            lambda: admin.adapter.post(
                f"/v1/{loc.transit_mount}/keys/{DATA_KEY}/config",
                json={"min_decryption_version": version},
            ),
        )

    def _latest_version(self, admin: hvac.Client, mount: str) -> int:
        info = self._server.call(
            Msg("read the tenant key"),
            lambda: admin.adapter.get(f"/v1/{mount}/keys/{DATA_KEY}"),
        )
        return int(info["data"]["latest_version"])

    # -- signing ---------------------------------------------------------------------------------
    def sign(self, message: bytes) -> Signature:
        """Sign ``message`` with Veil's current signing key: Ed25519 in the key server's
        transit engine (profile ``standard``), or SM2 (profile ``gm``), its key read from
        the key server for this one signature (``keys._sm2_key``).

        Tag the call with :func:`~keys.key_operation` (what is signed): the key server's
        audit log then explains each use of the key.
        """
        if self._profile is CryptoProfile.GM:
            key = _sm2_key.read_key(self._server) or self._make_sm2_key()
            return Signature(key.key_version, key.key.sign(message), SM2)
        client = self._server.platform()
        response = self._server.call(
            "sign",
            lambda: client.secrets.transit.sign_data(
                SIGNING_KEY,
                hash_input=base64.b64encode(message).decode(),
                mount_point=PLATFORM_MOUNT,
            ),
        )
        text = str(response["data"]["signature"])  # vault:vN:<base64>
        _, version, value = text.split(":", 2)
        return Signature(int(version.removeprefix("v")), base64.b64decode(value))

    def _make_sm2_key(self) -> _sm2_key.Sm2SigningKey:
        """The first SM2 key: one version above every signing key so far (decision 2 of
        issue 23: one sequence of versions across algorithms)."""
        newest = max(k.key_version for k in self._ed25519_public_keys())
        return _sm2_key.create_key(self._server, newest + 1)

    def _check_signing_profile(self) -> None:
        """At start-up: publish a half-made SM2 key's public half (profile ``gm``), or
        refuse the standard profile once Veil signs with SM2."""
        if self._profile is CryptoProfile.GM:
            _sm2_key.publish_if_missing(self._server)
            return
        sm2 = _sm2_key.public_key(self._server)
        if sm2 is not None:
            raise KeyServerMisconfigured(
                Msg(
                    "this deployment signs with SM2 since signing key version {version} "
                    "(crypto profile gm); switching back to the standard profile is not "
                    "supported: set VEIL_CRYPTO_PROFILE=gm",
                    version=sm2[0],
                )
            )

    def signing_public_keys(self) -> list[SigningPublicKey]:
        """Every version of the signing key's public half, both algorithms, oldest first
        (whatever the current profile, so that every signature made stays verifiable).

        Raises :class:`~keys.errors.KeyServerMisconfigured` if two keys share a version.
        """
        keys = self._ed25519_public_keys()
        sm2 = _sm2_key.public_key(self._server)
        if sm2 is not None:
            if any(k.key_version == sm2[0] for k in keys):
                raise KeyServerMisconfigured(
                    Msg(
                        "the SM2 signing key and '{platform_mount}/keys/{signing_key}' both "
                        "claim signing key version {version} (was the transit key rotated "
                        "after the switch to the gm profile?); signatures of that version "
                        "cannot be checked until one of them is removed",
                        platform_mount=PLATFORM_MOUNT,
                        signing_key=SIGNING_KEY,
                        version=sm2[0],
                    )
                )
            keys.append(SigningPublicKey(sm2[0], sm2[1], SM2))
        return sorted(keys, key=lambda k: k.key_version)

    def _ed25519_public_keys(self) -> list[SigningPublicKey]:
        client = self._server.platform()
        info = self._server.call(
            Msg("read the signing key"),
            lambda: client.secrets.transit.read_key(SIGNING_KEY, mount_point=PLATFORM_MOUNT),
        )
        keys = info["data"]["keys"]
        try:
            return [
                SigningPublicKey(int(v), base64.b64decode(keys[v]["public_key"]))
                for v in sorted(keys, key=int)
            ]
        except (KeyError, TypeError):
            raise KeyServerMisconfigured(
                Msg(
                    "'{platform_mount}/keys/{signing_key}' is not an Ed25519 key; "
                    "delete it and restart Veil to create the right one",
                    platform_mount=PLATFORM_MOUNT,
                    signing_key=SIGNING_KEY,
                )
            ) from None

    def signing_public_key(self) -> SigningPublicKey:
        """The newest version of the signing key's public half: the one that signs now
        (under the gm profile, the SM2 key, made now if no signature made it yet)."""
        newest = self.signing_public_keys()[-1]
        if self._profile is CryptoProfile.GM and newest.algorithm != SM2:
            key = _sm2_key.read_key(self._server) or self._make_sm2_key()
            return SigningPublicKey(key.key_version, key.key.public_key().raw, SM2)
        return newest
