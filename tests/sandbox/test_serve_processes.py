"""``veil serve --processes 2``: two API processes behind one address, sharing nothing but the
database and the key server, so any request may land on either."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from cluster.local import stop_processes
from keys.bao import free_port
from sandbox.client import ApiError, VeilClient
from sandbox.demo.data import DECLARATION, production_log

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # make test-slow: ~10 s or more

ROOT = Path(__file__).resolve().parents[2]
PURPOSE = "process-optimization"


class Served:
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
        self.log = data_dir.parent / "serve.log"

    def cli(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "sandbox.cli", *args],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip
        return done.stdout

    def leases(self) -> list[int]:
        engine = create_engine(f"sqlite:///{self.data_dir / 'veil.db'}")
        try:
            with engine.connect() as connection:
                return list(connection.scalars(text("SELECT pid FROM job_workers")))
        finally:
            engine.dispose()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "veil")
    token = served.cli("init").strip().splitlines()[-1]
    with served.log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", "serve", "--processes", "2"],
            env=served.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(served.leases()) < 2:  # each process runs the embedded worker: a lease each
            assert server.poll() is None, served.log.read_text()[-3000:]
            assert time.monotonic() < deadline, served.log.read_text()[-3000:]
            time.sleep(0.2)
        served.env["VEIL_TOKEN"] = token
        yield served
    finally:
        stop_processes([server])
        with contextlib.suppress(subprocess.SubprocessError):
            served.cli("keys", "stop", timeout=60)


def _fresh(url: str, token: str) -> VeilClient:
    """A client on a new connection: the kernel hands it to either process."""
    return VeilClient(url, token)


def test_two_processes_serve_one_address_with_nothing_kept_in_memory(served: Served) -> None:
    url, operator_token = served.url, served.env["VEIL_TOKEN"]
    pids = served.leases()
    assert len(set(pids)) == 2, pids  # two processes, each with its worker
    with _fresh(url, operator_token) as operator:
        enterprise = operator.create_enterprise("Two Process Works", "two-process")
        provider = operator.create_provider("Two Process Analytics")
        ent_token = operator.issue_token(enterprise["id"])
        prov_token = operator.issue_token(provider["id"])
    with _fresh(url, ent_token) as owner:
        dataset = owner.create_dataset("log", DECLARATION["columns"], epsilon_cap=10.0)
        owner.upload(dataset["id"], production_log(2_000, seed=5))
    with _fresh(url, ent_token) as owner:
        owner.create_grant(
            provider["id"], [dataset["id"]], ["machine", "temperature_c"], [3], [PURPOSE],
            datetime.now(UTC) + timedelta(days=1), epsilon=1.0,
        )  # fmt: skip
    jobs = []
    for _ in range(8):  # each on its own connection, then read back on others
        with _fresh(url, prov_token) as analyst:
            jobs.append(analyst.submit_job(dataset["id"], PURPOSE, 0.1, [{"kind": "count"}]))
    for job in jobs:
        with _fresh(url, prov_token) as analyst:
            assert analyst.wait_for_job(job["id"], timeout=60)["status"] == "released"
    # The budget is one, whichever process debited it: 8 + 2 tenths spend it, the next is refused.
    for _ in range(2):
        with _fresh(url, prov_token) as analyst:
            analyst.submit_job(dataset["id"], PURPOSE, 0.1, [{"kind": "count"}])
    with _fresh(url, prov_token) as analyst, pytest.raises(ApiError) as refused:
        analyst.submit_job(dataset["id"], PURPOSE, 0.1, [{"kind": "count"}])
    assert refused.value.status == 403
    with _fresh(url, operator_token) as operator:
        assert operator.verify_audit()["ok"]
