"""``veil audit keys``: the key server's own audit log next to Veil's, and the decryptions
that nothing explains.

The session's OpenBao is shared by every test, so each test looks only at its own
world's tenants.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from typer.testing import CliRunner

from keys import (
    OBJECT_HEADER,
    CryptoProfile,
    KeyServerUnavailable,
    LocalKeyServer,
    wrapped_key_version,
)
from keys.auditlog import AuditEntry, operation_of, parse_label, read_entries
from policies.audit import AuditEvent
from policies.errors import Conflict
from policies.letter_format import sign_as_provider
from policies.principals import Principal, Role
from sandbox.accounts.key_rotation import rotate_enterprise_key
from sandbox.cli import app as cli_app
from sandbox.client import ApiError
from sandbox.oversight.keyaudit import key_audit
from sandbox.oversight.keyaudit_reasons import (
    CLOCK_SLACK,
    PlatformReasons,
    Reasons,
    _Run,
    explain,
    explain_platform,
)
from sandbox.runtime.veil import Veil
from sandbox.service import open_veil
from sandbox.store.models import Dataset, DatasetVersion
from tests.sandbox.conftest import PURPOSE, World, settings_for

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]


@pytest.fixture
def veil(
    request: pytest.FixtureRequest, tmp_path: Path, own_key_server: LocalKeyServer
) -> Iterator[Veil]:
    """Like the shared fixture, on an OpenBao of the test's own (the platform's part of the
    log then holds this Veil's requests alone), whose audit log Veil may read; under the
    crypto profile a test asks for (``indirect``), standard by default."""
    profile = getattr(request, "param", CryptoProfile.STANDARD)
    settings = settings_for(
        tmp_path,
        own_key_server,
        keyserver_audit_log=own_key_server.audit_log,
        crypto_profile=profile,
    )
    with open_veil(settings) as running:
        yield running


def _enterprises(veil: Veil) -> dict[str, Principal]:
    with veil.db.transaction() as session:
        rows = session.scalars(select(Principal).where(Principal.role == Role.ENTERPRISE))
        return {p.name: p for p in rows}


def _run_job(world: World) -> str:
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
    final = world.provider.wait_for_job(job["id"], timeout=60)
    assert final["status"] == "released", final
    return str(job["id"])


def _decrypt_outside_veil(veil: Veil, slug: str, wrapped: str, tag: str | None = None) -> None:
    """What someone holding Veil's key-server credentials could do, bypassing Veil."""
    config = veil.settings.external_key_server()
    platform = hvac.Client(url=config.addr, namespace=config.namespace, timeout=5)
    platform.auth.approle.login(role_id=config.role_id, secret_id=config.secret_id)
    loc = veil.keys.tenant_location(slug)
    admin = hvac.Client(url=config.addr, token=platform.token, namespace=loc.namespace, timeout=5)
    role = f"/v1/auth/{loc.approle_mount}/role/{loc.role}"
    role_id = admin.adapter.get(f"{role}/role-id")["data"]["role_id"]
    secret_id = admin.adapter.post(f"{role}/secret-id")["data"]["secret_id"]
    tenant = hvac.Client(url=config.addr, namespace=loc.namespace, timeout=5)
    tenant.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=loc.approle_mount)
    if tag is not None:
        tenant.session.headers[OBJECT_HEADER] = tag
    tenant.secrets.transit.decrypt_data("dek", ciphertext=wrapped, mount_point=loc.transit_mount)


def _wrapped_key(veil: Veil, dataset_id: str) -> str:
    with veil.db.transaction() as session:
        version = session.scalars(
            select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id)
        ).one()
        return version.wrapped_key


def _operations(report: dict[str, Any], tenant_id: str) -> list[dict[str, Any]]:
    (tenant,) = [t for t in report["tenants"] if t["tenant_id"] == tenant_id]
    return list(tenant["operations"])


def _kpi_verdict(world: World) -> str:
    """A KPI contract both parties agreed to, evaluated: its verdict is signed.  Its job's id."""
    kpi = {"kpi": "lead_time", "columns": {"lead_time": "cycle_time_s"},
           "time_column": "temperature_c", "baseline": {"from": 20, "to": 60},
           "evaluation": {"from": 60, "to": 120}}  # fmt: skip
    body = {"dataset_id": world.dataset_id, "purpose": PURPOSE, "kpi": kpi, "target": 0.05,
            "epsilon": 0.1}  # fmt: skip
    made = world.provider.propose_kpi_contract(body)
    world.acme.accept_kpi_contract(made["id"], made["terms_sha256"])
    pending = world.provider.evaluate_kpi_contract(made["id"])
    done = world.provider.wait_for_kpi_verdict(made["id"], pending["id"])
    assert done["status"] == "released", done
    return str(done["job_id"])


@pytest.mark.parametrize("veil", list(CryptoProfile), indirect=True)
def test_every_key_operation_of_veils_own_work_is_explained(world: World, veil: Veil) -> None:
    """Uploads, jobs, logins, a rotation, signatures (checkpoint, receipt, export), set-up:
    every request Veil makes that touches keys, policies or logins has its record.  Under
    the GM profile a new data key is the key server's random bytes and a read of the
    enterprise's SM4 KEK, an unwrap is a read of the KEK (``kek.read``), and each signature
    is a read of the SM2 key, explained the same way."""
    gm = veil.keys.profile is CryptoProfile.GM
    if gm:  # the dataset was stored as format 2 (SM4-GCM), its key wrapped by the KEK
        with veil.db.read() as session:
            stored = session.scalars(
                select(DatasetVersion).where(DatasetVersion.dataset_id == world.dataset_id)
            ).one()
        assert stored.wrapped_key.startswith("veil-sm4:v1:")
        header = (veil.settings.objects_dir / stored.object_path).read_bytes()[:10]
        assert header == b"VEILSTRM\x02\x02"
    job_id = _run_job(world)
    enterprises = _enterprises(veil)
    acme, globex = enterprises["Acme Metal"], enterprises["Globex"]
    rotation = rotate_enterprise_key(veil, None, acme.id)
    assert rotation.version == 2 and rotation.rewrapped == 1
    assert wrapped_key_version(_wrapped_key(veil, world.dataset_id)) == 2
    after_rotation = _run_job(world)  # reads the dataset through its rewrapped key
    world.acme.usage_receipt(world.provider_id)
    evaluation = _kpi_verdict(world)  # a job that reads the dataset, and a signature
    world.operator.audit_export(io.BytesIO())
    assert veil.checkpoint() is not None
    bureau = world.client(world.operator.issue_token(world.operator.create_bureau("B")["id"]))
    bureau.close_period(bureau.open_period("Q1")["id"])  # a signed scorecard per provider
    key = Ed25519PrivateKey.generate()  # a commitment letter, signed for Acme, and its pack
    world.provider.register_letter_key(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    )
    world.acme.issue_letter(world.grant_id, retention_days=30, insurance_reference="PICC-1")
    letter = world.provider.get_letter(world.grant_id)["letter"]
    world.provider.sign_letter(world.grant_id, sign_as_provider(letter, key))
    world.acme.evidence_pack(world.grant_id)

    report = world.operator.key_audit()
    assert report["ok"] and report["unexplained"] == [], report["unexplained"]
    assert report["tagging"] == "present" and report["notes"] == []
    assert {t["tenant_id"] for t in report["tenants"]} == {acme.id, globex.id}

    ops = _operations(report, acme.id)
    by_kind = {(op["operation"], (op["explained_by"] or {}).get("kind")) for op in ops}
    created_ops = ["tenant.create", "key.create", "key.config", "policy.write", "auth.enable",
                   "approle.role.write", "mount.enable"]  # fmt: skip
    created_ops += ["kek.write", "kek.versions"] if gm else []
    for created in created_ops:
        assert (created, "enterprise") in by_kind, created
    assert ("approle.secret-id.create", "upload") in by_kind  # the login for the upload
    rewrap = (
        ("kek.read.wrap", "kek.read.unwrap", "kek.write") if gm else ("rewrap",)
    )  # SM4 keys: rewrapped in memory
    assert ("key.rotate", "rotation") in by_kind
    assert all((op, "rotation") in by_kind for op in rewrap)
    assert ("key.read", "rotation") in by_kind  # the rotation reads the key's new version
    (issued,) = [
        op for op in ops if op["operation"] == ("transit.random" if gm else "datakey.generate")
    ]
    assert issued["object"] == f"dataset:{world.dataset_id}/1"
    assert issued["explained_by"]["kind"] == "upload"
    assert issued["explained_by"]["id"].startswith("dv_") and issued["explained_by"]["seq"]
    unwrap = "kek.read.unwrap" if gm else "decrypt"
    decrypted = [
        op for op in ops if op["operation"] == unwrap and op["explained_by"]["kind"] == "job"
    ]
    assert [op["explained_by"]["id"] for op in decrypted] == [job_id, after_rotation, evaluation]
    if gm:  # the KEK read that wrapped the upload's data key is the upload's
        assert ("kek.read.wrap", "upload") in by_kind
    (tenant,) = [t for t in report["tenants"] if t["tenant_id"] == acme.id]
    assert tenant["counts"].get("decrypt", 0) == (0 if gm else 3) and tenant["unexplained"] == 0
    if gm:  # the three jobs' unwraps, and the rotation's of the upload's key
        assert tenant["counts"]["kek.read.unwrap"] == 4
    actions = [e["action"] for e in tenant["events"]]
    assert "dataset.uploaded" in actions and "key.rotated" in actions
    # Every seq that explains something is one of this tenant's Veil events.
    seqs = {e["seq"] for e in tenant["events"]}
    assert all(op["explained_by"]["seq"] in seqs for op in ops if op["explained_by"])

    platform = report["platform"]
    kinds = {(op["operation"], op["explained_by"]["kind"]) for op in platform["operations"]}
    signed = ("checkpoint", "receipt", "export", "kpi-verdict", "scorecard", "letter", "evidence")
    gm = veil.keys.profile is CryptoProfile.GM
    assert {("secret.read" if gm else "transit.sign", k) for k in signed} <= kinds
    assert ("key.read", "signing-key") in kinds and ("policy.write", "setup") in kinds
    if gm:
        assert not any(op == "transit.sign" for op, _ in kinds)
        assert ("secret.metadata.read", "signing-key") in kinds
    assert platform["unexplained"] == 0

    later = world.operator.key_audit(tenant_id=globex.id, since=datetime.now(UTC))
    assert [t["tenant_id"] for t in later["tenants"]] == [globex.id]
    assert later["tenants"][0]["operations"] == [] and later["unattributed"] is None
    assert later["platform"] is None


def test_a_decryption_outside_veil_is_unexplained(world: World, veil: Veil) -> None:
    _run_job(world)
    enterprises = _enterprises(veil)
    acme, globex = enterprises["Acme Metal"], enterprises["Globex"]
    assert acme.slug is not None
    wrapped = _wrapped_key(veil, world.dataset_id)
    _decrypt_outside_veil(veil, acme.slug, wrapped)
    _decrypt_outside_veil(veil, acme.slug, wrapped, tag=f"dataset:{world.globex_dataset_id}/1")
    _decrypt_outside_veil(veil, acme.slug, wrapped, tag="job:job_forged/1")

    report = world.operator.key_audit(tenant_id=acme.id)
    assert not report["ok"]
    unexplained = report["unexplained"]
    assert all(op["tenant_id"] == acme.id for op in unexplained)
    assert all(op["alarming"] and op["remote_address"] for op in unexplained)
    decrypted = [op["object"] for op in unexplained if op["operation"] == "decrypt"]
    assert decrypted == [
        None,
        f"dataset:{world.globex_dataset_id}/1",  # another tenant's object explains nothing
        "job:job_forged/1",
    ]
    # Each decryption needed a login: its role id read and a secret id minted, unexplained.
    logins = Counter(op["operation"] for op in unexplained if op["operation"] != "decrypt")
    assert logins == {"approle.role-id.read": 3, "approle.secret-id.create": 3}
    decrypts = [op for op in _operations(report, acme.id) if op["operation"] == "decrypt"]
    assert len(decrypts) == 4 and decrypts[0]["explained_by"]["kind"] == "job"
    assert world.operator.key_audit(tenant_id=globex.id)["ok"]

    me = world.operator.me()
    token = world.operator.issue_token(me["id"])
    cli = CliRunner()
    base = ["audit", "keys", "--token", token, "--url", world.url]
    result = cli.invoke(cli_app, [*base, "--tenant", acme.id], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "UNEXPLAINED" in result.output  # the table (its cells fold to the width)
    assert "9 operation(s) on keys, policies or logins with no Veil record" in result.output
    as_json = cli.invoke(cli_app, [*base, "--tenant", acme.id, "--json"])
    assert as_json.exit_code == 1
    listed = json.loads(as_json.output)["unexplained"]
    assert len(listed) == 9 and "job:job_forged/1" in {op["object"] for op in listed}
    clean = cli.invoke(cli_app, [*base, "--tenant", globex.id], env={"COLUMNS": "250"})
    assert clean.exit_code == 0, clean.output
    assert "every operation on keys, policies and logins is explained" in clean.output


def _platform_admin(veil: Veil, namespace: str) -> hvac.Client:
    """Veil's own key-server credentials, used outside Veil (as someone who took them)."""
    config = veil.settings.external_key_server()
    platform = hvac.Client(url=config.addr, namespace=config.namespace, timeout=5)
    platform.auth.approle.login(role_id=config.role_id, secret_id=config.secret_id)
    return hvac.Client(url=config.addr, token=platform.token, namespace=namespace, timeout=5)


def test_an_export_of_a_key_made_exportable_is_flagged_at_every_step(
    world: World, veil: Veil
) -> None:
    """With Veil's key-server credentials: rewrite the tenant's policy, make its key
    exportable, mint a secret id, log in and export the key.  None of it is Veil's."""
    enterprises = _enterprises(veil)
    acme, globex = enterprises["Acme Metal"], enterprises["Globex"]
    assert acme.slug is not None
    loc = veil.keys.tenant_location(acme.slug)
    admin = _platform_admin(veil, loc.namespace)
    export_rule = (
        f'path "{loc.transit_mount}/export/encryption-key/dek" {{ capabilities = ["read"] }}'
    )
    policy = f"{loc.tenant_policy()}{export_rule}\n"
    admin.adapter.put(f"/v1/sys/policies/acl/{loc.policy}", json={"policy": policy})
    admin.adapter.post(f"/v1/{loc.transit_mount}/keys/dek/config", json={"exportable": True})
    role = f"/v1/auth/{loc.approle_mount}/role/{loc.role}"
    role_id = admin.adapter.get(f"{role}/role-id")["data"]["role_id"]
    secret_id = admin.adapter.post(f"{role}/secret-id")["data"]["secret_id"]
    tenant = hvac.Client(url=veil.settings.vault_addr, namespace=loc.namespace, timeout=5)
    tenant.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=loc.approle_mount)
    exported = tenant.secrets.transit.export_key(
        "dek", key_type="encryption-key", mount_point=loc.transit_mount
    )
    assert exported["data"]["keys"]  # the attacker has the key itself

    report = world.operator.key_audit(tenant_id=acme.id)
    flagged = [op["operation"] for op in report["unexplained"]]
    assert flagged == [
        "policy.write",
        "key.config",
        "approle.role-id.read",
        "approle.secret-id.create",
        "key.export",
    ]
    assert all(op["tenant_id"] == acme.id and op["alarming"] for op in report["unexplained"])
    (export,) = [op for op in report["unexplained"] if op["operation"] == "key.export"]
    assert export["path"] == f"{loc.namespace}/{loc.transit_mount}/export/encryption-key/dek"
    assert world.operator.key_audit(tenant_id=globex.id)["ok"]


def test_platform_changes_outside_veil_are_flagged_in_the_whole_view(
    world: World, veil: Veil
) -> None:
    """A namespace made beside the enterprises' and a signature with Veil's audit key that
    no checkpoint, receipt or export explains (a forged checkpoint)."""
    enterprises = _enterprises(veil)
    acme = enterprises["Acme Metal"]
    base = _platform_admin(veil, veil.keys.base_namespace)
    base.sys.create_namespace("stray")
    forged = base64.b64encode(b"veil/audit-checkpoint\n99\n" + b"0" * 64).decode()
    base.secrets.transit.sign_data("audit-signing", hash_input=forged, mount_point="veil-platform")

    report = world.operator.key_audit()
    flagged = [(op["tenant_id"], op["operation"]) for op in report["unexplained"]]
    assert flagged == [(None, "namespace.create"), (None, "transit.sign")]
    assert report["unexplained"][0]["path"].endswith("sys/namespaces/stray")
    assert report["platform"]["unexplained"] == 2
    # A security officer scoped to one enterprise sees neither the platform nor its alarms.
    officer = world.operator.create_security_officer("Olga", [acme.id])
    scoped = world.client(world.operator.issue_token(officer["id"])).key_audit()
    assert scoped["platform"] is None and scoped["ok"]


def test_a_tier_2_jobs_cell_key_secret_is_made_once_and_explained(world: World, veil: Veil) -> None:
    world.acme.create_grant(
        world.provider_id, [world.dataset_id], ["shift"], [2], [PURPOSE],
        datetime.now(UTC) + timedelta(days=1), 0.0,
    )  # fmt: skip
    jobs = []
    for _ in range(2):
        job = world.provider.submit_table(world.dataset_id, PURPOSE, COUNT, ["shift"])
        assert world.provider.wait_for_job(job["id"], timeout=60)["status"] == "released"
        jobs.append(job["id"])
    acme = _enterprises(veil)["Acme Metal"]
    report = world.operator.key_audit(tenant_id=acme.id)
    assert report["ok"] and report["unexplained"] == []
    label = f"cellkey:{world.dataset_id}/1"
    secret_ops = [op for op in _operations(report, acme.id) if op["object"] == label]
    # The first job makes the secret (stored wrapped); the second only unwraps it.  Each is
    # explained by a run on that version (back-to-back runs' windows overlap by the slack).
    assert [op["operation"] for op in secret_ops] == ["datakey.generate", "decrypt"]
    assert all(op["explained_by"]["kind"] == "job" for op in secret_ops)
    assert {op["explained_by"]["id"] for op in secret_ops} <= set(jobs)
    with veil.db.transaction() as session:
        wrapped = session.get(Dataset, world.dataset_id).cellkey_wrapped  # type: ignore[union-attr]
    assert wrapped is not None and wrapped.startswith("vault:v1:")


def test_officers_see_their_scope_and_others_are_refused(world: World, veil: Veil) -> None:
    enterprises = _enterprises(veil)
    acme, globex = enterprises["Acme Metal"], enterprises["Globex"]
    officer = world.operator.create_security_officer("Olga", [globex.id])
    scoped = world.client(world.operator.issue_token(officer["id"]))
    report = scoped.key_audit()
    assert [t["tenant_id"] for t in report["tenants"]] == [globex.id]
    assert report["unattributed"] is None  # other tenants' traffic stays out of view
    with pytest.raises(ApiError) as outside:
        scoped.key_audit(tenant_id=acme.id)
    assert outside.value.status == 404
    for client in (world.acme, world.provider):
        with pytest.raises(ApiError) as refused:
            client.key_audit()
        assert refused.value.status == 403
    with pytest.raises(ApiError) as unknown:
        world.operator.key_audit(tenant_id="pr_doesnotexist")
    assert unknown.value.status == 404


def test_an_external_server_needs_its_audit_log_configured(veil: Veil) -> None:
    unset = veil.settings.model_copy(update={"keyserver_audit_log": None})
    with pytest.raises(Conflict, match="VEIL_KEYSERVER_AUDIT_LOG"):
        key_audit(dataclasses.replace(veil, settings=unset), None)
    missing = veil.settings.model_copy(update={"keyserver_audit_log": Path("/nonexistent")})
    with pytest.raises(Conflict, match="cannot be read"):
        key_audit(dataclasses.replace(veil, settings=missing), None)


def test_the_cli_reads_this_machines_veil_with_local(world: World, veil: Veil) -> None:
    s = veil.settings
    env = {
        "VEIL_DATA_DIR": str(s.data_dir),
        "VEIL_VAULT_ADDR": s.vault_addr or "",
        "VEIL_VAULT_ROLE_ID": s.vault_role_id or "",
        "VEIL_VAULT_SECRET_ID": s.vault_secret_id.get_secret_value() if s.vault_secret_id else "",
        "VEIL_VAULT_NAMESPACE": s.vault_namespace,
        "VEIL_VAULT_TENANCY": str(s.vault_tenancy),
        "VEIL_KEYSERVER_AUDIT_LOG": str(s.keyserver_audit_log),
    }
    acme = _enterprises(veil)["Acme Metal"]
    rotated = CliRunner().invoke(cli_app, ["keys", "rotate", acme.id, "--json"], env=env)
    assert rotated.exit_code == 0, rotated.output
    assert json.loads(rotated.output)["version"] == 2
    result = CliRunner().invoke(cli_app, ["audit", "keys", "--local", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["tenants"]) == 2 and report["ok"]
    assert report["unattributed"] is not None  # the shared server holds other tests' tenants
    no_way = CliRunner().invoke(cli_app, ["audit", "keys"], env={"VEIL_TOKEN": ""})
    assert no_way.exit_code != 0 and "--local" in no_way.output


def test_a_rotation_that_fails_is_recorded_and_changes_nothing(
    world: World, veil: Veil, own_key_server: LocalKeyServer
) -> None:
    acme = _enterprises(veil)["Acme Metal"]
    before = _wrapped_key(veil, world.dataset_id)
    own_key_server.stop()
    with pytest.raises(KeyServerUnavailable):
        rotate_enterprise_key(veil, None, acme.id)
    assert _wrapped_key(veil, world.dataset_id) == before
    with veil.db.read() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "key.rotated")).one()
    assert event.outcome == "failed" and event.tenant_id == acme.id
    assert event.details["rotation"].startswith("rot_") and "error" in event.details


# -- the parts, on synthetic input ------------------------------------------------------------
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _reasons() -> Reasons:
    reasons = Reasons("pr_acme", "acme", created=(T0, 1))
    reasons.uploads[("ds_1", 1)] = ("dv_1", T0 + timedelta(minutes=1), 5)
    reasons.runs["job_a"] = _Run(
        "job_a", ("ds_1", 1), T0 + timedelta(minutes=2), T0 + timedelta(minutes=3), True, 9
    )
    return reasons


def test_explanations_hold_only_inside_their_windows() -> None:
    r, now = _reasons(), T0 + timedelta(hours=1)
    minute = timedelta(minutes=1)
    run = explain(r, "decrypt", "dataset:ds_1/1", T0 + 2.5 * minute, now)
    assert run is not None and (run.kind, run.id, run.seq) == ("job", "job_a", 9)
    assert explain(r, "decrypt", "dataset:ds_1/1", T0 + 3 * minute + 2 * CLOCK_SLACK, now) is None
    assert explain(r, "decrypt", "dataset:ds_1/2", T0 + 2.5 * minute, now) is None
    assert explain(r, "decrypt", None, T0 + 2.5 * minute, now) is None
    upload = explain(r, "datakey.generate", "dataset:ds_1/1", T0 + minute - CLOCK_SLACK, now)
    assert upload is not None and (upload.kind, upload.id) == ("upload", "dv_1")
    assert explain(r, "datakey.generate", "dataset:ds_1/1", T0 + 2 * minute, now) is None
    model = explain(r, "datakey.generate", "job:job_a/1", T0 + 2.5 * minute, now)
    assert model is not None and model.kind == "job"
    download = explain(r, "decrypt", "job:job_a/1", T0 + 10 * minute, now)
    assert download is not None and download.kind == "model-download"
    assert explain(r, "decrypt", "job:job_a/1", T0 + 2.5 * minute, now) is None  # not released
    created = explain(r, "key.create", "enterprise:acme/1", T0, now)
    assert created is not None and created.kind == "enterprise"
    assert explain(r, "key.create", None, T0, now) is None  # not tagged by Veil's creation
    assert explain(r, "key.create", "enterprise:globex/1", T0, now) is None  # another's
    assert explain(r, "key.create", "enterprise:acme/1", T0 + minute, now) is None  # long after
    assert explain(r, "key.rotate", None, T0, now) is None
    for operation in ("datakey.generate", "decrypt"):  # the tier-2 cell-key secret
        secret = explain(r, operation, "cellkey:ds_1/1", T0 + 2.5 * minute, now)
        assert secret is not None and (secret.kind, secret.id) == ("job", "job_a")
        assert explain(r, operation, "cellkey:ds_1/1", T0 + 10 * minute, now) is None
        assert explain(r, operation, "cellkey:ds_2/1", T0 + 2.5 * minute, now) is None
    assert explain(r, "key.export", "dataset:ds_1/1", T0 + 2.5 * minute, now) is None
    login = explain(r, "approle.secret-id.create", "dataset:ds_1/1", T0 + 2.5 * minute, now)
    assert login is not None and (login.kind, login.id) == ("job", "job_a")
    r.rotations["rot_1"] = (T0 + 4 * minute, T0 + 5 * minute, 12)
    rotated = explain(r, "rewrap", "rotation:rot_1/1", T0 + 4.5 * minute, now)
    assert rotated is not None and (rotated.kind, rotated.id, rotated.seq) == (
        "rotation",
        "rot_1",
        12,
    )
    assert explain(r, "rewrap", "rotation:rot_1/1", T0 + 6 * minute, now) is None
    assert explain(r, "rewrap", "rotation:rot_2/1", T0 + 4.5 * minute, now) is None


def test_the_log_reader_skips_what_it_cannot_use(tmp_path: Path) -> None:
    def line(kind: str, path: str, header: str | None = None, **extra: Any) -> str:
        request: dict[str, Any] = {
            "id": "r1", "operation": "update", "path": path, "mount_type": "transit",
            "namespace": {"path": "veil/acme/"},
        }  # fmt: skip
        if header is not None:
            request["headers"] = {"x-veil-object": [header]}
        return json.dumps({"time": "2026-11-01T12:00:00.123456789Z", "type": kind,
                           "request": request, **extra}, separators=(",", ":"))  # fmt: skip

    log = tmp_path / "audit.log"
    log.write_text(
        "\n".join(
            [
                line("request", "transit/decrypt/dek", "dataset:ds_1/1"),  # requests: skipped
                line("response", "transit/decrypt/dek", "dataset:ds_1/1"),
                line("response", "transit/decrypt/dek", "hmac-sha256:ab12"),
                line("response", "transit/decrypt/dek", error="permission denied"),
                '{"time": "2026-11-01T12:00:00Z", "type":"response", "mount_type":"transit", "req',
                "",
            ]
        )
    )
    entries = list(read_entries(log))
    assert len(entries) == 3
    assert entries[0].label == "dataset:ds_1/1" and entries[0].ok and entries[0].data_key
    assert entries[0].at == datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert entries[1].label is None and entries[1].header == "hmac-sha256:ab12"
    assert not entries[2].ok and entries[2].namespace == "veil/acme"
    assert list(read_entries(log, since=T0 + timedelta(seconds=1))) == []
    assert parse_label("dataset:ds_1/3") == ("dataset:ds_1", 3)
    assert parse_label("odd%2Fid/2") == ("odd/id", 2)
    assert parse_label("no-version") is None and parse_label(None) is None


def _request(mount_type: str, mount: str, path: str, how: str) -> AuditEntry:
    return AuditEntry(
        at=T0, namespace="veil/acme", path=path, how=how, transit=mount_type == "transit",
        ok=True, header=None, request_id="r1", remote_address=None, actor=None, mount=mount,
        mount_type=mount_type,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("mount_type", "mount", "path", "how", "expected"),
    [
        # Reads of key material or configuration count as much as writes.
        ("transit", "transit/", "transit/export/encryption-key/dek", "read", "key.export"),
        ("transit", "transit/", "transit/backup/dek", "read", "key.backup"),
        ("transit", "transit/", "transit/keys/dek", "read", "key.read"),
        ("transit", "transit/", "transit/keys", "list", "key.list"),
        ("transit", "transit/", "transit/keys/dek/config", "update", "key.config"),
        ("transit", "transit/", "transit/decrypt/dek", "update", "decrypt"),
        ("transit", "transit/", "transit/wrapping_key", "read", "transit.wrapping_key"),
        ("approle", "auth/approle/", "auth/approle/role/veil-tenant/role-id", "read",
         "approle.role-id.read"),
        ("approle", "auth/approle/", "auth/approle/role/veil-tenant/secret-id", "update",
         "approle.secret-id.create"),
        ("approle", "auth/approle/", "auth/approle/role/veil-tenant/secret-id/lookup", "update",
         "approle.secret-id.read"),
        ("approle", "auth/approle/", "auth/approle/role/other", "create", "approle.role.write"),
        ("approle", "auth/approle/", "auth/approle/login", "update", None),
        ("token", "auth/token/", "auth/token/create", "update", "token.create"),
        ("token", "auth/token/", "auth/token/lookup-self", "read", None),
        ("userpass", "auth/userpass/", "auth/userpass/users/eve", "update",
         "auth.userpass.write"),
        ("ns_system", "sys/", "sys/policies/acl/veil-tenant", "update", "policy.write"),
        ("ns_system", "sys/", "sys/policies/acl/veil-tenant", "delete", "policy.delete"),
        ("ns_system", "sys/", "sys/policies/acl/veil-tenant", "read", None),
        ("ns_system", "sys/", "sys/auth/userpass", "update", "auth.enable"),
        ("ns_system", "sys/", "sys/auth/approle/tune", "update", "auth.tune"),
        ("ns_system", "sys/", "sys/namespaces/stray", "update", "namespace.create"),
        ("system", "sys/", "sys/audit/second", "update", "audit.enable"),
        ("system", "sys/", "sys/audit/veil-file", "delete", "audit.disable"),
        ("system", "sys/", "sys/config/auditing/request-headers/X-Veil-Object", "delete",
         "audit.headers"),
        ("system", "sys/", "sys/config/cors", "update", "sys.config"),
        ("system", "sys/", "sys/generate-root/attempt", "update", "sys.generate-root"),
        ("system", "sys/", "sys/raw/core/keyring", "read", "sys.raw"),
        ("system", "sys/", "sys/capabilities-self", "update", None),
        ("system", "sys/", "sys/mounts/veil-platform", "read", None),
        ("identity", "identity/", "identity/group", "update", "identity.write"),
        ("kv", "secret/", "secret/data/app", "read", None),
    ],
)  # fmt: skip
def test_every_request_on_keys_policies_or_logins_has_a_name(
    mount_type: str, mount: str, path: str, how: str, expected: str | None
) -> None:
    assert operation_of(_request(mount_type, mount, path, how)) == expected


def _platform_request(
    operation_path: str, how: str, at: datetime, tag: str | None = None
) -> AuditEntry:
    mount = operation_path.split("/", 1)[0] + "/"
    kind = {"veil-platform/": "transit", "sys/": "ns_system"}.get(mount, "approle")
    return AuditEntry(
        at=at, namespace="veil", path=operation_path, how=how, transit=kind == "transit",
        ok=True, header=tag, request_id="r1", remote_address=None, actor=None, mount=mount,
        mount_type=kind,
    )  # fmt: skip


def test_platform_explanations_hold_only_for_what_veil_does() -> None:
    reasons = PlatformReasons("veil", first_event=T0)
    reasons.checkpoints["40"] = T0 + timedelta(minutes=5)
    reasons.signed["receipt:rcpt_1"] = ("receipt", T0 + timedelta(minutes=6), 41)
    reasons.enterprises["acme"] = ("pr_acme", T0 + timedelta(minutes=1), 3)

    def why(path: str, how: str, at: datetime, tag: str | None = None) -> str | None:
        entry = _platform_request(path, how, at, tag)
        assert entry.operation is not None
        found = explain_platform(reasons, entry.operation, entry)
        return None if found is None else found.kind

    minute, sign = timedelta(minutes=1), "veil-platform/sign/audit-signing"
    assert why("sys/policies/acl/veil-platform", "update", T0 - minute) == "setup"
    assert why("sys/policies/acl/veil-platform", "update", T0 + minute) is None
    assert why("veil-platform/keys/audit-signing", "read", T0 + minute) == "signing-key"
    assert why("veil-platform/keys/audit-signing/config", "update", T0 + minute) is None
    assert why(sign, "update", T0 + 5 * minute, "checkpoint:40/1") == "checkpoint"
    assert why(sign, "update", T0 + 7 * minute, "checkpoint:40/1") is None  # not then
    assert why(sign, "update", T0 + 5 * minute, "checkpoint:39/1") is None  # never signed
    assert why(sign, "update", T0 + 6 * minute, "receipt:rcpt_1/1") == "receipt"
    assert why(sign, "update", T0 + 6 * minute) is None  # untagged: a forged signature
    assert why("sys/auth/approle", "update", T0 + minute, "enterprise:acme/1") == "enterprise"
    assert why("sys/auth/approle", "update", T0 + minute, "enterprise:other/1") is None
    assert why("sys/audit/second", "update", T0 + minute, "enterprise:acme/1") is None
