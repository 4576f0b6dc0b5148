"""Private set intersection (PSI) on a join key between two enterprise nodes, relayed.

One **session** runs between two nodes of a supply-chain template: the **sender** (the
library's *server* role) and the **receiver** (its *client* role).  Each holds a set of
join keys (say part numbers).  At the end the receiver learns the intersection
(:class:`IntersectionReceiver`) or only its size (:class:`SizeReceiver`), as the template
says; the sender learns nothing about the receiver's keys.  Nodes connect outbound only, so
the two messages travel through the control plane, which reads them all.

The protocol is OpenMined PSI (``openmined-psi``; ECDH-PSI on P-256 with a Golomb-coded set,
semi-honest):

1. **Request** (receiver → sender): each of the receiver's keys ``y`` as ``H(y)^a``, a
   point of P-256 under the receiver's fresh secret ``a`` (``H`` hashes to the curve).
2. **Answer** (sender → receiver): the *setup*, a Golomb-compressed set (GCS) of
   ``hash(H(x)^b)`` for each of the sender's keys ``x`` under its fresh secret ``b``, and
   the *response*, each request point raised to ``b``: ``H(y)^(ab)``, in the request's order
   when the intersection is revealed, **sorted** when only its size is.  The receiver
   removes ``a`` and looks each ``H(y)^b`` up in the set.

A sender answers one request per session, so the receiver cannot test more keys than it
sent.  Keys are normalised (:func:`normalise`: stripped, Unicode NFC) and deduplicated, then
hashed with the session id (SHA-256) before the library sees them: equal keys in the same
session meet, and nothing is comparable across sessions (both secrets are fresh anyway).

**What each party learns** (under the decisional Diffie-Hellman assumption on P-256; each
party follows the protocol):

- **The relay** (the control plane): the session id and mode (in clear), the receiver's
  number of distinct keys ``n_r`` (the request holds one 33-byte point per key) and the
  sender's ``n_s`` (the GCS is public-parameter coding: anyone can count its entries, and
  its ``hash_range`` field is ``max(n_s, n_r) · n_r / FPR``), and the messages' sizes and
  timing.  No key, no hash of a key it could test (the points are pseudorandom without
  ``a`` or ``b``), not the intersection, not its size.
- **The sender**: ``n_r`` and the mode; nothing about which keys the receiver holds, nor
  the intersection or its size.  If the template names the sender among those who learn the
  size, the receiver tells it (a signed result), or a second session runs with roles swapped.
- **The receiver**: ``n_s`` (it decodes the GCS, exactly up to hash collisions), and the
  intersection (reveal mode) or its size (size mode).  In size mode the response is sorted,
  so which of its keys matched is hidden from it too.  With probability at most
  :data:`FPR` per session, one key that is not the sender's is counted as if it were.

What PSI cannot hide: the receiver chooses its keys, so a receiver with a set of one key
learns whether the sender holds that key.  Bound the receiver's set in the template
(``max_receiver_keys``), and keep sessions to the template's parties.

**Messages are bytes** (relay them as base64 in JSON).  Each starts with ``veil-psi-1``, its
kind, the session id and the mode; the answer also carries the SHA-256 of the request it
answers.  This module checks all of that, and the library refuses points that are not on
the curve, but **it does not authenticate**: a relay that flips bits inside the GCS makes
the receiver compute a wrong answer without any error.  So the caller must:

- sign each message's **exact bytes** with its node's signing key before handing it to the
  relay, and verify the peer node's signature over the exact bytes it received, with the
  key that node enrolled with, **before** passing them to :meth:`Sender.answer` or
  ``finish``; a bad signature refuses the session.  The signed bytes already bind the
  protocol, kind, session id, mode and (for the answer) the request, so nothing else needs
  signing; the signature's key binds the party;
- give each session an id that is never reused (the job id of the supply-chain analysis,
  say), and check that it names a session this node agreed to, with this peer, in this role.

The library (2.0.4) holds the GIL while it computes, about 90 µs of CPU per key and step on
one core; ``n`` keys a side cost four times ``n`` such steps.  Run large sessions in a
process of their own (the job's sandbox), not on a thread of the node's link.
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import private_set_intersection.python as openmined_psi

from keys.errors import KeysError

#: The chance that one session counts a key that is not the sender's (the library's ``fpr``:
#: for the whole request, not per key).  One in a million keeps the GCS about 5 bytes a key
#: and the library's ``hash_range = max(n_s, n_r) · n_r / FPR`` within 64 bits up to
#: :data:`MAX_KEYS_PRODUCT`.
FPR = 1e-6
#: The most ``max(n_s, n_r) · n_r`` one session takes (2M by 2M): beyond it the library's
#: ``hash_range`` would overflow a signed 64-bit integer (at 2^63 · FPR ≈ 9.2e12).
MAX_KEYS_PRODUCT = 4_000_000_000_000

_TAG = b"veil-psi-1"
_REQUEST, _ANSWER = b"Q", b"A"
_SIZE_ONLY, _REVEAL = b"s", b"r"
_DIGEST = 32
_P = TypeVar("_P")


class PsiError(KeysError):
    """A PSI session cannot go on: a message is malformed, not of this session or mode, or
    answered twice, or the sets are too large.  Refuse the session; never retry it with
    the same id."""


def normalise(key: str) -> str:
    """A join key as PSI compares it: surrounding whitespace stripped, Unicode NFC."""
    if not isinstance(key, str):
        raise PsiError("a PSI join key must be a string (convert numbers before the session)")
    text = unicodedata.normalize("NFC", key.strip())
    if not text:
        raise PsiError("a PSI join key is empty (drop missing keys before the session)")
    return text


def _distinct(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(normalise(k) for k in keys))


def _hashed(session_id: str, keys: list[str]) -> list[bytes]:
    prefix = _TAG + b"\0" + session_id.encode() + b"\0"
    return [hashlib.sha256(prefix + k.encode()).digest() for k in keys]


def _check_session_id(session_id: str) -> bytes:
    raw = session_id.encode()
    if not session_id or len(raw) > 200 or any(c in session_id for c in "\0\n"):
        raise PsiError("a PSI session id is 1 to 200 bytes of text without NUL or newline")
    return raw


# ---------------------------------------------------------------- message format


@dataclass(frozen=True)
class _Message:
    kind: bytes
    session_id: str
    reveal: bool
    in_reply_to: bytes  # the answered request's SHA-256; empty in a request
    parts: tuple[bytes, ...]


def _encode(message: _Message) -> bytes:
    session = _check_session_id(message.session_id)
    out = [_TAG, b"\n", message.kind, _REVEAL if message.reveal else _SIZE_ONLY]
    out += [struct.pack(">H", len(session)), session, message.in_reply_to]
    for part in message.parts:
        out += [struct.pack(">Q", len(part)), part]
    return b"".join(out)


def _decode(data: bytes, kind: bytes) -> _Message:
    """The message in ``data``, which must be of ``kind``; every byte accounted for."""
    head = len(_TAG) + 3
    if not isinstance(data, bytes) or data[: len(_TAG) + 1] != _TAG + b"\n":
        raise PsiError("not a veil-psi-1 message")
    if data[len(_TAG) + 1 : head - 1] != kind or data[head - 1 : head] not in (_REVEAL, _SIZE_ONLY):
        raise PsiError("a PSI message of the wrong kind or mode")
    reveal = data[head - 1 : head] == _REVEAL
    try:
        (length,) = struct.unpack_from(">H", data, head)
        at = head + 2
        session_id = data[at : at + length].decode()
        at += length
        reply = b""
        if kind == _ANSWER:
            reply, at = data[at : at + _DIGEST], at + _DIGEST
        parts = []
        for _ in range(1 if kind == _REQUEST else 2):
            (size,) = struct.unpack_from(">Q", data, at)
            if size > len(data) - at - 8:
                raise PsiError("a PSI message is truncated or malformed")
            parts.append(data[at + 8 : at + 8 + size])
            at += 8 + size
    except (struct.error, UnicodeDecodeError):
        raise PsiError("a PSI message is truncated or malformed") from None
    if at != len(data) or len(reply) != (_DIGEST if kind == _ANSWER else 0):
        raise PsiError("a PSI message is truncated or malformed")
    return _Message(kind, session_id, reveal, reply, tuple(parts))


def _parse(proto: type[_P], data: bytes) -> _P:
    message = proto()
    parse: Any = message.ParseFromString  # type: ignore[attr-defined]
    try:
        parse(data)
    except Exception:  # the protobuf runtime's DecodeError, whichever implementation
        raise PsiError("a PSI message does not parse") from None
    return message


# ---------------------------------------------------------------- the two roles


class Sender:
    """The sender's side (the library's server): it answers one request, learning only how
    many distinct keys the receiver has.

    ``reveal_intersection`` is the template's mode; a request in the other mode is refused.
    ``max_receiver_keys`` (the template's bound) refuses larger requests.
    """

    def __init__(
        self,
        session_id: str,
        keys: Iterable[str],
        *,
        reveal_intersection: bool,
        max_receiver_keys: int | None = None,
    ) -> None:
        _check_session_id(session_id)
        self.session_id = session_id
        self.reveal_intersection = reveal_intersection
        self.max_receiver_keys = max_receiver_keys
        self._hashes = _hashed(session_id, _distinct(keys))
        self._server = openmined_psi.server.CreateWithNewKey(reveal_intersection)
        self._answered = False

    @property
    def size(self) -> int:
        """The number of distinct keys this side holds (the receiver will learn it)."""
        return len(self._hashes)

    def answer(self, request: bytes) -> bytes:
        """The answer to the receiver's ``request`` (whose signature the caller verified):
        once per session."""
        if self._answered:
            raise PsiError("this PSI session answered its request already")
        message = _decode(request, _REQUEST)
        if message.session_id != self.session_id:
            raise PsiError("a PSI request of another session")
        if message.reveal != self.reveal_intersection:
            raise PsiError("a PSI request in another mode than the template's")
        parsed = _parse(openmined_psi.Request, message.parts[0])
        n_r = len(parsed.encrypted_elements)
        if parsed.reveal_intersection != self.reveal_intersection:
            raise PsiError("a PSI request in another mode than the template's")
        if self.max_receiver_keys is not None and n_r > self.max_receiver_keys:
            raise PsiError("the PSI request holds more keys than the template allows")
        client_inputs = max(n_r, 1)  # the library divides its fpr by this
        if max(client_inputs, self.size) * client_inputs > MAX_KEYS_PRODUCT:
            raise PsiError("the two key sets are too large for one PSI session")
        self._answered = True  # even if the library refuses below: no second try
        try:
            setup = self._server.CreateSetupMessage(
                FPR, client_inputs, self._hashes, openmined_psi.DataStructure.GCS
            )
            response = self._server.ProcessRequest(parsed)
        except RuntimeError:  # a point not on the curve, or a field out of range
            raise PsiError("the PSI request holds an invalid element") from None
        return _encode(
            _Message(
                _ANSWER,
                self.session_id,
                self.reveal_intersection,
                hashlib.sha256(request).digest(),
                (setup.SerializeToString(), response.SerializeToString()),
            )
        )


class _Receiver:
    """What both receivers share: the request, and checking the answer."""

    _reveal: bool

    def __init__(self, session_id: str, keys: Iterable[str]) -> None:
        _check_session_id(session_id)
        self.session_id = session_id
        self._keys = _distinct(keys)
        self._client = openmined_psi.client.CreateWithNewKey(self._reveal)
        self._request: bytes | None = None
        self._finished = False

    @property
    def size(self) -> int:
        """The number of distinct keys this side holds (the sender will learn it)."""
        return len(self._keys)

    def request(self) -> bytes:
        """The request for the sender: once per session."""
        if self._request is not None:
            raise PsiError("this PSI session made its request already")
        hashed = _hashed(self.session_id, self._keys)
        request = self._client.CreateRequest(hashed)  # pybind11 takes bytes for std::string
        self._request = _encode(
            _Message(_REQUEST, self.session_id, self._reveal, b"", (request.SerializeToString(),))
        )
        return self._request

    def _open(self, answer: bytes) -> tuple[openmined_psi.ServerSetup, openmined_psi.Response]:
        if self._request is None:
            raise PsiError("this PSI session has not made its request yet")
        if self._finished:
            raise PsiError("this PSI session read its answer already")
        message = _decode(answer, _ANSWER)
        if message.session_id != self.session_id or message.reveal != self._reveal:
            raise PsiError("a PSI answer of another session or mode")
        if message.in_reply_to != hashlib.sha256(self._request).digest():
            raise PsiError("a PSI answer to another request")
        setup = _parse(openmined_psi.ServerSetup, message.parts[0])
        response = _parse(openmined_psi.Response, message.parts[1])
        if setup.WhichOneof("data_structure") != "gcs" or len(response.encrypted_elements) != (
            self.size
        ):
            raise PsiError("a PSI answer that does not answer this request")
        self._finished = True
        return setup, response


class SizeReceiver(_Receiver):
    """The receiver's side when the template reveals only the intersection's size: its
    :meth:`finish` gives a number, and the sender's sorted response hides which keys
    matched."""

    _reveal = False

    def finish(self, answer: bytes) -> int:
        """The intersection's size, from the sender's ``answer`` (signature verified)."""
        setup, response = self._open(answer)
        try:
            return int(self._client.GetIntersectionSize(setup, response))
        except RuntimeError:
            raise PsiError("the PSI answer holds an invalid element") from None


class IntersectionReceiver(_Receiver):
    """The receiver's side when the template reveals the intersection to it."""

    _reveal = True

    def finish(self, answer: bytes) -> frozenset[str]:
        """The keys of this side (normalised) that the sender holds too."""
        setup, response = self._open(answer)
        try:
            indices = self._client.GetIntersection(setup, response)
        except RuntimeError:
            raise PsiError("the PSI answer holds an invalid element") from None
        return frozenset(self._keys[i] for i in indices)
