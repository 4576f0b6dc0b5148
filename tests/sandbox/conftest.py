"""A complete Veil per test: real OpenBao (the session's), real SQLite, real HTTP on loopback.

A module whose tests each make their own world (``make_world``: new tenants, dataset and
grant) may share one Veil among its tests (``shared_veil``): tier 5's, where a Veil's
sandboxes (PySyft imported ahead) outlive a test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keys import CryptoProfile, LocalKeyServer
from sandbox.client import VeilClient
from sandbox.config.settings import Settings
from sandbox.demo.data import DECLARATION, production_log
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil

PURPOSE = "process-optimization"
GRANTED = ["machine", "shift", "temperature_c", "cycle_time_s", "defects", "yield_pct"]


def settings_for(tmp_path: Path, key_server: LocalKeyServer, **extra: Any) -> Settings:
    """Settings using the session's OpenBao as an external server (with Veil's AppRole)."""
    config = key_server.config()
    return Settings(
        data_dir=tmp_path / "veil",
        vault_addr=config.addr,
        vault_role_id=config.role_id,
        vault_secret_id=config.secret_id,
        vault_namespace=config.namespace,
        vault_tenancy=config.tenancy,
        job_poll_interval_s=0.05,
        **extra,
    )


@contextmanager
def key_server_for(
    profile: CryptoProfile, shared: LocalKeyServer, home: Path, bao_binary: Path
) -> Iterator[LocalKeyServer]:
    """The session's OpenBao under the standard profile.  Under gm, one of the test's own:
    a gm Veil signs with an SM2 key, after which its base namespace refuses the standard
    profile, so it must never be the session's."""
    if profile is CryptoProfile.STANDARD:
        yield shared
        return
    own = LocalKeyServer(home, bao_binary=bao_binary)
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def crypto_profile() -> CryptoProfile:
    """The crypto profile of the test's Veil; a test runs under gm with
    ``@pytest.mark.parametrize("crypto_profile", [CryptoProfile.GM])``."""
    return CryptoProfile.STANDARD


@pytest.fixture
def veil(
    tmp_path: Path, key_server: LocalKeyServer, bao_binary: Path, crypto_profile: CryptoProfile
) -> Iterator[Veil]:
    with (
        key_server_for(crypto_profile, key_server, tmp_path / "bao-gm", bao_binary) as server,
        open_veil(settings_for(tmp_path, server, crypto_profile=crypto_profile)) as running,
    ):
        yield running


@pytest.fixture
def api(veil: Veil) -> Iterator[str]:
    with ApiThread(veil.settings, veil) as url:
        yield url


@contextmanager
def shared_veil(data: Path, key_server: LocalKeyServer) -> Iterator[tuple[Veil, str, str]]:
    """A Veil for a module's tests (standard profile): it, its API's address and its
    operator's token.  Each test makes its own world with that token
    (``make_world(..., operator_token=...)``), so no test sees another's tenants."""
    with (
        open_veil(settings_for(data, key_server)) as running,
        ApiThread(running.settings, running) as url,
    ):
        token = bootstrap_operator(running)
        assert token is not None
        yield running, url, token


@dataclass
class World:
    """Operator, two enterprises, two providers, one uploaded dataset and one grant."""

    url: str
    operator: VeilClient
    acme: VeilClient
    globex: VeilClient
    provider: VeilClient
    other_provider: VeilClient
    provider_id: str
    dataset_id: str
    grant_id: str
    globex_dataset_id: str
    csv: bytes

    def client(self, token: str) -> VeilClient:
        return VeilClient(self.url, token)


def make_world(
    veil: Veil,
    url: str,
    *,
    epsilon: float = 1.0,
    rows: int = 2_000,
    tiers: list[int] | None = None,
    operator_token: str | None = None,
) -> World:
    """A new world on ``veil``; ``operator_token``: of the operator made before (a shared
    Veil's), else the first operator is made now."""
    token = operator_token or bootstrap_operator(veil)
    assert token is not None
    operator = VeilClient(url, token)
    tag = uuid.uuid4().hex[:8]
    acme = operator.create_enterprise("Acme Metal", f"acme-{tag}")
    globex = operator.create_enterprise("Globex", f"globex-{tag}")
    provider = operator.create_provider("Predicta")
    other = operator.create_provider("Other Analytics")
    clients = [
        VeilClient(url, operator.issue_token(p["id"])) for p in (acme, globex, provider, other)
    ]
    csv = production_log(rows, seed=11)
    ds = clients[0].create_dataset(DECLARATION["name"], DECLARATION["columns"])
    clients[0].upload(ds["id"], csv)
    gds = clients[1].create_dataset("globex-log", DECLARATION["columns"])
    clients[1].upload(gds["id"], production_log(300, seed=12))
    grant = clients[0].create_grant(
        provider["id"],
        [ds["id"]],
        GRANTED,
        tiers or [3],
        [PURPOSE],
        datetime.now(UTC) + timedelta(days=1),
        epsilon,
    )
    return World(
        url,
        operator,
        clients[0],
        clients[1],
        clients[2],
        clients[3],
        provider["id"],
        ds["id"],
        grant["id"],
        gds["id"],
        csv,
    )


@pytest.fixture
def world(veil: Veil, api: str) -> World:
    return make_world(veil, api)
