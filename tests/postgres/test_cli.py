"""The ``veil`` command line with its database on PostgreSQL (``VEIL_DATABASE_URL``): ``veil
init``, ``veil serve``, and the main path through the client commands, each its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from keys import LocalKeyServer
from keys.bao import free_port
from sandbox.demo.data import DECLARATION, production_log
from tests.sandbox.conftest import GRANTED, PURPOSE

pytestmark = pytest.mark.integration


class Cli:
    """Runs ``python -m sandbox.cli`` with one environment (the server's settings)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log

    def __call__(self, *args: str, token: str | None = None) -> Any:
        """Run a command; its JSON output (``--json`` is added to client commands)."""
        env = {**os.environ, **self.env, **({"VEIL_TOKEN": token} if token else {})}
        command = [sys.executable, "-m", "sandbox.cli", *args]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=env, check=False
        )
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}{self.server_log()}"
        return json.loads(done.stdout) if "--json" in args else done.stdout

    def server_log(self) -> str:
        try:
            return "\nserver log:\n" + self.log.read_text()[-4000:]
        except OSError:
            return ""


@pytest.fixture
def cli(postgres_url: str, key_server: LocalKeyServer, tmp_path: Path) -> Cli:
    config = key_server.config()
    assert config.role_id and config.secret_id
    port = free_port()
    env = {
        "VEIL_DATA_DIR": str(tmp_path / "veil"),
        "VEIL_DATABASE_URL": postgres_url,
        "VEIL_DATABASE_POOL_SIZE": "2",
        "VEIL_VAULT_ADDR": config.addr,
        "VEIL_VAULT_ROLE_ID": config.role_id,
        "VEIL_VAULT_SECRET_ID": config.secret_id,
        "VEIL_VAULT_NAMESPACE": config.namespace,
        "VEIL_VAULT_TENANCY": str(config.tenancy),
        "VEIL_API_PORT": str(port),
        "VEIL_URL": f"http://127.0.0.1:{port}",
        "VEIL_JOB_POLL_INTERVAL_S": "0.05",
    }
    return Cli(env, tmp_path / "serve.log")


@contextmanager
def _serving(cli: Cli) -> Iterator[None]:
    """``veil serve`` in its own process, up once it answers /v1/health."""
    with cli.log.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", "serve"],
            env={**os.environ, **cli.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        ends = time.monotonic() + 120  # a fresh interpreter and open_veil, on loaded cores
        while True:
            assert process.poll() is None, f"veil serve exited{cli.server_log()}"
            try:
                if httpx.get(cli.env["VEIL_URL"] + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < ends, f"veil serve did not answer{cli.server_log()}"
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.mark.slow  # the whole CLI path again on PostgreSQL, ~27 s (make test-slow)
def test_the_main_path_through_the_cli(cli: Cli, tmp_path: Path, postgres_url: str) -> None:
    operator = cli("init").strip().splitlines()[-1]
    assert operator.startswith("veil_")
    with _serving(cli):
        tag = uuid.uuid4().hex[:8]
        acme = cli("enterprises", "create", "Acme Metal", "--slug", f"acme-{tag}", "--json",
                   token=operator)  # fmt: skip
        provider = cli("providers", "create", "Predicta", "--json", token=operator)
        acme_token = cli("tokens", "issue", acme["id"], "--json", token=operator)["token"]
        provider_token = cli("tokens", "issue", provider["id"], "--json", token=operator)["token"]

        declaration, csv = tmp_path / "declaration.json", tmp_path / "log.csv"
        declaration.write_text(json.dumps(DECLARATION))
        csv.write_bytes(production_log(500, seed=3))
        dataset = cli("datasets", "create", str(declaration), "--json", token=acme_token)
        cli("datasets", "upload", dataset["id"], str(csv), "--json", token=acme_token)
        columns = [option for column in GRANTED for option in ("--column", column)]
        grant = ["--provider", provider["id"], "--dataset", dataset["id"], *columns]
        cli("grants", "create", *grant, "--purpose", PURPOSE, "--epsilon", "1", "--tier", "2",
            "--tier", "3", "--json", token=acme_token)  # fmt: skip

        job = cli("jobs", "submit", "--dataset", dataset["id"], "--purpose", PURPOSE,
                  "--epsilon", "0.5", "--count", "--mean", "temperature_c", "--json",
                  token=provider_token)  # fmt: skip
        job_id = job["job_id"]  # it waited for the job, and printed its result
        result = cli("jobs", "result", job_id, "--json", token=provider_token)
        assert result["job_id"] == job_id and result["remaining_budget"]["epsilon_spent"] == 0.5
        count = result["rows"][0]["values"][0]
        assert count["aggregate"] == "count" and abs(count["value"] - 500) < 100
        table = ["--dataset", dataset["id"], "--purpose", PURPOSE, "--tier", "2", "--count",
                 "--group-by", "shift", "--json"]  # fmt: skip
        preview = cli("jobs", "preview", *table, token=provider_token)
        assert preview["allowed"] and preview["table"]["perturbation"]["method"] == "cell-key"
        cells = cli("jobs", "submit", *table, token=provider_token)["cells"]
        assert {c["key"]["shift"] for c in cells} == {"early", "late", "night"}
        assert all(c["perturbed"] for c in cells if c["status"] == "ok")
        events = cli("audit", "events", "--action", "job.*", "--json", token=operator)
        assert {"job.submitted", "job.released"} <= {e["action"] for e in _events(events)}

    verified = cli("audit", "verify", "--json")  # this machine's database: PostgreSQL
    assert verified["ok"] is True and verified["events"] > 10, verified
    assert not (Path(cli.env["VEIL_DATA_DIR"]) / "veil.db").exists()
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            status = connection.execute(text("SELECT status FROM jobs WHERE id = :id"),
                                        {"id": job_id}).scalar()  # fmt: skip
    finally:
        engine.dispose()
    assert status == "released"


def _events(events: Any) -> list[dict[str, Any]]:
    return list(events["events"] if isinstance(events, dict) else events)
