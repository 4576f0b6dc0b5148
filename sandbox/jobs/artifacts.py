"""Binary outputs of jobs (tier 4: model weights), stored encrypted like datasets.

An artifact is released to the provider who ran the job, but it is derived
from the enterprise's data, so at rest it is encrypted under the enterprise's
key (object ``job:<id>``, version 1) and decrypted only when downloaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sandbox.data.objects import read_decrypted, write_encrypted
from sandbox.runtime.veil import Veil

ARTIFACT_VERSION = 1


@dataclass(frozen=True)
class StoredArtifact:
    path: str  # relative to the objects directory
    wrapped_key: str
    sha256: str  # of the plaintext, so a provider can check what it downloaded


def store_artifact(
    veil: Veil, tenant: str, enterprise_id: str, job_id: str, data: bytes
) -> StoredArtifact:
    relative = Path(enterprise_id) / "jobs" / f"{job_id}.veil"
    stored = write_encrypted(veil, tenant, f"job:{job_id}", ARTIFACT_VERSION, data, relative)
    return StoredArtifact(stored.path, stored.wrapped_key, hashlib.sha256(data).hexdigest())


def load_artifact(veil: Veil, tenant: str, job_id: str, path: str, wrapped_key: str) -> bytes:
    return read_decrypted(veil, tenant, f"job:{job_id}", ARTIFACT_VERSION, wrapped_key, path)
