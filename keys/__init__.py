"""Veil's keys: each enterprise's keys in a real key server (OpenBao).

The front door is :class:`KeyService` (envelope encryption with a streaming
format, rotation, crypto-shredding, signing).  :class:`LocalKeyServer` runs the
embedded OpenBao, and ``keys.cluster.LocalKeyCluster`` a local cluster of three
(not imported here, so that ``python -m keys.cluster`` runs cleanly);
:class:`KeyServerConfig` points Veil at an external server or cluster.
Offline verification of signatures needs only :func:`verify_signature` and an
exported :class:`SigningPublicKey`.  This package imports nothing else of Veil.
"""

from keys.bao import LocalKeyServer
from keys.errors import (
    DecryptionError,
    InvalidSignature,
    InvalidTenantId,
    KeysError,
    KeyServerMisconfigured,
    KeyServerStartError,
    KeyServerUnavailable,
    UnknownTenant,
)
from keys.profile import CryptoProfile
from keys.service import KeyService, object_label, wrapped_key_version
from keys.signing import Signature, SigningPublicKey, verify_signature
from keys.tenancy import Tenancy, TenantLocation, platform_policy, validate_tenant_id
from keys.vault import OBJECT_HEADER, KeyServerConfig, key_operation

__all__ = [
    "OBJECT_HEADER",
    "CryptoProfile",
    "DecryptionError",
    "InvalidSignature",
    "InvalidTenantId",
    "KeyServerConfig",
    "KeyServerMisconfigured",
    "KeyServerStartError",
    "KeyServerUnavailable",
    "KeyService",
    "KeysError",
    "LocalKeyServer",
    "Signature",
    "SigningPublicKey",
    "Tenancy",
    "TenantLocation",
    "UnknownTenant",
    "key_operation",
    "object_label",
    "platform_policy",
    "validate_tenant_id",
    "verify_signature",
    "wrapped_key_version",
]
