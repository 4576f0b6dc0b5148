"""Held tier-5 outputs: stored encrypted under the enterprise's key until it decides.

An output the checks held did not pass them: it may hold just what they feared (values
of the data).  So it is never written to the database in plaintext: it is an encrypted
object of the enterprise (``held:<job id>``, version 1, like a model's weights), and the
job row keeps only the path, the wrapped data key and the verdict.  The enterprise's
look decrypts it in memory; a release by hand moves it into the released result; a
rejection deletes the object.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sandbox.data.objects import read_decrypted, write_encrypted
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job

log = logging.getLogger(__name__)

HELD_VERSION: Final = 1


@dataclass(frozen=True)
class HeldObject:
    """A held output, encrypted: where it is, its wrapped data key, the plaintext's hash."""

    path: str
    wrapped_key: str
    sha256: str


def encrypt_held(
    veil: Veil, tenant: str, enterprise_id: str, job_id: str, result: dict[str, Any]
) -> HeldObject:
    """Encrypt ``result`` (the held output, JSON) as the job's held object (a key-server
    call: outside any database transaction)."""
    data = json.dumps(result, sort_keys=True).encode()
    relative = Path(enterprise_id) / "held" / f"{job_id}.veil"
    stored = write_encrypted(veil, tenant, f"held:{job_id}", HELD_VERSION, data, relative)
    return HeldObject(stored.path, stored.wrapped_key, hashlib.sha256(data).hexdigest())


def attach_held(job: Job, held: HeldObject) -> None:
    """Record the held object on the job (in the transaction that holds it)."""
    job.artifact_path, job.artifact_wrapped_key = held.path, held.wrapped_key
    job.artifact_sha256 = held.sha256


def load_held(veil: Veil, tenant: str, job: Job) -> dict[str, Any]:
    """The held output of ``job``, decrypted in memory."""
    if job.artifact_path is None or job.artifact_wrapped_key is None:
        raise LookupError(f"job {job.id} has no held output")
    data = read_decrypted(
        veil, tenant, f"held:{job.id}", HELD_VERSION, job.artifact_wrapped_key, job.artifact_path
    )
    result = json.loads(data)
    assert isinstance(result, dict)
    return result


def detach_held(job: Job) -> str | None:
    """Clear the job's held-object fields (in the transaction that decides it); the
    object's path, to delete with ``delete_held`` once that transaction committed."""
    path = job.artifact_path
    job.artifact_path = job.artifact_wrapped_key = job.artifact_sha256 = None
    return path


def delete_held(veil: Veil, path: str | None) -> None:
    """Delete a decided held output's encrypted object."""
    if path is None:
        return
    try:
        (veil.settings.objects_dir / path).unlink(missing_ok=True)
    except OSError:  # pragma: no cover - it stays encrypted; crypto-shredding covers it
        log.warning("could not delete a decided held output (%s)", path)
