"""A local OpenBao cluster: several ``bao`` servers on loopback sharing raft storage.

For tests and demos of a highly available key server (``docs/keys.md``).  Under
``home`` it keeps::

    unseal.key          the static seal's key, shared by every node (auto-unseal)
    credentials.json    mode 0600: Veil's AppRole role id and secret id
    operator-secret-id  mode 0600: the cluster operator AppRole (raft membership, snapshots)
    cluster.json        every node's ports and the pids of the running ones
    node<i>/config.hcl  written at every start of node i
    node<i>/storage/    node i's raft storage (a full replica)
    node<i>/audit/      node i's file audit device
    node<i>/server.log  node i's output

Node 0 initialises the cluster on first boot with the same ``initialize``
stanza as :class:`~keys.bao.LocalKeyServer` (Veil's namespace, AppRole and
policy); the others join it (``retry_join`` on every other node) and unseal
themselves with the shared key.  Ports are chosen once and kept: raft knows its
members by address.  The static seal's risk is that of the embedded server, times
the number of nodes: see ``docs/keys.md``.

``python -m keys.cluster start --home DIR`` starts one and prints the ``VEIL_VAULT_*``
settings that point Veil at it; ``python -m keys.cluster stop --home DIR`` stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from i18n import Msg
from keys.bao import (
    PLATFORM_SECRET_ENV,
    VEIL_INITIALIZE,
    create_credentials,
    find_bao_binary,
    free_ports,
    hcl_string,
    platform_config,
    port_free,
    read_credentials,
    server_config_hcl,
    spawn_server,
    stop_process,
    unseal_key,
    write_private,
)
from keys.errors import KeyServerStartError
from keys.vault import KeyServerConfig

_ACTIVE, _STANDBY = 200, 429  # sys/health answers of an unsealed active node and standby
_OPERATOR = "veil-cluster-operator"
_OPERATOR_SECRET_ENV = "VEIL_BAO_OPERATOR_SECRET_ID"  # noqa: S105 - the name of a variable
_OPERATOR_POLICY = """
path "sys/storage/raft/configuration" { capabilities = ["read"] }
path "sys/storage/raft/snapshot" { capabilities = ["read"] }
"""

#: Run once by node 0 after Veil's own stanza.  Autopilot promotes a joining node to
#: voter once it has been healthy this long (OpenBao's default is 10 s); dead nodes
#: are never removed, so a killed node rejoins as the voter it was.  The operator
#: AppRole (root namespace) may only read the raft membership and take snapshots.
_CLUSTER_INITIALIZE = f"""
initialize "cluster" {{
  request "autopilot" {{
    operation = "update"
    path      = "sys/storage/raft/autopilot/configuration"
    data      = {{
      server_stabilization_time = "1s"
      cleanup_dead_servers      = false
    }}
  }}
  request "operator-approle" {{
    operation = "update"
    path      = "sys/auth/approle"
    data      = {{ type = "approle" }}
  }}
  request "operator-policy" {{
    operation = "update"
    path      = "sys/policies/acl/{_OPERATOR}"
    data      = {{ policy = {hcl_string(_OPERATOR_POLICY)} }}
  }}
  request "operator-role" {{
    operation = "update"
    path      = "auth/approle/role/{_OPERATOR}"
    data      = {{
      token_policies = ["{_OPERATOR}"]
      token_ttl      = "1h"
    }}
  }}
  request "operator-role-id" {{
    operation = "update"
    path      = "auth/approle/role/{_OPERATOR}/role-id"
    data      = {{ role_id = "{_OPERATOR}" }}
  }}
  request "operator-secret-id" {{
    operation = "update"
    path      = "auth/approle/role/{_OPERATOR}/custom-secret-id"
    data      = {{
      secret_id = {{
        eval_type       = "string"
        eval_source     = "env"
        env_var         = "{_OPERATOR_SECRET_ENV}"
        require_present = true
      }}
    }}
  }}
}}
"""


class LocalKeyCluster:
    """Start, kill, restart and stop ``nodes`` OpenBao servers forming one raft cluster."""

    def __init__(
        self,
        home: Path,
        nodes: int = 3,
        *,
        bao_binary: Path | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.home = Path(home)
        self._binary = bao_binary
        self._timeout = start_timeout_s
        self._ports: list[tuple[int, int]] = []
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self._pids: list[int | None] = [None] * nodes
        self.nodes = nodes
        self._operator: hvac.Client | None = None
        self._load_state()

    # -- what is where --------------------------------------------------------------------
    @property
    def addrs(self) -> tuple[str, ...]:
        """Every node's API address, node 0 first."""
        return tuple(f"http://127.0.0.1:{port}" for port, _ in self._ports)

    def node_home(self, i: int) -> Path:
        return self.home / f"node{i}"

    def log_file(self, i: int) -> Path:
        return self.node_home(i) / "server.log"

    def audit_log(self, i: int) -> Path:
        return self.node_home(i) / "audit" / "audit.log"

    def config(self) -> KeyServerConfig:
        """How Veil reaches the cluster: every node's address and Veil's own AppRole."""
        if not self._ports:
            raise KeyServerStartError(Msg("the key-server cluster was never started"))
        return platform_config(self.home, self.addrs)

    def voters(self) -> int:
        """How many nodes have a vote in the raft cluster now (0 if none answers)."""
        try:
            answer = self._operator_get("/v1/sys/storage/raft/configuration")
        except (KeyServerStartError, requests.RequestException, hvac.exceptions.VaultError):
            return 0
        return sum(1 for s in answer["data"]["config"]["servers"] if s["voter"])

    def snapshot(self, path: Path) -> None:
        """Save a raft snapshot of the whole key store to ``path`` (a backup, mode 0600)."""
        response = self._operator_get("/v1/sys/storage/raft/snapshot", stream=True)
        write_private(path, response.content)

    def _operator_get(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` as the cluster operator (raft membership and snapshots only)."""
        if self._operator is not None:
            try:
                return self._operator.adapter.get(path, **kwargs)
            except (requests.RequestException, hvac.exceptions.VaultError):
                self._operator = None  # that node is gone: log in on another
        try:
            secret_id = self._operator_file.read_text()
        except OSError:
            raise KeyServerStartError(
                Msg(
                    "the cluster operator's secret id is missing at {operator_file}",
                    operator_file=self._operator_file,
                )
            ) from None
        for addr in self.addrs:
            # token="" (not None): hvac would otherwise read VAULT_TOKEN or ~/.vault-token.
            client = hvac.Client(url=addr, token="", timeout=5)
            try:
                client.auth.approle.login(role_id=_OPERATOR, secret_id=secret_id)
            except (requests.RequestException, hvac.exceptions.VaultError):
                continue
            self._operator = client
            return client.adapter.get(path, **kwargs)
        raise KeyServerStartError(Msg("no node of the key-server cluster lets the operator in"))

    @property
    def _operator_file(self) -> Path:
        return self.home / "operator-secret-id"

    def leader(self) -> int | None:
        """The index of the active node, or None while there is none."""
        for i, addr in enumerate(self.addrs):
            if self._pids[i] is not None and _health(addr) == _ACTIVE:
                return i
        return None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> KeyServerConfig:
        """Start every node not running; wait until all are unsealed and one is active."""
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        first_boot = not _has_data(self.node_home(0) / "storage")
        secrets_env = None
        if first_boot:
            operator_secret = secrets.token_urlsafe(32)
            write_private(self._operator_file, operator_secret.encode())
            secrets_env = {
                PLATFORM_SECRET_ENV: create_credentials(self.home).secret_id,
                _OPERATOR_SECRET_ENV: operator_secret,
            }
        else:
            read_credentials(self.home)  # fail early if they are lost
        if not self._ports:
            ports = free_ports(2 * self.nodes)
            self._ports = [(ports[2 * i], ports[2 * i + 1]) for i in range(self.nodes)]
        for i in range(self.nodes):
            if not self._running(i):
                self._spawn(i, secrets_env if i == 0 else None)
        self._save_state()
        try:
            self._wait(lambda: self._all_serving(range(self.nodes)), Msg("become ready"))
            self._wait(lambda: self.voters() == self.nodes, Msg("give every node a vote"))
        except KeyServerStartError:
            self.stop()
            raise
        return self.config()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout_s``)."""
        for pid in self._pids:
            if pid is not None and self._owned(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)  # all at once: no node waits for another
        for i, pid in enumerate(self._pids):
            if pid is not None and (self._processes[i] is not None or self._owned(pid)):
                stop_process(pid, self._processes[i], timeout_s)  # also reaps our children
            self._forget(i)
        self._save_state()

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (a crash: no clean leave) and wait until it is gone."""
        pid = self._pids[i]
        if pid is None:
            raise KeyServerStartError(
                Msg(
                    "node {i} of the key-server cluster is not running",
                    i=i,
                )
            )
        os.kill(pid, signal.SIGKILL)
        stop_process(pid, self._processes[i], timeout_s=5.0)
        self._forget(i)
        self._save_state()

    def restart(self, i: int) -> None:
        """Start node ``i`` again on its storage; wait until it has rejoined, unsealed."""
        if self._running(i):
            return
        self._spawn(i, None)
        self._save_state()
        self._wait(lambda: self._all_serving([i]), Msg("bring node {i} back", i=i))

    # -- helpers --------------------------------------------------------------------------
    def _spawn(self, i: int, secrets_env: dict[str, str] | None) -> None:
        home = self.node_home(i)
        home.mkdir(mode=0o700, exist_ok=True)
        (home / "storage").mkdir(mode=0o700, exist_ok=True)
        port, cluster_port = self._ports[i]
        if not (port_free(port) and port_free(cluster_port)):
            raise KeyServerStartError(
                Msg(
                    "node {i} of the key-server cluster needs ports {port} and "
                    "{cluster_port}, which are in use; stop what uses them (raft "
                    "knows its nodes by address)",
                    i=i,
                    port=port,
                    cluster_port=cluster_port,
                )
            )
        write_private(home / "config.hcl", self._config_hcl(i).encode())
        process = spawn_server(
            self._binary or find_bao_binary(),
            home / "config.hcl",
            self.log_file(i),
            secrets_env,
        )
        self._processes[i] = process
        self._pids[i] = process.pid

    def _config_hcl(self, i: int) -> str:
        # Node 0 initialises the cluster; the others join whichever node answers.
        joins = "".join(
            f'\n  retry_join {{\n    leader_api_addr = "{addr}"\n  }}'
            for j, addr in enumerate(self.addrs)
            if j != i and i != 0
        )
        storage = (
            f'storage "raft" {{\n  path    = {hcl_string(str(self.node_home(i) / "storage"))}\n'
            f'  node_id = "node{i}"\n  performance_multiplier = 1\n'
            f'  autopilot_reconcile_interval = "1s"\n  autopilot_update_interval = "1s"{joins}\n}}'
        )
        port, cluster_port = self._ports[i]
        config = server_config_hcl(
            storage=storage,
            port=port,
            cluster_port=cluster_port,
            unseal_key=unseal_key(self.home),
            # The same relative path on every node: raft shares the audit device's
            # settings, and each node (started in its own folder) writes its own file.
            audit_log="audit/audit.log",
            initialize=VEIL_INITIALIZE + _CLUSTER_INITIALIZE if i == 0 else "",
        )
        # Standbys forward every request to the active node rather than answer reads
        # from their own replica, which may lag: Veil uses a login right after making it.
        return config + "\ndisable_standby_reads = true\n"

    def _all_serving(self, which: range | list[int]) -> bool:
        """Whether every node in ``which`` is unsealed and the cluster has a leader."""
        for i in which:
            process = self._processes[i]
            if process is not None and process.poll() is not None:
                raise KeyServerStartError(
                    Msg(
                        "node {i} of the key-server cluster exited with code "
                        "{returncode}; see {log}",
                        i=i,
                        returncode=process.returncode,
                        log=self.log_file(i),
                    )
                )
            if _health(self.addrs[i]) not in (_ACTIVE, _STANDBY):
                return False
        return self.leader() is not None

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.1)
        raise KeyServerStartError(
            Msg(
                "the key-server cluster did not {what} in {timeout} s; see the "
                "server.log of each node under {home}",
                what=what,
                timeout=f"{self._timeout:.0f}",
                home=self.home,
            )
        )

    def _running(self, i: int) -> bool:
        pid = self._pids[i]
        return pid is not None and self._owned(pid)

    def _owned(self, pid: int) -> bool:
        """Whether ``pid`` is still one of this cluster's servers (not a reused pid)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().split(")")[-1].split()[0] == "Z"
        except OSError:
            return False
        return not zombie and str(self.home).encode() in cmdline

    def _forget(self, i: int) -> None:
        self._processes[i] = None
        self._pids[i] = None

    @property
    def _state_file(self) -> Path:
        return self.home / "cluster.json"

    def _load_state(self) -> None:
        try:
            state = json.loads(self._state_file.read_text())
            self._ports = [(int(p), int(c)) for p, c in state["ports"]]
            pids = [int(p) if p else None for p in state["pids"]]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if len(self._ports) != self.nodes:
            raise KeyServerStartError(
                Msg(
                    "the key-server cluster under {home} has {count} nodes, not {nodes}",
                    home=self.home,
                    count=len(self._ports),
                    nodes=self.nodes,
                )
            )
        self._pids = [p if p is not None and self._owned(p) else None for p in pids]

    def _save_state(self) -> None:
        state = {"ports": self._ports, "pids": self._pids}
        write_private(self._state_file, json.dumps(state).encode())


def _has_data(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _health(addr: str) -> int | None:
    try:
        return int(requests.get(f"{addr}/v1/sys/health", timeout=1).status_code)
    except requests.RequestException:
        return None


def env_lines(config: KeyServerConfig) -> list[str]:
    """The settings that point Veil at ``config`` (``docs/configuration.md``)."""
    return [
        f"VEIL_VAULT_ADDR={','.join(config.nodes)}",
        f"VEIL_VAULT_NAMESPACE={config.namespace}",
        f"VEIL_VAULT_TENANCY={config.tenancy.value}",
        f"VEIL_VAULT_ROLE_ID={config.role_id}",
        f"VEIL_VAULT_SECRET_ID={config.secret_id}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keys.cluster", description="A local OpenBao cluster for Veil."
    )
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--home", type=Path, required=True, help="the cluster's directory")
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    args = parser.parse_args(argv)
    try:
        cluster = LocalKeyCluster(args.home.resolve(), args.nodes)
        if args.command == "stop":
            cluster.stop()
            return 0
        config = cluster.start()
    except KeyServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # The secret id goes to stdout only: the caller asked for it, to hand it to Veil.
    print("\n".join(env_lines(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
