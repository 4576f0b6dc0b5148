"""Binary outputs of jobs (tier 4: model weights), stored encrypted like datasets.

An artifact is released to the provider who ran the job, but it is derived
from the enterprise's data, so at rest it is encrypted under the enterprise's
key (object ``job:<id>``, version 1) and decrypted only when downloaded.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from sandbox.core import Veil

ARTIFACT_VERSION = 1


@dataclass(frozen=True)
class StoredArtifact:
    path: str  # relative to the objects directory
    wrapped_key: str
    sha256: str  # of the plaintext, so a provider can check what it downloaded


def store_artifact(
    veil: Veil, tenant: str, enterprise_id: str, job_id: str, data: bytes
) -> StoredArtifact:
    """Encrypt ``data`` to disk durably (partial file, fsync, rename)."""
    relative = Path(enterprise_id) / "jobs" / f"{job_id}.veil"
    path = veil.settings.objects_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as out:
        wrapped = veil.keys.encrypt_stream(
            tenant, f"job:{job_id}", ARTIFACT_VERSION, io.BytesIO(data), out
        )
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    return StoredArtifact(str(relative), wrapped, hashlib.sha256(data).hexdigest())


def load_artifact(veil: Veil, tenant: str, job_id: str, path: str, wrapped_key: str) -> bytes:
    """Decrypt an artifact into memory."""
    out = io.BytesIO()
    with open(veil.settings.objects_dir / path, "rb") as src:
        veil.keys.decrypt_stream(tenant, f"job:{job_id}", ARTIFACT_VERSION, wrapped_key, src, out)
    return out.getvalue()
