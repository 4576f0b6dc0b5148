"""The end of a commitment letter's retention period: the provider's results and models from
that grant are shredded, and the grant ends if it was still in force.

Run by every worker's upkeep (``sandbox.jobs.workers.Upkeep``); idempotent, so several
workers doing it at once is harmless.  For each letter whose ``retain_until`` has passed
and that is not shredded yet, in one transaction: every job of the grant loses its result
content (``result``; its SHA-256 stays, so receipts and the audit log still name what was
released), its encrypted model or held output loses its wrapped data key (the ciphertext
can no longer be decrypted by anyone, the key server included), the grant is revoked if it
was still in force, the letter is marked shredded, and ``letter.retention_shredded`` is
audited with the jobs concerned.  The ciphertext files are deleted after the commit.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from i18n import Msg
from policies import audit
from policies.errors import Conflict
from policies.grants import Grant
from policies.letters import CommitmentLetter
from sandbox.jobs.submit import cancel_queued_jobs
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job

log = logging.getLogger(__name__)

SHREDDED = Msg(
    "this job's result and model were shredded when the retention period of its grant's "
    "commitment letter ended; they cannot be read again"
)


def refuse_if_shredded(job: Job) -> None:
    """:class:`Conflict` (``shredded``) for a job whose outputs were shredded."""
    if job.shredded_at is not None:
        raise Conflict(SHREDDED, code="shredded")


def shred_expired(veil: Veil, now: datetime | None = None) -> int:
    """Shred what every letter past its retention period covers; the number of letters."""
    when = now or veil.clock()
    with veil.db.read() as session:
        due = list(
            session.scalars(
                select(CommitmentLetter.id).where(
                    CommitmentLetter.retain_until <= when,
                    CommitmentLetter.shredded_at.is_(None),
                )
            )
        )
    done = 0
    for letter_id in due:
        files = _shred_one(veil, letter_id, when)
        if files is None:
            continue
        done += 1
        for path in files:
            (veil.settings.objects_dir / path).unlink(missing_ok=True)
    return done


def _shred_one(veil: Veil, letter_id: str, now: datetime) -> list[Path] | None:
    """Shred one letter's jobs in one transaction; the files to delete after it commits
    (None: another worker did it first)."""
    with veil.db.transaction() as session:
        letter = session.get(CommitmentLetter, letter_id, with_for_update=True)
        if letter is None or letter.shredded_at is not None:
            return None
        jobs = list(session.scalars(select(Job).where(Job.grant_id == letter.grant_id)))
        files = [Path(j.artifact_path) for j in jobs if j.artifact_path]
        shredded = []
        for job in jobs:
            if job.result is None and job.artifact_path is None:
                continue
            job.result, job.artifact_path, job.artifact_wrapped_key = None, None, None
            job.shredded_at = now
            shredded.append(job.id)
        letter.shredded_at = now
        grant = session.get(Grant, letter.grant_id)
        ended = grant is not None and grant.revoked_at is None and now < grant.valid_until
        if ended and grant is not None:
            grant.revoked_at = now
            cancel_queued_jobs(
                session,
                grant_ids=[grant.id],
                why="the retention period of the grant's commitment letter ended",
                now=now,
            )
        audit.record(
            session,
            "letter.retention_shredded",
            tenant_id=letter.enterprise_id,
            resource=f"grant:{letter.grant_id}",
            details={
                "letter_id": letter.id,
                "provider_id": letter.provider_id,
                "retain_until": letter.retain_until.isoformat(),
                "jobs": shredded,
                "files": len(files),
                "grant_ended": ended,
            },
        )
    log.info("letter %s: %d job outputs shredded", letter_id, len(shredded))
    return files
