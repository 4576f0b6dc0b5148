"""Veil on a three-node key-server cluster releases every job while the leader node is killed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from keys.cluster import LocalKeyCluster
from policies.audit import AuditEvent
from sandbox.config.settings import Settings
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from tests.sandbox.conftest import PURPOSE, make_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # make test-slow: ~10 s or more


@pytest.fixture
def cluster(tmp_path: Path, bao_binary: Path) -> Iterator[LocalKeyCluster]:
    started = LocalKeyCluster(tmp_path / "bao-cluster", bao_binary=bao_binary)
    try:
        started.start()
        yield started
    finally:
        started.stop()


def test_every_job_is_released_while_the_key_server_leader_is_killed(
    tmp_path: Path, cluster: LocalKeyCluster
) -> None:
    config = cluster.config()
    settings = Settings(
        data_dir=tmp_path / "veil",
        vault_addr=",".join(config.nodes),  # VEIL_VAULT_ADDR=http://a,http://b,http://c
        vault_role_id=config.role_id,
        vault_secret_id=config.secret_id,
        vault_namespace=config.namespace,
        vault_tenancy=config.tenancy,
        job_poll_interval_s=0.05,
    )
    with open_veil(settings) as veil, ApiThread(settings, veil) as url:
        world = make_world(veil, url, epsilon=5.0, rows=500)

        def submit() -> str:
            job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, [{"kind": "count"}])
            return str(job["id"])

        jobs = [submit() for _ in range(3)]
        leader = cluster.leader()
        assert leader is not None
        cluster.kill(leader)
        killed_at = time.monotonic()
        jobs += [submit() for _ in range(5)]  # submitted and run during the election
        finals = [world.provider.wait_for_job(job, timeout=60) for job in jobs]
        waited = time.monotonic() - killed_at
        cluster.restart(leader)
        jobs.append(submit())  # and after the old leader is back, as a standby
        finals.append(world.provider.wait_for_job(jobs[-1], timeout=60))
        time.sleep(0.6)  # the outage auditor writes every half second
        with veil.db.read() as session:
            outages = list(
                session.scalars(
                    select(AuditEvent).where(AuditEvent.action == "key_server.unavailable")
                )
            )
    assert [f["status"] for f in finals] == ["released"] * len(jobs), finals
    assert outages == []  # no key operation failed, so none was audited as one
    assert waited < 30
