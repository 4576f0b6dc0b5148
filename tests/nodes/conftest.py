"""A control plane and one enterprise node, each a real Veil core with its own OpenBao,
its own database and its own HTTP API on loopback; the node enrolled with a real code."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keys import LocalKeyServer
from node.link.rounds import NodeLink
from node.setup.provision import NodeConfig, init_node, running_node
from sandbox.client import VeilClient
from sandbox.config.settings import Settings
from sandbox.demo.data import DECLARATION, production_log
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator
from sandbox.store.models import Job, JobStatus
from tests.sandbox.conftest import GRANTED, PURPOSE, api, crypto_profile, veil  # noqa: F401 - fixtures

__all__ = ["GRANTED", "PURPOSE", "NodeWorld"]


def node_settings_for(node_dir: Path, server: LocalKeyServer, **extra: Any) -> Settings:
    """The node's core on its own OpenBao (``server``), which the control plane never sees;
    ``extra``: more settings (``commitment_letters=True``)."""
    config = server.config()
    return Settings(
        data_dir=node_dir / "veil",
        vault_addr=config.addr,
        vault_role_id=config.role_id,
        vault_secret_id=config.secret_id,
        vault_namespace=config.namespace,
        vault_tenancy=config.tenancy,
        keyserver_audit_log=server.audit_log,  # the node reads its own key server's log
        job_poll_interval_s=0.05,
        **extra,
    )


@dataclass
class NodeWorld:
    """Control plane (``cp``), the node's core and link, and the people on each side."""

    cp: Veil
    cp_url: str
    node: Veil
    node_url: str
    link: NodeLink
    config: NodeConfig
    node_dir: Path
    operator: VeilClient
    provider: VeilClient
    provider_id: str
    enterprise: VeilClient  # the enterprise, on its node's API
    dataset_id: str
    grant_id: str
    csv: bytes
    node_keys: LocalKeyServer  # the node's own OpenBao

    def sync(self) -> None:
        """One link round (publish, take jobs, answer)."""
        self.link.run_round()

    def run_jobs(self, timeout: float = 60) -> None:
        """Rounds until every job the node took has its answer delivered."""
        deadline = time.monotonic() + timeout
        while True:
            self.link.run_round()
            with self.node.db.read() as session:
                busy = (
                    session.query(Job)
                    .filter(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
                    .count()
                )
            with self.cp.db.read() as session:
                waiting = (
                    session.query(Job)
                    .filter(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
                    .count()
                )
            if not busy and not waiting:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the node's jobs did not finish")
            time.sleep(0.05)

    def submit(self, aggregates: list[dict[str, Any]], epsilon: float = 0.25,
               group_by: str | None = None) -> dict[str, Any]:  # fmt: skip
        job = self.provider.submit_job(self.dataset_id, PURPOSE, epsilon, aggregates, group_by)
        self.run_jobs()
        return self.provider.get_job(job["id"])


@pytest.fixture
def node_world(
    tmp_path: Path,
    veil: Veil,  # noqa: F811
    api: str,  # noqa: F811
    own_key_server: LocalKeyServer,
) -> Iterator[NodeWorld]:
    with make_node_world(tmp_path, veil, api, own_key_server) as world:
        yield world


@contextmanager
def make_node_world(
    tmp_path: Path,
    cp: Veil,
    cp_url: str,
    own_key_server: LocalKeyServer,
    **node_settings: Any,
) -> Iterator[NodeWorld]:
    """A node enrolled with the control plane ``cp`` at ``cp_url``, a dataset and a grant
    made there; ``node_settings``: the node's own settings beyond the usual."""
    token = bootstrap_operator(cp)
    assert token is not None
    operator = VeilClient(cp_url, token)
    made = operator.create_node_enterprise("Acme Metal", f"acme-{uuid.uuid4().hex[:8]}")
    provider = operator.create_provider("Predicta")
    provider_client = VeilClient(cp_url, operator.issue_token(provider["id"]))
    node_dir = tmp_path / "node"
    settings = node_settings_for(node_dir, own_key_server, **node_settings)
    config, enterprise_token = init_node(node_dir, cp_url, made["enrolment_code"], settings)
    with (
        running_node(node_dir, settings, link=False) as (node, link),
        ApiThread(settings, node) as node_url,
    ):
        link.run_round()  # the provider directory reaches the node
        enterprise = VeilClient(node_url, enterprise_token)
        csv = production_log(2_037, seed=11)
        ds = enterprise.create_dataset(DECLARATION["name"], DECLARATION["columns"])
        enterprise.upload(ds["id"], csv)
        grant = enterprise.create_grant(
            provider["id"], [ds["id"]], GRANTED, [0, 1, 2, 3], [PURPOSE],
            datetime.now(UTC) + timedelta(days=1), 1.0,
        )  # fmt: skip
        link.run_round()  # catalog and grant reach the control plane
        yield NodeWorld(
            cp, cp_url, node, node_url, link, config, node_dir, operator, provider_client,
            provider["id"], enterprise, ds["id"], grant["id"], csv, own_key_server,
        )  # fmt: skip
