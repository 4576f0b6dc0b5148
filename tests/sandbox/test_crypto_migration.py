"""Switching a deployment's crypto profile (``veil keys migrate``): the audit chain goes on
under SM3, every stored object is re-encrypted under SM4, nothing is lost on failure, a run
picks up what is left, and start-up refuses a profile the data is not in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import sandbox.cli  # noqa: F401 - registers every command on the app
from keys import CryptoProfile, KeyServerMisconfigured, KeyServerUnavailable, LocalKeyServer
from keys.profile import wrapped_key_profile
from keys.signing import public_keys_from_pem
from policies import audit
from policies.audit_export import verify_export
from policies.principals import Principal, Role
from sandbox.cli.app import app as cli_app
from sandbox.config.settings import Settings
from sandbox.data.cell_secrets import cell_secret
from sandbox.data.datasets import load_frame
from sandbox.jobs import reencryption
from sandbox.jobs.artifacts import load_artifact, store_artifact
from sandbox.oversight.audit_log import export, public_keys_pem
from sandbox.oversight.keyaudit import key_audit
from sandbox.runtime.veil import Veil
from sandbox.runtime.verification import public_keys
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from sandbox.store.models import Dataset, DatasetVersion, Job
from tests.sandbox.conftest import PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.slow  # make test-slow: a module of ~20 s or more (test durations)

STREAM_FORMAT_AT = 8  # keys._stream: the format byte follows the 8-byte magic


@pytest.fixture
def standard(tmp_path: Path, own_key_server: LocalKeyServer) -> Settings:
    """A standard deployment on an OpenBao of its own: once it signs with SM2 its key server
    refuses the standard profile (never the session's), and its audit log is Veil's to read."""
    return settings_for(tmp_path, own_key_server, keyserver_audit_log=own_key_server.audit_log)


@pytest.fixture
def stored(standard: Settings) -> Iterator[dict[str, object]]:
    """A standard deployment with two uploaded datasets, a model and a cell-key secret; what
    each holds in clear, to compare after the migration."""
    with open_veil(standard) as veil, ApiThread(veil.settings, veil) as url:
        world: World = make_world(veil, url, rows=300)
        job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, _COUNT)
        with veil.db.read() as session:
            dataset = session.get(Dataset, world.dataset_id)
            assert dataset is not None
            slug = _slug(veil, dataset.enterprise_id)
            row = session.get(Job, job["id"])
            assert row is not None
        model = store_artifact(veil, slug, dataset.enterprise_id, job["id"], b"weights" * 100)
        with veil.db.transaction() as session:
            row = session.get(Job, job["id"])
            assert row is not None
            row.artifact_path, row.artifact_wrapped_key = model.path, model.wrapped_key
        secret = cell_secret(veil, dataset, slug, 1, job["id"])
        frames = _frames(veil)
        assert veil.checkpoint() is not None  # an Ed25519 checkpoint before the switch
    # Closed: the tests open the deployment again under a profile of their choosing.
    yield {"world": world, "job": job["id"], "secret": secret, "frames": frames,
           "slug": slug, "enterprise": dataset.enterprise_id}  # fmt: skip


_COUNT = [{"kind": "count"}]


def _slug(veil: Veil, enterprise_id: str) -> str:
    with veil.db.read() as session:
        principal = session.get(Principal, enterprise_id)
        assert principal is not None and principal.slug
        return principal.slug


def _frames(veil: Veil) -> dict[str, object]:
    with veil.db.read() as session:
        versions = list(session.scalars(select(DatasetVersion).order_by(DatasetVersion.id)))
        owners = {d.id: d.enterprise_id for d in session.scalars(select(Dataset))}
    return {
        v.id: load_frame(veil, _slug(veil, owners[v.dataset_id]), v).to_dicts() for v in versions
    }


def _gm(standard: Settings) -> Settings:
    return standard.model_copy(update={"crypto_profile": CryptoProfile.GM})


def _formats(veil: Veil) -> list[int]:
    with veil.db.read() as session:
        items = reencryption.stored_items(session)
    return [
        (veil.settings.objects_dir / item.path).read_bytes()[STREAM_FORMAT_AT]
        for item in items
        if item.path is not None
    ]


def test_start_refuses_a_profile_the_data_is_not_in(
    standard: Settings, stored: dict[str, object]
) -> None:
    with (
        pytest.raises(reencryption.ProfileNotMigrated, match="veil keys migrate"),
        open_veil(_gm(standard)),
    ):
        pass


def test_migration_reencrypts_everything_and_continues_the_chain(
    standard: Settings, stored: dict[str, object]
) -> None:
    started = datetime.now(UTC)
    with open_veil(_gm(standard), worker=False, profile_check=False) as veil:
        seen: list[str] = []
        run = reencryption.migrate(veil, progress=lambda done, total, item: seen.append(item.kind))
        assert run.done and run.chain_switched
        assert run.reencrypted == {"dataset": 2, "model": 1, "held": 0, "cellkey": 1}
        assert sorted(seen) == ["cellkey", "dataset", "dataset", "model"]
        # Every object is now format 2 (SM4-GCM) under an SM4-wrapped key, and reads the same.
        with veil.db.read() as session:
            items = reencryption.stored_items(session)
            assert {wrapped_key_profile(i.wrapped_key) for i in items} == {CryptoProfile.GM}
            report = audit.verify(session, public_keys(veil))
            assert report.ok, report.problem
        assert set(_formats(veil)) == {2}
        assert _frames(veil) == stored["frames"]
        with veil.db.read() as session:
            dataset = session.get(Dataset, stored["world"].dataset_id)  # type: ignore[attr-defined]
            job = session.get(Job, stored["job"])
            assert dataset is not None and job is not None
        slug = str(stored["slug"])
        assert cell_secret(veil, dataset, slug, 1, str(stored["job"])) == stored["secret"]
        assert job.artifact_path is not None and job.artifact_wrapped_key is not None
        weights = load_artifact(veil, slug, job.id, job.artifact_path, job.artifact_wrapped_key)
        assert weights == b"weights" * 100
        # The chain verifies across the switch, online and offline: SHA-256 events and an
        # Ed25519 checkpoint before it, SM3 events and an SM2 checkpoint after it.
        with veil.db.read() as session:
            operator = session.scalars(
                select(Principal).where(Principal.role == Role.OPERATOR)
            ).first()
            signatures = list(session.scalars(select(audit.AuditCheckpoint.signature)))
        assert operator is not None
        assert {sig.split(":")[0] for sig in signatures} == {"veil-ed25519", "veil-sm2"}
        exported = b"".join(export(veil, operator)).splitlines()
        keys_pem = public_keys_pem(veil)
        offline = verify_export(exported, public_keys_from_pem(keys_pem))
        assert offline.ok and offline.checkpoints >= 2, offline.problem
        # The old files are gone: only the objects the rows name are left.
        named = {veil.settings.objects_dir / i.path for i in items if i.path is not None}
        on_disk = {p for p in veil.settings.objects_dir.rglob("*.veil")}
        assert on_disk == named
        # The key server's log: each re-encryption's data-key operations are explained.
        keys_report = key_audit(veil, None, tenant_id=str(stored["enterprise"]), since=started)
        assert keys_report.ok, [o.operation for o in keys_report.unexplained]
    # Started again under gm: nothing left to migrate, so it starts; standard now refuses
    # (the deployment signs with SM2: there is no way back, docs/keys.md).
    with open_veil(_gm(standard), worker=False):
        pass
    with (
        pytest.raises(KeyServerMisconfigured, match="VEIL_CRYPTO_PROFILE=gm"),
        open_veil(standard, worker=False),
    ):
        pass


def test_a_failed_run_loses_nothing_and_the_next_run_finishes(
    standard: Settings, stored: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = reencryption._reencrypt_object
    calls = {"n": 0}

    def outage_after_one(veil: Veil, item: reencryption.StoredItem) -> object:
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyServerUnavailable("test: the key server went away")
        return real(veil, item)

    with open_veil(_gm(standard), worker=False, profile_check=False) as veil:
        monkeypatch.setattr(reencryption, "_reencrypt_object", outage_after_one)
        with pytest.raises(KeyServerUnavailable):
            reencryption.migrate(veil)
        monkeypatch.setattr(reencryption, "_reencrypt_object", real)
        with veil.db.read() as session:
            left = reencryption.pending(session, CryptoProfile.GM)
            finished = session.scalars(
                select(audit.AuditEvent).where(
                    audit.AuditEvent.action == "crypto.migration_finished"
                )
            ).all()
        assert 0 < len(left) < 4
        assert [e.outcome for e in finished] == [audit.Outcome.FAILED]
        assert _frames(veil) == stored["frames"]  # half-migrated: every version still reads
        second = reencryption.migrate(veil)
        assert second.done and not second.chain_switched
        assert sum(second.reencrypted.values()) == len(left)
        assert _frames(veil) == stored["frames"]


def test_an_unreadable_object_is_kept_and_reported(
    standard: Settings, stored: dict[str, object]
) -> None:
    with open_veil(_gm(standard), worker=False, profile_check=False) as veil:
        with veil.db.read() as session:
            victim = next(i for i in reencryption.stored_items(session) if i.kind == "dataset")
        assert victim.path is not None
        path = veil.settings.objects_dir / victim.path
        damaged = bytearray(path.read_bytes())
        damaged[-1] ^= 1
        path.write_bytes(bytes(damaged))
        run = reencryption.migrate(veil)
        assert not run.done and len(run.failed) == 1 and victim.object_id in run.failed[0]
        assert path.read_bytes() == bytes(damaged)  # kept as it was, for someone to look at
        assert "cannot be decrypted" in run.failed[0]
        with veil.db.read() as session:
            left = reencryption.pending(session, CryptoProfile.GM)
        assert [i.row for i in left] == [victim.row]


def test_an_object_changed_meanwhile_is_left_for_the_next_run(
    standard: Settings, stored: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation (or anything) storing another key for an object while it is re-encrypted:
    what is stored wins, the new file is dropped, and the next run takes the object."""
    real = reencryption._reencrypt_object

    def rotated_meanwhile(
        veil: Veil, item: reencryption.StoredItem
    ) -> tuple[str, str, dict[str, object]]:
        made = real(veil, item)
        if item.kind == "model":
            with veil.db.transaction() as session:
                job = session.get(Job, item.row)
                assert job is not None
                job.artifact_wrapped_key = item.wrapped_key + "-changed"
        return made

    with open_veil(_gm(standard), worker=False, profile_check=False) as veil:
        monkeypatch.setattr(reencryption, "_reencrypt_object", rotated_meanwhile)
        run = reencryption.migrate(veil)
        assert run.changed_meanwhile == 1 and run.reencrypted["model"] == 0
        with veil.db.read() as session:
            job = session.get(Job, str(stored["job"]))
            items = reencryption.stored_items(session)
        assert job is not None and str(job.artifact_wrapped_key).endswith("-changed")
        named = {veil.settings.objects_dir / i.path for i in items if i.path is not None}
        assert set(veil.settings.objects_dir.rglob("*.veil")) == named  # the new file dropped


def test_the_cli_shows_the_profile_and_migrates(
    standard: Settings, stored: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``veil keys profile`` and ``veil keys migrate`` as an operator runs them: the setting
    from the environment, counts before and after, exit 0 once nothing is left."""
    assert standard.vault_secret_id is not None
    env = {"VEIL_DATA_DIR": str(standard.data_dir), "VEIL_VAULT_ADDR": standard.vault_addr,
           "VEIL_VAULT_ROLE_ID": standard.vault_role_id,
           "VEIL_VAULT_SECRET_ID": standard.vault_secret_id.get_secret_value(),
           "VEIL_VAULT_NAMESPACE": standard.vault_namespace,
           "VEIL_VAULT_TENANCY": str(standard.vault_tenancy),
           "VEIL_CRYPTO_PROFILE": "gm"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    runner = CliRunner()
    before = runner.invoke(cli_app, ["keys", "profile", "--json"])
    assert before.exit_code == 0, before.output
    shown = json.loads(before.output)
    assert shown["setting"] == "gm" and shown["audit_chain_hash"] == "sha256"
    assert shown["stored"]["standard"] == {"dataset": 2, "model": 1, "held": 0, "cellkey": 1}
    done = runner.invoke(cli_app, ["keys", "migrate", "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output)
    assert summary["remaining"] == 0 and sum(summary["reencrypted"].values()) == 4
    after = json.loads(runner.invoke(cli_app, ["keys", "profile", "--json"]).output)
    assert after["audit_chain_hash"] == "sm3"
    assert after["stored"]["gm"] == {"dataset": 2, "model": 1, "held": 0, "cellkey": 1}
    assert any(key.endswith("sm2") for key in after["signing_keys"])


def test_an_object_whose_file_is_gone_is_reported_and_the_rest_migrated(
    standard: Settings, stored: dict[str, object]
) -> None:
    with open_veil(_gm(standard), worker=False, profile_check=False) as veil:
        with veil.db.read() as session:
            victim = next(i for i in reencryption.stored_items(session) if i.kind == "model")
        assert victim.path is not None
        (veil.settings.objects_dir / victim.path).unlink()
        run = reencryption.migrate(veil)
        assert run.failed == [f"model {victim.object_id} v1: its file cannot be read"]
        assert run.reencrypted == {"dataset": 2, "model": 0, "held": 0, "cellkey": 1}
