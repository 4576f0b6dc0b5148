"""What Veil itself does in the key server, and the Veil records that explain it: the
allow-list behind ``veil audit keys`` (``sandbox.oversight.keyaudit``).

Every key-server request that touches keys, policies or authentication has a name
(``keys.auditlog.operation_of``: ``decrypt``, ``key.export``, ``policy.write``,
``approle.secret-id.create``, ...).  It is explained only when it is one of the operations
listed here *and* the Veil record named with it explains it; anything else — an operation
Veil never does (an export, a backup, a policy written after Veil's set-up, a token
created), or one it does but with no record behind it (a decryption outside every job) — is
unexplained, and the report flags it.  Nothing is trusted for being "known good".

Veil tags its key-server requests (header ``X-Veil-Object``, ``keys.key_operation``) with
what they serve: ``enterprise:<slug>/1``, ``dataset:<id>/<version>``, ``job:<id>/1`` (a
model), ``rotation:<id>/1``, ``checkpoint:<seq>/1``, ``receipt:<id>/1``,
``export:<from>-<to>/1``, ``letter:<id>/1``, ``evidence:<id>/1``, ``kpi_verdict:<id>/1``,
``scorecard:<id>/1``; the tag says which record to look for, the record and its time
decide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select

from keys.auditlog import AuditEntry, parse_label
from keys.tenancy import PLATFORM_GM_MOUNT, PLATFORM_MOUNT, SIGNING_KEY, SM2_SIGNING_KEY
from policies import audit
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, DatasetVersion, Job, JobStatus

#: How far the key server's clock and Veil's may disagree.
CLOCK_SLACK: Final = timedelta(seconds=2)
_MODEL_VERSION: Final = 1  # sandbox.jobs.artifacts.ARTIFACT_VERSION

#: What Veil does in an enterprise's part of the key server, and what may explain each.
TENANT_ALLOWED: Final[Mapping[str, tuple[str, ...]]] = {
    # Creating the enterprise (sandbox.accounts.tenants), tagged enterprise:<slug>/1: its namespace
    # or mount, key, policy and login.
    "tenant.create": ("enterprise",),
    "mount.enable": ("enterprise", "migration"),
    "key.create": ("enterprise",),
    "key.config": ("enterprise",),
    "policy.write": ("enterprise", "migration"),
    "auth.enable": ("enterprise",),
    "approle.role.write": ("enterprise",),
    # Data keys, for the object the tag names: an upload or a job storing its model; a job
    # reading its dataset or a released model's download.
    "datakey.generate": ("upload", "model", "cellkey", "reencryption"),
    "decrypt": ("job", "model-download", "cellkey", "reencryption"),
    # The enterprise's service login (its role id, a one-use secret id) and the check that
    # its key exists, for whatever data-key operation or rotation the tag names.
    "approle.role-id.read": ("login",),
    "approle.secret-id.create": ("login",),
    "key.read": ("login", "rotation"),
    # Rotation (sandbox.accounts.key_rotation), by its key.rotated event.
    "key.rotate": ("rotation",),
    "rewrap": ("rotation",),
    # The GM profile (keys._kek): a new SM4 data key is random bytes from the enterprise's
    # transit mount and a read of its KEK's newest version to wrap it; unwrapping (a job, a
    # download, a cell key) reads the KEK version that wrapped it; a rotation's rewrapping
    # reads both.  The KEK is made with the enterprise and gets a new version at each
    # rotation (its version list read first).
    "transit.random": ("upload", "model", "cellkey", "reencryption"),
    "kek.read.wrap": ("upload", "model", "cellkey", "rotation", "reencryption"),
    "kek.read.unwrap": ("job", "model-download", "cellkey", "rotation", "reencryption"),
    "kek.write": ("enterprise", "rotation", "migration"),
    "kek.versions": ("enterprise", "rotation", "migration"),
}

#: What Veil does outside every enterprise (its base namespace and those above it).  Any
#: operation before Veil's first audit event is its set-up (the key server's initialisation,
#: Veil's first start, an operator preparing an external server): ``setup``.
PLATFORM_ALLOWED: Final[Mapping[str, tuple[str, ...]]] = {
    "key.read": ("signing-key",),  # the public half of Veil's audit-signing key
    "transit.sign": ("signature",),  # a checkpoint, a receipt, an export
    # The gm profile's SM2 key (``keys._sm2_key``): each signature reads it; the first
    # one mounts its store, makes it and publishes its public half, under the same tag.
    "secret.read": ("signature",),
    "secret.write": ("signature",),
    "secret.metadata.write": ("signature",),
    "mount.enable": ("signature",),
    "secret.metadata.read": ("signing-key",),  # its public half
    # Mount tenancy: creating an enterprise enables the AppRole login in the base namespace
    # when it is not there yet (tagged enterprise:<slug>/1, like the rest of the creation).
    "auth.enable": ("enterprise",),
}


@dataclass(frozen=True)
class Explanation:
    """The Veil record that explains a key operation: its kind, id, and audit event."""

    kind: str  # upload, job, model-download, enterprise, rotation, setup, signing-key,
    #            checkpoint, receipt, export
    id: str
    seq: int | None


@dataclass(frozen=True)
class _Run:
    """A job's run on a dataset version, and the audit event that closed it."""

    id: str
    dataset: tuple[str, int | None]
    started: datetime
    finished: datetime | None
    released_model: bool
    seq: int | None


@dataclass
class Reasons:
    """What Veil recorded for one tenant that can explain its key operations."""

    tenant_id: str
    slug: str = ""
    created: tuple[datetime, int] | None = None
    uploads: dict[tuple[str, int], tuple[str, datetime, int]] = field(default_factory=dict)
    runs: dict[str, _Run] = field(default_factory=dict)
    # rotation id -> (started, ended, seq of its key.rotated event)
    rotations: dict[str, tuple[datetime, datetime, int]] = field(default_factory=dict)
    # (object id, version) -> (started, ended, seq) of each object.reencrypted event
    reencryptions: dict[tuple[str, int], list[tuple[datetime, datetime, int]]] = field(
        default_factory=dict
    )
    # migration id -> (started, prepared, seq) of the enterprise's crypto.tenant_prepared
    migrations: dict[str, tuple[datetime, datetime, int]] = field(default_factory=dict)


_REASON_ACTIONS = ("enterprise.created", "dataset.uploaded", "job.submitted", "job.released",
                   "job.failed", "job.held", "key.rotated", "object.reencrypted",
                   "crypto.tenant_prepared", "collaboration.contributed",
                   "collaboration.read")  # fmt: skip


def load_reasons(veil: Veil, tenant_id: str, slug: str) -> Reasons:
    """The tenant's creation, uploads, job runs and key rotations, with their events."""
    reasons, job_seq = Reasons(tenant_id, slug), dict[str, int]()
    with veil.db.read() as session:
        versions = {
            (v.dataset_id, v.version): v.id
            for v in session.scalars(
                select(DatasetVersion)
                .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
                .where(Dataset.enterprise_id == tenant_id)
            )
        }
        for e in session.scalars(
            select(audit.AuditEvent)
            .where(audit.AuditEvent.tenant_id == tenant_id)
            .where(audit.AuditEvent.action.in_(_REASON_ACTIONS))
            .order_by(audit.AuditEvent.seq)
        ):
            _remember(reasons, job_seq, versions, e)
        for job in session.scalars(
            select(Job).where(Job.enterprise_id == tenant_id, Job.started_at.is_not(None))
        ):
            assert job.started_at is not None
            model = job.status == JobStatus.RELEASED and job.artifact_path is not None
            reasons.runs[job.id] = _Run(
                job.id, (job.dataset_id, job.dataset_version), job.started_at, job.finished_at,
                model, job_seq.get(job.id),
            )  # fmt: skip
    return reasons


def _remember(
    reasons: Reasons,
    job_seq: dict[str, int],
    versions: dict[tuple[str, int], str],
    e: audit.AuditEvent,
) -> None:
    kind, _, ident = (e.resource or "").partition(":")
    version = e.details.get("version")
    if e.action == "enterprise.created":
        reasons.created = (e.at, e.seq)
    elif e.action == "dataset.uploaded" and isinstance(version, int):
        if (ident, version) in versions:
            reasons.uploads[(ident, version)] = (versions[ident, version], e.at, e.seq)
    elif e.action == "key.rotated":
        rotation, started = e.details.get("rotation"), e.details.get("started_at")
        if isinstance(rotation, str) and isinstance(started, str):
            reasons.rotations[rotation] = (datetime.fromisoformat(started), e.at, e.seq)
    elif e.action == "crypto.tenant_prepared":
        # A change of crypto profile gave the enterprise its SM4 key-encryption key (and its
        # policy the lines for it), tagged migration:<id>/1, before this event.
        migration, started = e.details.get("migration"), e.details.get("started_at")
        if isinstance(migration, str) and isinstance(started, str):
            reasons.migrations[migration] = (datetime.fromisoformat(started), e.at, e.seq)
    elif e.action == "object.reencrypted":
        # A change of crypto profile (sandbox.jobs.reencryption) read the object named and
        # stored it again, between the migration's start and this event (failed or not).
        started = e.details.get("started_at")
        if e.resource and isinstance(version, int) and isinstance(started, str):
            reasons.reencryptions.setdefault((e.resource, version), []).append(
                (datetime.fromisoformat(started), e.at, e.seq)
            )
    elif e.action in ("collaboration.contributed", "collaboration.read"):
        # A node's partial for a collaboration run (node.work.collab), or its rows read for
        # an analysis run (node.work.pairs, whether or not the run went on): it read the
        # dataset version named, between ``started`` and the event; a run of its own.
        dataset, started = e.details.get("dataset_id"), e.details.get("started")
        if isinstance(dataset, str) and isinstance(version, int) and isinstance(started, str):
            reasons.runs[f"collab:{ident}:{e.action}"] = _Run(
                f"{kind}:{ident}", (dataset, version), datetime.fromisoformat(started), e.at,
                False, e.seq,
            )  # fmt: skip
    elif kind == "job":
        job_seq[ident] = e.seq  # the event that closed the run, else the submission


def explain(
    reasons: Reasons, operation: str, label: str | None, at: datetime, now: datetime
) -> Explanation | None:
    """The Veil record that explains ``operation`` on ``label`` at ``at``, if any."""
    for rule in TENANT_ALLOWED.get(operation, ()):
        found = _TENANT_RULES[rule](reasons, label, at, now)
        if found is not None:
            return found
    return None


def _enterprise(
    reasons: Reasons, label: str | None, at: datetime, _: datetime
) -> Explanation | None:
    """Provisioning, tagged ``enterprise:<slug>/1``, before the enterprise's creation event."""
    tagged = _object(label, "enterprise")
    created = reasons.created
    if tagged is None or tagged[0] != reasons.slug or created is None:
        return None
    if at <= created[0] + CLOCK_SLACK:
        return Explanation("enterprise", reasons.tenant_id, created[1])
    return None


def _object(label: str | None, kind: str) -> tuple[str, int] | None:
    """(id, version) of a ``<kind>:<id>/<version>`` tag."""
    parsed = parse_label(label)
    if parsed is None or not parsed[0].startswith(f"{kind}:"):
        return None
    return parsed[0].removeprefix(f"{kind}:"), parsed[1]


def _upload(reasons: Reasons, label: str | None, at: datetime, _: datetime) -> Explanation | None:
    tagged = _object(label, "dataset")
    upload = reasons.uploads.get(tagged) if tagged else None
    if upload is not None and at <= upload[1] + CLOCK_SLACK:
        return Explanation("upload", upload[0], upload[2])
    return None


def _job(reasons: Reasons, label: str | None, at: datetime, now: datetime) -> Explanation | None:
    tagged = _object(label, "dataset")
    runs = [r for r in reasons.runs.values() if r.dataset == tagged and _during(r, at, now)]
    if not runs or tagged is None:
        return None
    run = max(runs, key=lambda r: (r.started <= at, r.started))  # the latest that began
    return Explanation("job", run.id, run.seq)


def _model(reasons: Reasons, label: str | None, at: datetime, now: datetime) -> Explanation | None:
    tagged = _object(label, "job")
    run = reasons.runs.get(tagged[0]) if tagged and tagged[1] == _MODEL_VERSION else None
    if run is not None and _during(run, at, now):
        return Explanation("job", run.id, run.seq)
    return None


def _download(reasons: Reasons, label: str | None, at: datetime, _: datetime) -> Explanation | None:
    tagged = _object(label, "job")
    run = reasons.runs.get(tagged[0]) if tagged and tagged[1] == _MODEL_VERSION else None
    released = run.finished if run is not None and run.released_model else None
    if run is not None and released is not None and at >= released - CLOCK_SLACK:
        return Explanation("model-download", run.id, run.seq)
    return None


def _rotation(reasons: Reasons, label: str | None, at: datetime, _: datetime) -> Explanation | None:
    tagged = _object(label, "rotation")
    found = reasons.rotations.get(tagged[0]) if tagged else None
    if found is not None and found[0] - CLOCK_SLACK <= at <= found[1] + CLOCK_SLACK:
        return Explanation("rotation", tagged[0] if tagged else "", found[2])
    return None


def _cellkey(
    reasons: Reasons, label: str | None, at: datetime, now: datetime
) -> Explanation | None:
    """Making or unwrapping a dataset's cell-key secret (``sandbox.data.cell_secrets``), tagged
    ``cellkey:<dataset>/<version>``: by a job running on that version (tier 2 or 5)."""
    tagged = _object(label, "cellkey")
    runs = [r for r in reasons.runs.values() if r.dataset == tagged and _during(r, at, now)]
    if not runs:
        return None
    run = max(runs, key=lambda r: (r.started <= at, r.started))  # the latest that began
    return Explanation("job", run.id, run.seq)


def _reencryption(
    reasons: Reasons, label: str | None, at: datetime, _: datetime
) -> Explanation | None:
    """Re-encrypting an object under another crypto profile, tagged with the object's own
    label (``dataset:<id>/<version>``, ``job:<id>/1``, ``held:<id>/1``, ``cellkey:<id>/1``): by
    its ``object.reencrypted`` event, within the migration's time."""
    parsed = parse_label(label)
    for started, ended, seq in reasons.reencryptions.get(parsed, []) if parsed else []:
        if started - CLOCK_SLACK <= at <= ended + CLOCK_SLACK:
            return Explanation("reencryption", parsed[0] if parsed else "", seq)
    return None


def _migration(
    reasons: Reasons, label: str | None, at: datetime, _: datetime
) -> Explanation | None:
    """Preparing the enterprise for another crypto profile, tagged ``migration:<id>/1``."""
    tagged = _object(label, "migration")
    found = reasons.migrations.get(tagged[0]) if tagged else None
    if found is not None and found[0] - CLOCK_SLACK <= at <= found[1] + CLOCK_SLACK:
        return Explanation("migration", tagged[0] if tagged else "", found[2])
    return None


def _login(reasons: Reasons, label: str | None, at: datetime, now: datetime) -> Explanation | None:
    """A login (or key check) is explained by what explains the operation it was made for."""
    for rule in (_upload, _job, _model, _download, _rotation, _cellkey, _reencryption,
                 _migration):  # fmt: skip
        found = rule(reasons, label, at, now)
        if found is not None:
            return found
    return None


def _during(run: _Run, at: datetime, now: datetime) -> bool:
    return run.started - CLOCK_SLACK <= at <= (run.finished or now) + CLOCK_SLACK


_Rule = Callable[[Reasons, str | None, datetime, datetime], Explanation | None]
_TENANT_RULES: Final[Mapping[str, _Rule]] = {
    "enterprise": _enterprise,
    "upload": _upload,
    "job": _job,
    "model": _model,
    "model-download": _download,
    "cellkey": _cellkey,
    "login": _login,
    "rotation": _rotation,
    "reencryption": _reencryption,
    "migration": _migration,
}


# -- outside the enterprises ----------------------------------------------------------------
@dataclass
class PlatformReasons:
    """What Veil recorded that explains operations outside every enterprise."""

    base_namespace: str
    first_event: datetime | None = None  # this Veil's first audit event: set-up before it
    checkpoints: dict[str, datetime] = field(default_factory=dict)  # seq -> signed at
    signed: dict[str, tuple[str, datetime, int]] = field(default_factory=dict)  # tag -> event
    # slug -> (enterprise id, its enterprise.created event's time and seq)
    enterprises: dict[str, tuple[str, datetime, int]] = field(default_factory=dict)


def load_platform_reasons(veil: Veil) -> PlatformReasons:
    """This Veil's first event, its signed checkpoints, receipts and exports."""
    reasons = PlatformReasons(veil.keys.base_namespace)
    event = audit.AuditEvent
    with veil.db.read() as session:
        reasons.first_event = session.scalar(select(event.at).order_by(event.seq).limit(1))
        for seq, at in session.execute(
            select(audit.AuditCheckpoint.seq, audit.AuditCheckpoint.created_at)
        ):
            reasons.checkpoints[str(seq)] = at
        for e in session.scalars(
            select(event).where(event.action.in_(("receipt.issued", "audit.exported")))
        ):
            kind, _, ident = (e.resource or "").partition(":")
            tag = f"receipt:{ident}" if kind == "receipt" else f"export:{ident}"
            reasons.signed[tag] = (kind if kind == "receipt" else "export", e.at, e.seq)
        # A KPI verdict is signed as it is released (``sandbox.kpi.verdicts``).
        for e in session.scalars(select(event).where(event.action == "kpi.verdict_released")):
            reasons.signed[e.resource or ""] = ("kpi-verdict", e.at, e.seq)
        # A provider's scorecard is signed as its period closes (``sandbox.scorecards``).
        for e in session.scalars(
            select(event).where(event.action == "scorecards.scorecard_issued")
        ):
            reasons.signed[e.resource or ""] = ("scorecard", e.at, e.seq)
        # A recorded full verification of the chain is signed as it is recorded
        # (``sandbox.runtime.verification``).
        for e in session.scalars(select(event).where(event.action == "audit.verified")):
            tag = f"verification:{e.details.get('id')}"
            reasons.signed[tag] = ("verification", e.at, e.seq)
        # A commitment letter is signed for its enterprise as it is issued, an evidence
        # pack (and the audit range inside it) as it is made (``sandbox.grants.letters``,
        # ``sandbox.oversight.evidence``).
        for e in session.scalars(select(event).where(event.action == "letter.issued")):
            reasons.signed[f"letter:{e.details.get('letter_id')}"] = ("letter", e.at, e.seq)
        for e in session.scalars(select(event).where(event.action == "evidence.issued")):
            reasons.signed[f"evidence:{e.details.get('pack_id')}"] = ("evidence", e.at, e.seq)
        # An enterprise node signs its grants and releases (``node.protocol.signing.sign``).
        for e in session.scalars(select(event).where(event.action == "node.signed")):
            reasons.signed[e.resource or ""] = ("node-signature", e.at, e.seq)
        for e in session.scalars(select(event).where(event.action == "enterprise.created")):
            slug = e.details.get("slug")
            if isinstance(slug, str) and e.tenant_id is not None:
                reasons.enterprises[slug] = (e.tenant_id, e.at, e.seq)
    return reasons


def explain_platform(
    reasons: PlatformReasons, operation: str, entry: AuditEntry
) -> Explanation | None:
    """The Veil record that explains an operation outside every enterprise, if any."""
    first = reasons.first_event
    if first is None or entry.at < first:  # no slack: this is where an intruder would act
        return Explanation("setup", "before Veil's first audit event", None)
    rules = PLATFORM_ALLOWED.get(operation, ())
    if "enterprise" in rules:
        tagged = _object(entry.label, "enterprise")
        created = reasons.enterprises.get(tagged[0]) if tagged else None
        if created is not None and entry.at <= created[1] + CLOCK_SLACK:
            return Explanation("enterprise", created[0], created[2])
        return None
    if not _on_signing_key(reasons, entry):
        return None
    if "signing-key" in rules:
        sm2 = entry.mount == f"{PLATFORM_GM_MOUNT}/"
        key = f"{PLATFORM_GM_MOUNT}/{SM2_SIGNING_KEY}" if sm2 else f"{PLATFORM_MOUNT}/{SIGNING_KEY}"
        return Explanation("signing-key", key, None)
    if "signature" in rules:
        return _signature(reasons, entry)
    return None


def _on_signing_key(reasons: PlatformReasons, entry: AuditEntry) -> bool:
    """Whether ``entry`` is on Veil's signing key: the transit key, or the gm profile's
    SM2 key (its secret, or the mounting of its store)."""
    if entry.namespace != reasons.base_namespace:
        return False
    if entry.mount == f"{PLATFORM_MOUNT}/":
        return entry.sub_path.split("/")[1:2] == [SIGNING_KEY]
    if entry.mount == f"{PLATFORM_GM_MOUNT}/":
        return entry.sub_path.split("/")[1:] == [SM2_SIGNING_KEY]
    return entry.path == f"sys/mounts/{PLATFORM_GM_MOUNT}"


def _signature(reasons: PlatformReasons, entry: AuditEntry) -> Explanation | None:
    parsed = parse_label(entry.label)
    tag = parsed[0] if parsed is not None else ""
    if tag.startswith("checkpoint:"):
        seq = tag.removeprefix("checkpoint:")
        at = reasons.checkpoints.get(seq)
        if at is not None and abs(entry.at - at) <= CLOCK_SLACK:
            return Explanation("checkpoint", seq, int(seq))
        return None
    found = reasons.signed.get(tag)
    if found is not None and abs(entry.at - found[1]) <= CLOCK_SLACK:
        return Explanation(found[0], tag.partition(":")[2], found[2])
    return None
