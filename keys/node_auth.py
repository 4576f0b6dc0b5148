"""Signed requests between an enterprise node and the control plane (protocol ``veil-node-1``).

A node authenticates every request it makes with an Ed25519 key that never leaves the
node (``identity.key`` in its directory, mode 0600).  What is signed binds the request to
its method, path, time, a one-time nonce and the SHA-256 of its body, so a captured
request cannot be replayed, redirected or altered::

    veil-node-1\\n<METHOD>\\n<path and ?query>\\n<unix seconds>\\n<nonce>\\n<hex sha256 of body>

sent in the headers ``Veil-Node`` (node id), ``Veil-Timestamp``, ``Veil-Nonce`` and
``Veil-Signature`` (base64).  The control plane accepts a timestamp within
``MAX_SKEW_S`` of its clock and each nonce once (it remembers them for that window).

Documents whose meaning outlives a request (a grant, a release) are signed separately by
the node's key server (``keys.signing``) over their :func:`canonical_json` form.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from i18n import Msg

PROTOCOL = "veil-node-1"
MAX_SKEW_S = 300
NODE_HEADER, TIME_HEADER, NONCE_HEADER, SIGNATURE_HEADER = (
    "Veil-Node",
    "Veil-Timestamp",
    "Veil-Nonce",
    "Veil-Signature",
)
#: Hints in the control plane's answers, which a node may act on and never trusts: on a
#: waiting claim's early 204, what woke it (``collaboration`` or ``code``); on the
#: collaboration tasks, the control plane's time they were read (Unix seconds), which the
#: node's next waiting claim echoes as ``since``.
WAKE_HEADER, TASKS_AT_HEADER = "Veil-Wake", "Veil-Tasks-At"
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_NODE_ID = re.compile(r"^node_[A-Za-z0-9_-]{1,40}$")


class RequestRejected(Exception):
    """A node request whose signature, time or nonce does not check (401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON document that is signed and hashed: sorted keys, no
    spaces, UTF-8 (not ASCII escapes), no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def document_sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _message(method: str, path: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{PROTOCOL}\n{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{digest}".encode()


@dataclass(frozen=True)
class NodeIdentity:
    """A node's request-signing key (private half: only on the node)."""

    node_id: str
    key: Ed25519PrivateKey

    @staticmethod
    def generate_key(path: Path) -> Ed25519PrivateKey:
        """Make a new key and write it to ``path`` readable by this user only."""
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        return key

    @staticmethod
    def load_key(path: Path) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return key

    def public_pem(self) -> str:
        return public_pem(self.key)

    def headers(self, method: str, path: str, body: bytes, now: float) -> dict[str, str]:
        """The authentication headers of one request."""
        timestamp, nonce = int(now), secrets.token_hex(16)
        signature = self.key.sign(_message(method, path, timestamp, nonce, body))
        return {
            NODE_HEADER: self.node_id,
            TIME_HEADER: str(timestamp),
            NONCE_HEADER: nonce,
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        }


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@functools.lru_cache(maxsize=4096)
def load_public_pem(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM, or ValueError saying what is wrong (parsed once per
    text: the control plane checks every node request with its node's key)."""
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ValueError(Msg("the node's public key is not a PEM public key")) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(Msg("the node's public key is not an Ed25519 key"))
    return key


@dataclass(frozen=True)
class SignedRequest:
    """What a checked request claims: which node, when, with which nonce."""

    node_id: str
    timestamp: int
    nonce: str


def claimed(headers: dict[str, str]) -> SignedRequest:
    """Read the authentication headers (not yet checked); RequestRejected when malformed."""
    node_id = headers.get(NODE_HEADER.lower(), "")
    nonce = headers.get(NONCE_HEADER.lower(), "")
    stamp = headers.get(TIME_HEADER.lower(), "")
    if not _NODE_ID.fullmatch(node_id) or not _NONCE.fullmatch(nonce) or not stamp.isdigit():
        raise RequestRejected(
            Msg("a node request needs the Veil-Node, Veil-Timestamp and Veil-Nonce headers")
        )
    return SignedRequest(node_id, int(stamp), nonce)


def verify_request(
    public_key: Ed25519PublicKey,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    now: float,
) -> SignedRequest:
    """Check a request's signature and time (the caller checks the nonce is new)."""
    request = claimed(headers)
    if abs(now - request.timestamp) > MAX_SKEW_S:
        raise RequestRejected(
            Msg(
                "the request's time is more than {seconds} s from the control plane's clock; "
                "set the node's clock (NTP)",
                seconds=MAX_SKEW_S,
            )
        )
    try:
        signature = base64.b64decode(headers.get(SIGNATURE_HEADER.lower(), ""), validate=True)
        message = _message(method, path, request.timestamp, request.nonce, body)
        public_key.verify(signature, message)
    except (binascii.Error, _CryptoInvalidSignature, ValueError):
        raise RequestRejected(Msg("the request's signature does not check")) from None
    return request
