"""What Veil writes is its user's alone: a fresh data directory and everything in it after a
real run (``veil init``, ``veil serve``, an upload, a job, an audit export and verification)
has no group or other bit, however loose the umask Veil was started with; each layer (the
entry points' umask, the modes Veil sets itself) holds on its own; an existing data
directory open to others is named with the ``chmod`` that closes it (``sandbox/config/datadir.py``).
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cluster.local import LocalCluster, stop_processes
from keys import KeyService, LocalKeyServer
from keys.bao import free_port
from policies import audit
from sandbox.cli import main
from sandbox.client import VeilClient
from sandbox.config.datadir import prepare_data_dir
from sandbox.data.objects import write_encrypted
from sandbox.demo.data import DECLARATION, production_log
from sandbox.server.app import app_from_environment
from sandbox.service import open_veil
from sandbox.store.database import Database, migrate, sqlite_url
from tests.sandbox.conftest import PURPOSE, settings_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: What most systems start processes with: files 0644, directories 0755.
LOOSE_UMASK = 0o022


def open_to_others(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) that group or others may use, with its
    mode; files that vanish while looking (a running server's) are passed over."""
    found = []
    for path in [root, *root.rglob("*")]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
            found.append(f"{path.relative_to(root)} {stat.S_IMODE(mode):04o}")
    return found


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """This test process creates files with umask 022 (restored afterwards)."""
    before = os.umask(LOOSE_UMASK)
    try:
        yield
    finally:
        os.umask(before)


class VeilProcesses:
    """The ``veil`` command run as its own processes, each started with umask 022."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_", "VAULT_"))}
        self.env = env | {
            "VEIL_DATA_DIR": str(data_dir),
            "VEIL_API_PORT": str(self.port),
            "VEIL_JOB_POLL_INTERVAL_S": "0.05",
            "VEIL_COMMITMENT_LETTERS": "false",  # not about letters (tests/conftest.py)
            "PYTHONPATH": str(ROOT),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "sandbox.cli", *args], env=self.env, cwd=ROOT,
            capture_output=True, text=True, timeout=180, check=False, umask=LOOSE_UMASK,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def serve(self, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "sandbox.cli", "serve"], env=self.env, cwd=ROOT,
                stdout=out, stderr=subprocess.STDOUT, umask=LOOSE_UMASK,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.2)


def _umask_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(
        next(line for line in status.splitlines() if line.startswith("Umask:")).split()[1], 8
    )


def _use(url: str, operator_token: str) -> None:
    """An enterprise uploads and grants; a provider's tier-3 query is released."""
    with VeilClient(url, operator_token) as operator:
        enterprise = operator.create_enterprise("Private Files Works", "private-files")
        provider = operator.create_provider("Private Files Analytics")
        ent_token = operator.issue_token(enterprise["id"])
        prov_token = operator.issue_token(provider["id"])
    with VeilClient(url, ent_token) as owner:
        dataset = owner.create_dataset("log", DECLARATION["columns"], epsilon_cap=10.0)
        owner.upload(dataset["id"], production_log(500, seed=3))
        owner.create_grant(
            provider["id"], [dataset["id"]], ["machine", "temperature_c"], [3], [PURPOSE],
            datetime.now(UTC) + timedelta(days=1), epsilon=1.0,
        )  # fmt: skip
    with VeilClient(url, prov_token) as analyst:
        job = analyst.submit_job(dataset["id"], PURPOSE, 0.5, [{"kind": "count"}], "machine")
        assert analyst.wait_for_job(job["id"], timeout=120)["status"] == "released"


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_a_real_run_leaves_nothing_open_to_other_users(tmp_path: Path) -> None:
    data_dir = tmp_path / "veil"
    veil = VeilProcesses(data_dir)
    token = veil.run("init").stdout.strip().splitlines()[-1]
    server = veil.serve(tmp_path / "serve.log")
    try:
        assert _umask_of(server.pid) == 0o077  # started with 022, narrowed at once
        _use(veil.url, token)
        export = data_dir / "audit.jsonl"  # an export an officer keeps with the data
        veil.run("audit", "export", "--output", str(export), "--token", token, "--url", veil.url)
        veil.run("audit", "verify")
        written = {str(p.relative_to(data_dir)) for p in data_dir.rglob("*")}
        expected = {
            "veil.db", "veil.db-wal", "veil.db-shm", "audit.jsonl", "objects",
            "keyserver", "keyserver/storage", "keyserver/audit/audit.log", "keyserver/server.log",
            "keyserver/config.hcl", "keyserver/unseal.key", "keyserver/credentials.json",
        }  # fmt: skip
        assert expected <= written, expected - written
        assert any(p.endswith(".veil") for p in written), written  # the encrypted upload
        assert open_to_others(data_dir) == []  # while it runs: the WAL, the key server's files
    finally:
        stop_processes([server])
        veil.run("keys", "stop")
    assert open_to_others(data_dir) == []


def test_an_open_data_directory_is_named_with_its_fix(tmp_path: Path) -> None:
    """``veil init`` on a data directory others may enter: it works, and says which
    directory, its mode and the command that closes it."""
    data_dir = tmp_path / "shared dir" / "veil"
    data_dir.mkdir(parents=True)
    data_dir.chmod(0o755)
    done = VeilProcesses(data_dir).run("init")  # it stops the key server it started
    assert f"the data directory {data_dir} is open to other users (mode 0755" in done.stderr
    assert f"run `chmod -R go-rwx '{data_dir}'`" in done.stderr


def test_the_data_directory_check(
    tmp_path: Path, loose_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sandbox.config.datadir")
    fresh = tmp_path / "new" / "veil"
    prepare_data_dir(fresh)  # created, with its missing parent, private
    assert stat.S_IMODE(fresh.stat().st_mode) == stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    prepare_data_dir(fresh)
    assert caplog.messages == []
    for loose in (0o750, 0o701, 0o755):
        fresh.chmod(loose)
        prepare_data_dir(fresh)
        assert caplog.messages == [
            f"the data directory {fresh} is open to other users (mode {loose:04o}; Veil keeps "
            f"it 0700): run `chmod -R go-rwx {fresh}`"
        ]
        caplog.clear()


@pytest.mark.parametrize("entry", ["veil", "app_from_environment"])
def test_every_entry_point_narrows_the_umask(
    entry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The ``veil`` command (whatever the subcommand) and the API app factory (each process
    of ``veil serve --processes N``; a server importing it by name)."""
    monkeypatch.setenv("VEIL_DATA_DIR", str(tmp_path / "veil"))
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "argv", ["veil", "keys", "policy", "--tenancy", "namespace"])
    before = os.umask(LOOSE_UMASK)
    try:
        if entry == "veil":
            with pytest.raises(SystemExit) as done:
                main()
            assert done.value.code == 0
        else:
            app_from_environment()
    finally:
        narrowed = os.umask(before)
    assert narrowed == 0o077
    # No bytecode cache made private in the checkout or the venv, here or in a child.
    assert sys.dont_write_bytecode and os.environ["PYTHONDONTWRITEBYTECODE"] == "1"


def test_the_database_is_private_whatever_the_umask(tmp_path: Path, loose_umask: None) -> None:
    """SQLite gives its -wal and -shm the database file's mode: Veil creates that 0600."""
    url = sqlite_url(tmp_path)
    migrate(url)
    db = Database(url)
    try:
        with db.transaction() as session:
            audit.record(session, "test.event")
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["veil.db", "veil.db-shm", "veil.db-wal"], names
        assert open_to_others(tmp_path) == []
    finally:
        db.dispose()


def test_objects_are_private_whatever_the_umask(
    tmp_path: Path, loose_umask: None, key_server: LocalKeyServer
) -> None:
    with open_veil(settings_for(tmp_path, key_server), worker=False) as veil:
        veil.keys.create_tenant("ent-private")
        relative = Path("ent-private") / "ds-x" / "v1.veil"
        write_encrypted(veil, "ent-private", "ds_x", 1, b"secret rows", relative)
        assert (veil.settings.objects_dir / relative).is_file()
        assert open_to_others(veil.settings.data_dir) == []


def test_the_embedded_key_server_is_private_whatever_the_umask(
    tmp_path: Path, loose_umask: None, bao_binary: Path
) -> None:
    server = LocalKeyServer(tmp_path / "keyserver", bao_binary=bao_binary)
    try:
        keys = KeyService.connect(server.start())
        keys.create_tenant("private")
        keys.encrypt_bytes("private", "obj", 1, b"x")  # storage and audit log written
    finally:
        server.stop()
    assert (server.home / "storage").is_dir() and server.audit_log.is_file()
    assert open_to_others(server.home) == []


def test_a_local_clusters_logs_are_private(tmp_path: Path, loose_umask: None) -> None:
    cluster = LocalCluster(tmp_path / "cluster")
    process = cluster._start("probe", "keys", "policy", "--tenancy", "namespace")
    assert process.wait(120) == 0
    assert (cluster.logs / "probe.log").read_bytes()
    assert open_to_others(cluster.home) == []
