"""A node's directory, its one-time enrolment, and starting it.

Layout of a node directory (``VEIL_NODE_DIR``, default ``./.veil-node``)::

    node.json      the node id, its enterprise, the control plane's address and key
    identity.key   the Ed25519 key that signs the node's requests (0600; never leaves)
    veil/          the node's own Veil core: database, encrypted objects, and its own
                   OpenBao (``veil/keyserver``) whose credentials exist only here
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from keys import key_operation
from keys.node_auth import NodeIdentity
from node.link.rounds import NodeLink
from node.protocol import client
from node.protocol.client import ControlPlane
from policies import audit
from policies.principals import Principal, Role, Status, issue_token
from sandbox.config.settings import Settings
from sandbox.runtime.veil import Veil
from sandbox.service import open_veil


def default_node_dir() -> Path:
    return Path(os.environ.get("VEIL_NODE_DIR") or ".veil-node").resolve()


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    enterprise_id: str
    enterprise_name: str
    enterprise_slug: str
    control_plane_url: str
    control_plane_key: str  # PEM: the control plane's signing key, pinned at enrolment
    verify: bool | str = True  # TLS: True, or a CA bundle's path for the control plane

    @staticmethod
    def path(node_dir: Path) -> Path:
        return node_dir / "node.json"

    @classmethod
    def load(cls, node_dir: Path) -> NodeConfig:
        try:
            data: dict[str, Any] = json.loads(cls.path(node_dir).read_text())
        except FileNotFoundError:
            raise NodeNotInitialised(node_dir) from None
        return cls(**data)

    def save(self, node_dir: Path) -> None:
        path = self.path(node_dir)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self), out, indent=2)


class NodeNotInitialised(Exception):
    def __init__(self, node_dir: Path) -> None:
        self.node_dir = node_dir
        super().__init__(
            f"{node_dir} is not a node directory: run `veil node init --enrol CODE "
            "--control-plane URL` there first"
        )


class NodeAlreadyInitialised(Exception):
    def __init__(self, node_dir: Path) -> None:
        self.node_dir = node_dir
        super().__init__(
            f"{node_dir} holds a node already (node.json or identity.key): a node enrols "
            "once; use another directory for another node"
        )


def node_settings(node_dir: Path, **overrides: Any) -> Settings:
    """The node core's settings: its data under ``node_dir/veil``, the rest as ``veil
    serve``'s (environment variables) unless overridden."""
    return Settings(data_dir=node_dir / "veil", **overrides)


def identity(node_dir: Path, config: NodeConfig) -> NodeIdentity:
    return NodeIdentity(config.node_id, NodeIdentity.load_key(node_dir / "identity.key"))


def init_node(
    node_dir: Path, url: str, code: str, settings: Settings, *, verify: bool | str = True
) -> tuple[NodeConfig, str]:
    """Enrol this node with the operator's one-time ``code``; the config and a token for
    the enterprise to use its node's API and console."""
    if NodeConfig.path(node_dir).exists() or (node_dir / "identity.key").exists():
        raise NodeAlreadyInitialised(node_dir)
    node_dir.mkdir(parents=True, exist_ok=True)
    key_path = node_dir / "identity.key"
    key = NodeIdentity.generate_key(key_path)
    with open_veil(settings, worker=False) as veil:
        signing_pem = veil.keys.signing_public_key().to_pem()
        try:
            answer = client.enrol(url, code, NodeIdentity("node_x", key).public_pem(),
                                  signing_pem, verify)  # fmt: skip
        except BaseException:
            key_path.unlink()  # not enrolled: `veil node init` may be run again here
            raise
        enterprise = answer["enterprise"]
        config = NodeConfig(
            node_id=answer["node_id"],
            enterprise_id=enterprise["id"],
            enterprise_name=enterprise["name"],
            enterprise_slug=enterprise["slug"],
            control_plane_url=url,
            control_plane_key=answer["control_plane_key"],
            verify=verify,
        )
        config.save(node_dir)
        ensure_enterprise(veil, config)
        token = enterprise_token(veil, config)
    return config, token


def ensure_enterprise(veil: Veil, config: NodeConfig) -> None:
    """The enterprise as a tenant of this node: its key in the node's own key server, and
    its principal under the control plane's id (idempotent)."""
    with veil.db.read() as session:
        if session.get(Principal, config.enterprise_id) is not None:
            return  # provisioned (keys first, then the row: see sandbox.accounts.tenants)
    with key_operation(f"enterprise:{config.enterprise_slug}/1"):
        veil.keys.create_tenant(config.enterprise_slug)
    with veil.db.transaction() as session:
        session.add(
            Principal(
                id=config.enterprise_id,
                role=Role.ENTERPRISE,
                name=config.enterprise_name,
                slug=config.enterprise_slug,
                status=Status.ACTIVE,
                created_at=veil.clock(),
            )
        )
        # The action `veil audit keys` explains the tenant's provisioning by.
        audit.record(
            session,
            "enterprise.created",
            tenant_id=config.enterprise_id,
            resource=f"principal:{config.enterprise_id}",
            details={"name": config.enterprise_name, "slug": config.enterprise_slug,
                     "via": "veil node init", "node_id": config.node_id},
        )  # fmt: skip


def enterprise_token(veil: Veil, config: NodeConfig) -> str:
    """A new token for the enterprise on its node (audited)."""
    with veil.db.transaction() as session:
        enterprise = session.get(Principal, config.enterprise_id)
        assert enterprise is not None
        lifetime = timedelta(days=veil.settings.token_ttl_days)
        issued = issue_token(session, enterprise, lifetime=lifetime, now=veil.clock())
        audit.record(
            session,
            "token.issued",
            tenant_id=enterprise.id,
            resource=f"principal:{enterprise.id}",
            details={"token_id": issued.record.id, "via": "veil node"},
        )
        return issued.secret


@contextmanager
def running_node(
    node_dir: Path,
    settings: Settings,
    *,
    poll_s: float = 1.0,
    link: bool = True,
    worker: bool = True,
) -> Iterator[tuple[Veil, NodeLink]]:
    """The node's core with its job worker (unless ``worker`` is False: a node that runs no
    job, as in the collaboration bench), and its link to the control plane (started unless
    ``link`` is False: tests drive rounds themselves)."""
    config = NodeConfig.load(node_dir)
    control = ControlPlane(config.control_plane_url, identity(node_dir, config),
                           verify=config.verify)  # fmt: skip
    try:
        with open_veil(settings, worker=worker) as veil:
            ensure_enterprise(veil, config)
            node_link = NodeLink(veil, control, config.node_id, config.enterprise_id,
                                 poll_s=poll_s)  # fmt: skip
            if link:
                node_link.start()
            try:
                yield veil, node_link
            finally:
                node_link.stop()
    finally:
        control.close()
