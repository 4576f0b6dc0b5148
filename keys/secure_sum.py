"""Secure aggregation: the sum of many parties' vectors, and nothing else, for the aggregator.

The protocol is Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving
Machine Learning" (CCS 2017), semi-honest variant, with the aggregator relaying every
message (the parties never talk to each other directly):

1. **Advertise.**  Each party makes two X25519 key pairs: ``c`` (to encrypt the shares it
   sends) and ``s`` (to agree its pairwise masks), and publishes both public keys
   (:class:`Advert`; the caller signs it with the party's own signing key, so a relaying
   aggregator cannot substitute keys).
2. **Share keys.**  Each party draws a self-mask seed ``b`` and splits ``b`` and its ``s``
   secret key into Shamir shares, ``threshold`` of ``n`` needed to rebuild either; each
   other party's two shares travel encrypted (AES-256-GCM under the key agreed with its
   ``c`` key, bound to the round and both ids): the aggregator relays them unread.
3. **Masked input.**  Each party sends ``x + PRG(b) + Σ ±PRG(s_uv)`` (mod 2^64), one
   pairwise mask per other party that shared its keys (``+`` towards a larger id, ``-``
   towards a smaller): the pairwise masks cancel in the sum.
4. **Unmask.**  The aggregator names the parties whose masked input arrived (survivors) and
   those who dropped after sharing; each survivor hands back its shares of the survivors'
   ``b`` and of the dropped parties' ``s`` keys.  With ``threshold`` of them the aggregator
   removes every survivor's self-mask and the masks the survivors added towards dropped
   parties: what is left is the survivors' sum.

What the aggregator learns: the sum of the survivors' inputs.  One party's input would need
both its ``b`` (revealed only while it counts as a survivor) and its ``s`` key (revealed only
while it counts as dropped); an honest party answers one unmask request per round and never
for a party it is told both of (:meth:`Party.unmask`), so the aggregator gets at most one
of the two unless ``threshold`` parties collude with it.  ``threshold`` must be more than half
of the parties (two disjoint majorities cannot both answer).  Values are unsigned 64-bit
integers; :func:`encode` and :func:`decode` carry fixed-point reals (two's complement).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: A vector of unsigned 64-bit integers (arithmetic wraps modulo 2^64).
Vector = npt.NDArray[np.uint64]

#: A Mersenne prime larger than any 32-byte secret: Shamir shares live in GF(P).
P = 2**521 - 1
_SHARE_BYTES = 66
_MOD_BITS = 64


class SecureSumError(Exception):
    """The protocol cannot go on (a party refuses, too few remain, a message is bad)."""


def _kdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def prg(seed: bytes, length: int) -> Vector:
    """``length`` pseudorandom unsigned 64-bit integers from a 32-byte seed (ChaCha20)."""
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    raw = stream.update(bytes(8 * length))
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


# ---------------------------------------------------------------- Shamir over GF(P)


def split(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, int]:
    """Shares of ``secret`` (at most 32 bytes) at the points ``xs``: any ``threshold`` of
    them rebuild it, fewer say nothing about it."""
    if not 0 < threshold <= len(xs) or len(secret) > 32:
        raise SecureSumError("a secret of at most 32 bytes, shared among threshold ≤ n")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(P) for _ in range(threshold - 1)
    ]
    shares = {}
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % P
        shares[x] = y
    return shares


def combine(shares: Mapping[int, int], size: int = 32) -> bytes:
    """The secret from ``shares`` (Lagrange interpolation at 0)."""
    secret = 0
    points = list(shares.items())
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (-xj) % P
                denominator = denominator * (xi - xj) % P
        secret = (secret + yi * numerator * pow(denominator, -1, P)) % P
    if secret >= 1 << (8 * size):
        raise SecureSumError("the shares do not rebuild a secret")
    return secret.to_bytes(size, "big")


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class Advert:
    """A party's two public keys for one round (raw X25519, 32 bytes each)."""

    party: str
    c_public: bytes
    s_public: bytes

    def signed_bytes(self, round_id: str) -> bytes:
        """What the party signs, so that nobody relaying it can swap its keys."""
        return b"|".join(
            [b"veil-secure-sum-1", round_id.encode(), self.party.encode(), self.c_public,
             self.s_public]
        )  # fmt: skip


@dataclass(frozen=True)
class SealedShares:
    """One party's shares for another, encrypted for it alone."""

    sender: str
    recipient: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class Reveal:
    """A survivor's answer to the unmask request: shares of survivors' self-mask seeds and of
    dropped parties' mask keys (``party -> (x, y)``)."""

    party: str
    seeds: dict[str, tuple[int, int]]
    keys: dict[str, tuple[int, int]]


def _aad(round_id: str, sender: str, recipient: str) -> bytes:
    return f"veil-secure-sum-1|{round_id}|{sender}|{recipient}".encode()


def _point(order: Sequence[str], party: str) -> int:
    return order.index(party) + 1  # Shamir's x of a party: its place among all, from 1


def _pair_seed(private: X25519PrivateKey, public: bytes, round_id: str) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(public))
    return _kdf(shared, f"veil-secure-sum-1|mask|{round_id}".encode())


def _check_threshold(threshold: int, n: int) -> None:
    if not n // 2 < threshold <= n:
        raise SecureSumError(
            f"the threshold must be more than half of the {n} parties and at most all of them"
        )


# ---------------------------------------------------------------- a party


@dataclass
class Party:
    """One party's side of a round: its keys and secrets never leave it unencrypted."""

    party: str
    round_id: str
    threshold: int
    _c: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)
    _s: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)
    _b: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _adverts: dict[str, Advert] = field(default_factory=dict, repr=False)
    _held: dict[str, tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=dict)
    _sharers: tuple[str, ...] = ()
    _answered: bool = False
    _survivors: frozenset[str] = frozenset()
    _labels: set[str] = field(default_factory=set)
    # Keys agreed with each other party, each derived once per set of adverts (an X25519
    # exchange costs about 30 µs; a round needs one per other party for the channel and
    # one for the mask, each used twice).
    _channels: dict[str, bytes] = field(default_factory=dict, repr=False)
    _pair_seeds: dict[str, bytes] = field(default_factory=dict, repr=False)

    def advertise(self) -> Advert:
        c, s = self._c.public_key(), self._s.public_key()
        return Advert(self.party, c.public_bytes_raw(), s.public_bytes_raw())

    def share_keys(self, adverts: Iterable[Advert]) -> list[SealedShares]:
        """Shares of this party's ``b`` and ``s`` for every advertised party, sealed."""
        self._adverts = {a.party: a for a in adverts}
        self._channels.clear()  # agreed with these adverts' keys only
        self._pair_seeds.clear()
        order = sorted(self._adverts)
        if self.party not in self._adverts:
            raise SecureSumError("this party is not among the advertised parties")
        _check_threshold(self.threshold, len(order))
        xs = [_point(order, p) for p in order]
        s_raw = self._s.private_bytes_raw()
        seeds, keys = split(self._b, xs, self.threshold), split(s_raw, xs, self.threshold)
        sealed = []
        for other in order:
            x = _point(order, other)
            plain = x.to_bytes(2, "big") + seeds[x].to_bytes(_SHARE_BYTES, "big")
            plain += keys[x].to_bytes(_SHARE_BYTES, "big")
            if other == self.party:
                self._held[self.party] = ((x, seeds[x]), (x, keys[x]))
                continue
            nonce = secrets.token_bytes(12)
            key = self._channel(other)
            box = AESGCM(key).encrypt(nonce, plain, _aad(self.round_id, self.party, other))
            sealed.append(SealedShares(self.party, other, nonce, box))
        return sealed

    def _channel(self, other: str) -> bytes:
        if other not in self._channels:
            public = X25519PublicKey.from_public_bytes(self._adverts[other].c_public)
            info = f"veil-secure-sum-1|channel|{self.round_id}".encode()
            self._channels[other] = _kdf(self._c.exchange(public), info)
        return self._channels[other]

    def _pair_seed(self, other: str) -> bytes:
        if other not in self._pair_seeds:
            self._pair_seeds[other] = _pair_seed(
                self._s, self._adverts[other].s_public, self.round_id
            )
        return self._pair_seeds[other]

    def masked_input(self, values: Vector, inbox: Iterable[SealedShares]) -> Vector:
        """``values`` (uint64) masked: its self-mask and a pairwise mask per party that sent
        this party its shares (those are the parties the aggregator can unmask)."""
        for sealed in inbox:
            if sealed.recipient != self.party or sealed.sender not in self._adverts:
                raise SecureSumError("a share addressed to another party or from a stranger")
            try:
                plain = AESGCM(self._channel(sealed.sender)).decrypt(
                    sealed.nonce, sealed.ciphertext,
                    _aad(self.round_id, sealed.sender, self.party),
                )  # fmt: skip
            except InvalidTag:
                raise SecureSumError(f"the shares from {sealed.sender} do not open") from None
            x = int.from_bytes(plain[:2], "big")
            seed_y = int.from_bytes(plain[2 : 2 + _SHARE_BYTES], "big")
            key_y = int.from_bytes(plain[2 + _SHARE_BYTES :], "big")
            self._held[sealed.sender] = ((x, seed_y), (x, key_y))
        self._sharers = tuple(sorted(p for p in self._held if p != self.party))
        if len(self._sharers) + 1 < self.threshold:
            raise SecureSumError("fewer parties shared their keys than the threshold")
        values = np.asarray(values, dtype=np.uint64)
        masked = values + prg(_kdf(self._b, self.round_id.encode()), len(values))
        for other in self._sharers:
            mask = prg(self._pair_seed(other), len(values))
            masked = masked + mask if self.party < other else masked - mask
        return masked

    def unmask(self, survivors: Iterable[str], dropped: Iterable[str]) -> Reveal:
        """This party's shares for the aggregator: once per round, never both of one party's
        secrets, and only when enough parties survived to make the sum not one input."""
        alive, gone = set(survivors), set(dropped)
        if self._answered:
            raise SecureSumError("this party answered its unmask request already")
        if alive & gone:
            raise SecureSumError("a party cannot be both a survivor and dropped")
        if self.party not in alive or len(alive) < self.threshold:
            raise SecureSumError("too few survivors: unmasking would show too little")
        if not (alive | gone) <= set(self._held):
            raise SecureSumError("unmasking a party that never shared its keys")
        if gone != set(self._held) - alive:
            raise SecureSumError("every party that shared its keys is a survivor or dropped")
        self._answered, self._survivors = True, frozenset(alive)
        return Reveal(
            self.party,
            seeds={p: self._held[p][0] for p in alive},
            keys={p: self._held[p][1] for p in gone},
        )

    def masked_again(self, values: Vector, label: str) -> Vector:
        """A further vector of this party for the same round, after its unmask answer, that
        only the sum over exactly the survivors it was told of can open: masked by the
        pairwise masks towards each other survivor, under ``label`` (once per label).

        The aggregator holds every survivor's self-mask seed by then but none of their
        mask keys, so each survivor's further vector stays hidden; if one survivor does
        not send its own, the masks do not cancel and nothing can be read."""
        if not self._answered:
            raise SecureSumError("a further vector comes after this party's unmask answer")
        if label in self._labels or not label:
            raise SecureSumError("each further vector needs a label of its own")
        self._labels.add(label)
        values = np.asarray(values, dtype=np.uint64)
        masked = values.copy()
        for other in sorted(self._survivors - {self.party}):
            mask = prg(_kdf(self._pair_seed(other), f"again|{label}".encode()), len(values))
            masked = masked + mask if self.party < other else masked - mask
        return masked


# ---------------------------------------------------------------- the aggregator


def summed_again(survivors: Iterable[str], masked: Mapping[str, Vector]) -> Vector:
    """The sum of the survivors' further vectors (:meth:`Party.masked_again`): every survivor
    must have sent one, or the pairwise masks do not cancel."""
    if set(masked) != set(survivors) or not masked:
        raise SecureSumError("every survivor must send its further vector")
    vectors = [np.asarray(v, dtype=np.uint64) for v in masked.values()]
    total = np.zeros(len(vectors[0]), dtype=np.uint64)
    for vector in vectors:
        total = total + vector
    return total


def unmasked_sum(
    round_id: str,
    threshold: int,
    adverts: Mapping[str, Advert],
    sharers: Iterable[str],
    masked: Mapping[str, Vector],
    reveals: Iterable[Reveal],
) -> Vector:
    """The sum of the survivors' inputs (``masked``'s parties), from their masked inputs and
    at least ``threshold`` reveals.  ``sharers``: the parties whose shares were relayed."""
    alive, shared = set(masked), set(sharers)
    gone = shared - alive
    answers = [r for r in reveals if r.party in alive]
    if len(answers) < threshold:
        raise SecureSumError("too few survivors answered the unmask request")
    length = len(next(iter(masked.values())))
    total = np.zeros(length, dtype=np.uint64)
    for vector in masked.values():
        total = total + np.asarray(vector, dtype=np.uint64)
    for party in alive:
        shares = dict(r.seeds[party] for r in answers if party in r.seeds)
        b = combine(dict(list(shares.items())[:threshold]))
        total = total - prg(_kdf(b, round_id.encode()), length)
    for party in gone:
        shares = dict(r.keys[party] for r in answers if party in r.keys)
        s = X25519PrivateKey.from_private_bytes(combine(dict(list(shares.items())[:threshold])))
        for survivor in alive:
            mask = prg(_pair_seed(s, adverts[survivor].s_public, round_id), length)
            # The survivor added +mask towards a larger id, -mask towards a smaller one.
            total = total - mask if survivor < party else total + mask
    return total


def encode(values: Sequence[float], scale: float) -> Vector:
    """Reals as unsigned 64-bit fixed point (``round(v * scale)``, two's complement)."""
    return np.array([round(v * scale) % (1 << _MOD_BITS) for v in values], dtype=np.uint64)


def decode(values: Vector, scale: float) -> list[float]:
    """The reals :func:`encode` made (a sum of them, if it did not overflow 63 bits)."""
    out = []
    for v in values.tolist():
        signed = v - (1 << _MOD_BITS) if v >= 1 << (_MOD_BITS - 1) else v
        out.append(signed / scale)
    return out
