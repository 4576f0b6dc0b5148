"""Sealed boxes (``keys.sealed``): only the key's holder opens one, only in its context,
and any change to the box is detected."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from keys.sealed import SealedError, open_sealed, public_bytes, seal


def test_the_holder_opens_it_in_its_context() -> None:
    key = X25519PrivateKey.generate()
    box = seal(public_bytes(key), b"P-00042", b"run-1|rows")
    assert b"P-00042" not in box
    assert open_sealed(key, box, b"run-1|rows") == b"P-00042"


@pytest.mark.parametrize("where", [0, 40, 50, -1])
def test_a_changed_box_another_key_or_another_context_does_not_open(where: int) -> None:
    key = X25519PrivateKey.generate()
    box = bytearray(seal(public_bytes(key), b"rows", b"run-1|rows"))
    with pytest.raises(SealedError):
        open_sealed(X25519PrivateKey.generate(), bytes(box), b"run-1|rows")
    with pytest.raises(SealedError):
        open_sealed(key, bytes(box), b"run-2|rows")  # relayed into another run
    with pytest.raises(SealedError):
        open_sealed(key, bytes(box), b"run-1|intersect")  # or another phase
    box[where] ^= 1
    with pytest.raises(SealedError):
        open_sealed(key, bytes(box), b"run-1|rows")


def test_malformed_input_is_refused() -> None:
    with pytest.raises(SealedError):
        seal(b"short", b"x", b"c")
    with pytest.raises(SealedError):
        open_sealed(X25519PrivateKey.generate(), b"too short", b"c")


def test_each_box_is_fresh() -> None:
    key = public_bytes(X25519PrivateKey.generate())
    assert seal(key, b"same", b"c") != seal(key, b"same", b"c")
