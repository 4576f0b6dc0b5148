"""The encrypted object store: files under ``<data dir>/objects``, each in the ``keys``
streaming format under a fresh data key of its enterprise, bound to (tenant, object, version).

Writes go to a ``.partial`` file that is fsynced and renamed, so a crash never
leaves half an object under its real name.  Reads decrypt into memory only.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from sandbox.config.datadir import make_private_dirs, open_private
from sandbox.runtime.veil import Veil

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


@dataclass(frozen=True)
class StoredObject:
    path: str  # relative to the objects directory
    wrapped_key: str
    ciphertext_sha256: str
    size: int


def write_encrypted(
    veil: Veil, tenant: str, object_id: str, version: int, data: bytes, relative: Path
) -> StoredObject:
    """Encrypt ``data`` to ``objects/<relative>`` durably (mode 0600, its directories 0700);
    only the wrapped key is returned."""
    path = veil.settings.objects_dir / relative
    make_private_dirs(path.parent)
    partial = path.with_suffix(".partial")
    with open_private(partial) as out:
        hashing = _HashingWriter(out)
        wrapped = veil.keys.encrypt_stream(
            tenant, object_id, version, io.BytesIO(data), cast(BinaryIO, hashing)
        )
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    return StoredObject(str(relative), wrapped, hashing.digest.hexdigest(), hashing.size)


class _HashingWriter(io.RawIOBase):
    """Writes through to a file, hashing and counting the bytes on their way (the ciphertext's
    SHA-256 without reading the file back)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        written = self._out.write(data)
        self.digest.update(memoryview(data)[:written])
        self.size += written
        return written


def read_decrypted(
    veil: Veil,
    tenant: str,
    object_id: str,
    version: int,
    wrapped_key: str,
    relative: str,
    *,
    on_unwrapped: Callable[[], None] | None = None,
) -> bytes:
    """Decrypt a stored object into memory (never to disk).

    ``on_unwrapped``: called once its data key is unwrapped, before any plaintext exists
    (see ``KeyService.decrypt_stream``); if it raises, nothing is decrypted.
    """
    stored = Decrypting(veil, tenant, object_id, version, wrapped_key, relative, on_unwrapped)
    return read_all(stored)


def read_all(stored: Decrypting) -> bytes:
    """The whole plaintext of ``stored``, in memory."""
    out = io.BytesIO()
    stored.write_to(out)
    return out.getvalue()


@dataclass(frozen=True)
class Decrypting:
    """A stored object decrypted as it is written on (a job's hand-over to its sandbox), so
    that its plaintext is never held whole: ``write_to`` writes it to ``out`` chunk by
    chunk, each only after its tag verified, and raises on any damage, after which what
    reached ``out`` must be discarded (the stream as a whole is authentic only if it
    returns).  ``size``: the ciphertext's size, more than the plaintext ever is."""

    veil: Veil
    tenant: str
    object_id: str
    version: int
    wrapped_key: str
    relative: str
    on_unwrapped: Callable[[], None] | None = None

    @property
    def size(self) -> int:
        return (self.veil.settings.objects_dir / self.relative).stat().st_size

    def write_to(self, out: BinaryIO) -> None:
        with open(self.veil.settings.objects_dir / self.relative, "rb") as src:
            self.veil.keys.decrypt_stream(
                self.tenant,
                self.object_id,
                self.version,
                self.wrapped_key,
                src,
                out,
                on_unwrapped=self.on_unwrapped,
            )
