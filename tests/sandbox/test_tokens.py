"""API tokens through the API: issued with an expiry, listed without secrets, revoked and
rotated by their owner or the operator, refused at once when revoked or expired; audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from policies.principals import LAST_USED_RESOLUTION, hash_token
from sandbox.client import ApiError, VeilClient
from sandbox.runtime.veil import Veil
from sandbox.store.database import alembic_config, migrate
from tests.sandbox.conftest import World

pytestmark = pytest.mark.integration


def refused(client: VeilClient) -> ApiError:
    with pytest.raises(ApiError) as answer:
        client.me()
    assert answer.value.status == 401
    return answer.value


def only(tokens: list[dict[str, object]], token_id: object) -> dict[str, object]:
    (found,) = [t for t in tokens if t["id"] == token_id]
    return found


def close_to(value: object, expected: datetime) -> bool:
    return abs(datetime.fromisoformat(str(value)) - expected) < timedelta(minutes=5)


def test_tokens_are_issued_with_an_expiry_and_listed_without_their_secret(world: World) -> None:
    provider = world.provider.me()["id"]
    now = datetime.now(UTC)
    default = world.operator.new_token(provider)
    week = world.operator.new_token(provider, ttl_days=7)
    assert close_to(default["expires_at"], now + timedelta(days=90))
    assert close_to(week["expires_at"], now + timedelta(days=7))
    with pytest.raises(ApiError) as too_long:
        world.operator.new_token(provider, ttl_days=366)
    assert too_long.value.status == 422
    assert "VEIL_TOKEN_MAX_TTL_DAYS" in too_long.value.detail

    listing = world.operator.list_tokens(provider)
    assert {default["id"], week["id"]} <= {t["id"] for t in listing}
    assert {t["principal_id"] for t in listing} == {provider}
    entry = only(listing, week["id"])
    assert entry["state"] == "active" and entry["revoked_at"] is None
    assert entry["last_used_at"] is None and entry["current"] is False
    everyone = json.dumps(world.operator.list_tokens())
    for secret in (default["token"], week["token"]):
        assert secret not in everyone and hash_token(secret) not in everyone
    assert set(entry) == {
        "id", "principal_id", "principal_name", "principal_role", "created_at",
        "expires_at", "last_used_at", "revoked_at", "state", "current",
    }  # fmt: skip
    issued = world.operator.audit_events(action="token.issued", resource=f"token:{week['id']}")
    assert issued[0]["details"]["principal_id"] == provider


def test_a_principal_sees_and_changes_only_its_own_tokens(world: World) -> None:
    me = world.provider.me()["id"]
    acme = world.acme.me()["id"]
    mine = world.provider.list_tokens()
    assert mine and {t["principal_id"] for t in mine} == {me}
    (current,) = [t for t in mine if t["current"]]
    assert current["last_used_at"] is not None  # this very request used it

    theirs = world.operator.list_tokens(acme)[0]["id"]
    attempts = {
        "list": lambda: world.provider.list_tokens(acme),
        "revoke": lambda: world.provider.revoke_token(theirs, "not mine"),
        "rotate": lambda: world.provider.rotate_token(theirs),
    }
    unknown = {
        "list": lambda: world.provider.list_tokens("ent_" + "0" * 32),
        "revoke": lambda: world.provider.revoke_token("tok_" + "0" * 32),
        "rotate": lambda: world.provider.rotate_token("tok_" + "0" * 32),
    }
    for name, attempt in attempts.items():
        with pytest.raises(ApiError) as other:
            attempt()
        with pytest.raises(ApiError) as missing:
            unknown[name]()
        assert other.value.status == missing.value.status == 404, name
        # The same answer as for an id that does not exist: nothing is confirmed.
        assert other.value.detail.replace(theirs, "X").replace(acme, "X") == (
            missing.value.detail.replace("tok_" + "0" * 32, "X").replace("ent_" + "0" * 32, "X")
        )
    world.acme.me()  # still works
    assert only(world.operator.list_tokens(acme), theirs)["state"] == "active"


def test_a_revoked_token_is_refused_at_once_and_every_step_is_audited(world: World) -> None:
    provider = world.provider.me()["id"]
    spare = world.operator.new_token(provider)
    with world.client(spare["token"]) as client:
        assert client.me()["id"] == provider
        revoked = world.provider.revoke_token(spare["id"], "laptop lost")
        assert revoked["state"] == "revoked" and revoked["revoked_at"] is not None
        assert "revoked" in refused(client).detail
    world.provider.me()  # its other token still works
    with pytest.raises(ApiError) as again:
        world.provider.revoke_token(spare["id"])
    assert again.value.status == 409
    (event,) = world.operator.audit_events(action="token.revoked")
    assert event["resource"] == f"token:{spare['id']}"
    assert event["actor_id"] == provider and event["details"]["reason"] == "laptop lost"
    failed = world.operator.audit_events(action="auth.failed")
    assert any("revoked" in e["details"]["reason"] for e in failed)


def test_the_operator_revokes_anyones_token(world: World) -> None:
    acme = world.acme.me()["id"]
    (token,) = world.operator.list_tokens(acme)
    world.operator.revoke_token(token["id"])
    refused(world.acme)
    assert world.operator.audit_events(action="token.revoked")[0]["actor_role"] == "operator"


def test_rotation_returns_a_new_token_once_and_revokes_the_old_at_once(world: World) -> None:
    provider = world.provider.me()["id"]
    old = world.provider.list_tokens()[0]
    new = world.provider.rotate_token(old["id"], ttl_days=30)
    assert new["replaces"] == old["id"] and new["principal_id"] == provider
    assert close_to(new["expires_at"], datetime.now(UTC) + timedelta(days=30))
    refused(world.provider)
    with world.client(new["token"]) as rotated:
        assert rotated.me()["id"] == provider
        listing = rotated.list_tokens()
        assert only(listing, old["id"])["state"] == "revoked"
        assert only(listing, new["id"])["current"] is True
        assert new["token"] not in json.dumps(listing)
        with pytest.raises(ApiError) as stale:
            rotated.rotate_token(old["id"])
        assert stale.value.status == 409
    (event,) = world.operator.audit_events(action="token.rotated")
    assert event["resource"] == f"token:{new['id']}"
    assert event["details"]["revoked_token_id"] == old["id"]


def test_an_expired_token_is_refused_and_audited(
    veil: Veil, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = world.provider.me()["id"]
    short = world.operator.new_token(provider, ttl_days=1)
    real_clock = veil.clock
    with world.client(short["token"]) as client:
        assert client.me()["id"] == provider
        later = real_clock() + timedelta(days=1, minutes=1)
        monkeypatch.setattr(veil, "clock", lambda: later)  # the clock moves on: no sleep
        assert "expired" in refused(client).detail
        listing = world.operator.list_tokens(provider)
        assert only(listing, short["id"])["state"] == "expired"
        with pytest.raises(ApiError) as late:
            world.provider.rotate_token(short["id"])
        assert late.value.status == 409
        # A moment before the expiry it still works: the check is against the clock.
        monkeypatch.setattr(veil, "clock", lambda: later - timedelta(minutes=2))
        assert client.me()["id"] == provider
    failed = world.operator.audit_events(action="auth.failed")
    assert any("expired" in e["details"]["reason"] for e in failed)


def test_last_use_is_written_at_most_once_an_hour(
    veil: Veil, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def last_used() -> str:
        (current,) = [t for t in world.provider.list_tokens() if t["current"]]
        return str(current["last_used_at"])

    first = last_used()
    assert last_used() == first  # used again at once: not written again
    later = veil.clock() + LAST_USED_RESOLUTION + timedelta(minutes=1)
    monkeypatch.setattr(veil, "clock", lambda: later)
    assert datetime.fromisoformat(last_used()) == later


def test_tokens_from_before_the_migration_expire_90_days_after_it(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'veil.db'}"
    command.upgrade(alembic_config(url), "0005")
    engine = create_engine(url)
    with engine.begin() as db:
        db.execute(
            text(
                "INSERT INTO principals (id, role, name, status, created_at) "
                "VALUES ('op_1', 'operator', 'operator', 'active', '2020-01-01 00:00:00')"
            )
        )
        db.execute(
            text(
                "INSERT INTO api_tokens (id, principal_id, token_hash, created_at) "
                "VALUES ('tok_1', 'op_1', :hash, '2020-01-01 00:00:00')"
            ),
            {"hash": hash_token("veil_old")},
        )
    migrate(url)
    with engine.connect() as db:
        expires = db.scalar(text("SELECT expires_at FROM api_tokens WHERE id = 'tok_1'"))
    upgraded = datetime.now(UTC).replace(tzinfo=None)
    assert abs(datetime.fromisoformat(str(expires)) - (upgraded + timedelta(days=90))) < (
        timedelta(minutes=5)
    )
    command.downgrade(alembic_config(url), "0005")
    with engine.connect() as db:
        columns = {r[1] for r in db.execute(text("PRAGMA table_info(api_tokens)"))}
        assert "expires_at" not in columns and "last_used_at" not in columns
        assert db.scalar(text("SELECT count(*) FROM api_tokens")) == 1
    engine.dispose()
