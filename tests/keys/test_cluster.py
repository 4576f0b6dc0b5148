"""A three-node OpenBao cluster (raft): losing any one node, the leader included, fails nothing."""

from __future__ import annotations

import contextlib
import io
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from keys import KeyServerConfig, KeyServerUnavailable, KeyService
from keys.bao import free_ports
from keys.cluster import LocalKeyCluster, main
from keys.vault import KeyServerClient
from sandbox.config.settings import Settings

# make test-slow: a module of ~20 s or more (test durations)
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, bao_binary: Path
) -> Iterator[LocalKeyCluster]:
    """One cluster for this module; tests that kill a node bring it back before they end."""
    started = LocalKeyCluster(tmp_path_factory.mktemp("bao-cluster"), bao_binary=bao_binary)
    try:
        started.start()
        yield started
    finally:
        pids = [p for p in started._pids if p is not None]
        stopped = main(["stop", "--home", str(started.home)])  # as a shell would, by pid
        started.stop()  # reaps the children (and stops any the command missed)
    assert stopped == 0
    assert pids and not any(_alive(pid) for pid in pids), "a bao process outlived stop"


@pytest.fixture(scope="module")
def cluster_keys(cluster: LocalKeyCluster) -> KeyService:
    service = KeyService.connect(cluster.config())
    service.create_tenant("acme")
    return service


class Load:
    """Key operations in a loop on a thread of their own: data key, unwrap, sign, and now and
    then a fresh tenant login (a write); every outcome recorded with its time."""

    def __init__(self, keys: KeyService) -> None:
        self.keys = keys
        self.outcomes: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                wrapped, blob = self.keys.encrypt_bytes("acme", f"obj-{n}", 1, b"rows")
                assert self.keys.decrypt_bytes("acme", f"obj-{n}", 1, wrapped, blob) == b"rows"
                self.keys.sign(b"checkpoint")
                if n % 5 == 0:
                    self.keys._server.forget_tenant("acme")  # the next call logs in again
                self.outcomes.append((time.monotonic(), "ok"))
            except Exception as exc:  # every failure is the test's finding
                self.outcomes.append((time.monotonic(), exc))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive()

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.outcomes) < count:
            assert time.monotonic() < deadline, f"only {len(self.outcomes)} operations ran"
            time.sleep(0.02)

    def since(self, moment: float) -> int:
        return sum(1 for at, outcome in self.outcomes if at > moment and outcome == "ok")

    @property
    def failures(self) -> list[object]:
        return [outcome for _, outcome in self.outcomes if outcome != "ok"]


def test_three_nodes_form_one_cluster(cluster: LocalKeyCluster, cluster_keys: KeyService) -> None:
    config = cluster.config()
    assert config.nodes == cluster.addrs and len(set(config.nodes)) == 3
    assert cluster.leader() is not None
    assert cluster.voters() == 3
    for i in range(3):
        text = (cluster.node_home(i) / "config.hcl").read_text()
        assert 'storage "raft"' in text and 'seal "static"' in text
        assert "disable_standby_reads = true" in text
        assert ('initialize "veil"' in text) == (i == 0)  # only node 0 initialises
    for secret in ("unseal.key", "credentials.json", "operator-secret-id"):
        assert stat.S_IMODE((cluster.home / secret).stat().st_mode) == 0o600, secret
    # Veil's own least-privilege login works on the cluster as on the embedded server.
    info = KeyServerClient(config).platform().auth.token.lookup_self()["data"]
    assert sorted(info["policies"]) == ["default", "veil-platform"]
    # A standby forwards to the active node (it serves nothing from its own replica).
    leader = cluster.leader()
    standby = next(i for i in range(3) if i != leader)
    assert requests.get(f"{cluster.addrs[standby]}/v1/sys/health", timeout=2).status_code == 429
    wrapped, blob = cluster_keys.encrypt_bytes("acme", "ds", 1, b"rows")
    assert cluster_keys.decrypt_bytes("acme", "ds", 1, wrapped, blob) == b"rows"


@pytest.mark.parametrize("victim", ["standby", "leader"])
def test_killing_one_node_fails_no_operation(
    cluster: LocalKeyCluster, cluster_keys: KeyService, victim: str
) -> None:
    leader = cluster.leader()
    assert leader is not None
    node = leader if victim == "leader" else (leader + 1) % 3
    with Load(cluster_keys) as load:
        load.wait_for(20)
        killed_at = time.monotonic()
        cluster.kill(node)  # SIGKILL: no clean leave
        deadline = time.monotonic() + 30
        while cluster.leader() in (None, node):
            assert time.monotonic() < deadline, "no new leader was elected"
            time.sleep(0.05)
        elected_at = time.monotonic()
        while load.since(elected_at) < 20:
            assert time.monotonic() < deadline + 30, "operations stopped after the kill"
            time.sleep(0.05)
        cluster.restart(node)  # on its own storage: it rejoins, unsealed by the shared key
        restarted_at = time.monotonic()
        load.wait_for(len(load.outcomes) + 10)
    assert load.failures == [], load.failures[:5]
    assert load.since(killed_at) >= 30 and load.since(restarted_at) >= 10
    if victim == "leader":
        assert cluster.leader() != node  # the old leader came back as a standby
    assert requests.get(f"{cluster.addrs[node]}/v1/sys/health", timeout=2).status_code in (
        200,
        429,
    )
    assert cluster.voters() == 3


def test_two_nodes_down_fails_closed_then_recovers(
    cluster: LocalKeyCluster, cluster_keys: KeyService
) -> None:
    wrapped, blob = cluster_keys.encrypt_bytes("acme", "ds", 1, b"rows")
    config = replace(cluster.config(), failover_s=2.0)
    impatient = KeyService.connect(config)
    leader = cluster.leader()
    assert leader is not None
    down = [leader, (leader + 1) % 3]
    for node in down:
        cluster.kill(node)
    started = time.monotonic()
    with pytest.raises(KeyServerUnavailable):  # no majority: nothing is served
        impatient.decrypt_bytes("acme", "ds", 1, wrapped, blob)
    assert 2.0 <= time.monotonic() - started < 10.0
    for node in down:
        cluster.restart(node)
    assert impatient.decrypt_bytes("acme", "ds", 1, wrapped, blob) == b"rows"
    assert cluster_keys.decrypt_bytes("acme", "ds", 1, wrapped, blob) == b"rows"


def test_a_raft_snapshot_is_a_backup(cluster: LocalKeyCluster, tmp_path: Path) -> None:
    backup = tmp_path / "keys.snap"
    cluster.snapshot(backup)
    assert backup.stat().st_size > 1000
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_the_cli_prints_the_settings_that_reach_the_cluster(
    cluster: LocalKeyCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["start", "--home", str(cluster.home)]) == 0  # reuses the running nodes
    env = dict(line.split("=", 1) for line in out.getvalue().splitlines())
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = Settings().external_key_server()
    assert config.nodes == cluster.addrs
    assert KeyService.connect(config).tenant_exists("acme")


def test_one_address_fails_closed_at_once() -> None:
    (port,) = free_ports(1)
    client = KeyServerClient(KeyServerConfig(addr=f"http://127.0.0.1:{port}", token="t"))
    started = time.monotonic()
    with pytest.raises(KeyServerUnavailable, match="cannot reach the key server"):
        client.check_ready()
    assert time.monotonic() - started < 1.0  # nothing else to try: no failover wait


def test_a_cluster_with_every_node_down_fails_closed_after_the_failover_wait() -> None:
    addrs = tuple(f"http://127.0.0.1:{port}" for port in free_ports(3))
    config = KeyServerConfig(addr=addrs[0], addrs=addrs, token="t", failover_s=1.0)
    started = time.monotonic()
    with pytest.raises(KeyServerUnavailable, match="cannot reach the key server") as raised:
        KeyServerClient(config).check_ready()
    assert 1.0 <= time.monotonic() - started < 5.0
    assert all(addr in str(raised.value) for addr in addrs)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
