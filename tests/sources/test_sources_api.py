"""Sources through the API, the CLI and the scheduler of a running Veil; the credentials under
both crypto profiles; another enterprise attacking a source."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cluster.postgres import PostgresServer
from keys import CryptoProfile, LocalKeyServer
from policies.principals import issue_token
from sandbox.cli.app import app
from sandbox.client import VeilClient
from sandbox.console.session import csrf_token
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from sandbox.sources.declarations import declare_source, open_credentials
from sandbox.store.models import DatasetVersion
from sandbox.store.source_models import SourceDeclaration
from tests.sources.conftest import Tenants, line_dataset, source_settings

PASSWORD = "api-Secret-0815-qq"
MAPPING = {
    "columns": {
        "machine": {"field": "equipment"},
        "temperature_c": {"field": "temp_c"},
        "cycle_time_s": {"field": "cycle_s"},
        "plant": {"constant": "plant-a"},
    }
}


def _mes(server: PostgresServer, rows: int) -> str:
    url = server.create_database()
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        c.execute(
            "CREATE TABLE r (id serial PRIMARY KEY, equipment text, temp_c float, cycle_s float)"
        )
        c.cursor().executemany(
            "INSERT INTO r (equipment, temp_c, cycle_s) VALUES ('press-1', %s, 30)",
            [(20 + i,) for i in range(rows)],
        )
    return url


def _token(veil: Veil, principal: Any) -> str:
    with veil.db.transaction() as s:
        return issue_token(s, s.merge(principal), lifetime=timedelta(days=1)).secret


@pytest.fixture
def api(veil: Veil) -> Iterator[str]:
    with ApiThread(veil.settings, veil) as url:
        yield url


def test_an_enterprise_declares_maps_and_runs_and_another_sees_nothing(
    veil: Veil, tenants: Tenants, api: str, source_postgres: PostgresServer
) -> None:
    url = _mes(source_postgres, 3)
    acme = VeilClient(api, _token(veil, tenants.acme))
    dataset = line_dataset(veil, tenants.acme)
    config = {"url": url, "table": "r", "incremental": "id"}
    declared = acme.declare_source(
        dataset, "sql", config, credentials={"password": PASSWORD}, interval_s=300, mapping=MAPPING
    )
    assert declared["credentials"] == ["password"] and PASSWORD not in json.dumps(declared)
    run = acme.run_source(dataset)
    assert (run["rows"], run["version"], run["error"]) == (3, 1, None)
    assert [s["dataset_id"] for s in acme.sources()] == [dataset]

    # Another enterprise: nothing to list, and acme's dataset answers like an unknown one.
    headers = {"Authorization": f"Bearer {_token(veil, tenants.globex)}"}
    with httpx.Client(base_url=api, headers=headers) as globex:
        assert globex.get("/v1/sources").json() == {"sources": []}
        path = f"/v1/datasets/{dataset}/source"
        attacks = [
            globex.get(path),
            globex.put(path, json={"kind": "sql", "config": config | {"table": "pg_user"}}),
            globex.put(f"{path}/mapping", json=MAPPING),
            globex.post(f"{path}/run"),
        ]
        assert [a.status_code for a in attacks] == [404, 404, 404, 404]
        assert all(dataset in a.json()["message"] for a in attacks)  # as for an unknown id
        assert not any(PASSWORD in a.text for a in attacks)
    shown = acme.source(dataset)
    assert shown is not None and shown["config"]["table"] == "r"
    assert shown["mapping"]["version"] == 1
    with veil.db.read() as s:
        assert (
            len(s.scalars(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset)).all())
            == 1
        )


def test_the_console_shows_each_source_state_and_last_error_to_its_enterprise_only(
    veil: Veil, tenants: Tenants, api: str
) -> None:
    dataset = line_dataset(veil, tenants.acme)
    config = {"url": "postgresql://mes@127.0.0.1:1/mes", "table": "r", "incremental": "id"}
    declare_source(
        veil,
        tenants.acme,
        dataset,
        kind="sql",
        config=config,
        interval_s=60,
        credentials={"password": PASSWORD},
        mapping=MAPPING,
    )
    acme, globex = _token(veil, tenants.acme), _token(veil, tenants.globex)
    with httpx.Client(base_url=api, cookies={"veil_console": acme}) as http:
        ran = http.post(
            f"/console/sources/{dataset}/run",
            data={"csrf": csrf_token(acme)},
            headers={"x-csrf-token": csrf_token(acme)},
        )
        assert ran.status_code in (200, 303)
        shown = http.get("/console/sources")
    assert shown.status_code == 200
    assert dataset in shown.text and "OperationalError" in shown.text  # the last error
    assert PASSWORD not in shown.text
    with httpx.Client(base_url=api, cookies={"veil_console": globex}) as http:
        other = http.get("/console/sources")
        attack = http.post(
            f"/console/sources/{dataset}/run",
            data={"csrf": csrf_token(globex)},
            headers={"x-csrf-token": csrf_token(globex)},
        )
    assert other.status_code == 200 and dataset not in other.text
    assert attack.status_code == 404


def test_the_cli_declares_without_the_password_on_its_command_line(
    veil: Veil, tenants: Tenants, api: str, source_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = _mes(source_postgres, 2)
    dataset = line_dataset(veil, tenants.acme)
    token = _token(veil, tenants.acme)
    (tmp_path / "config.json").write_text(
        json.dumps({"url": url, "table": "r", "incremental": "id"})
    )
    (tmp_path / "mapping.json").write_text(json.dumps(MAPPING))
    common = ["--token", token, "--url", api]
    runner = CliRunner()
    declared = runner.invoke(
        app,
        [
            "sources",
            "declare",
            dataset,
            "--config",
            str(tmp_path / "config.json"),
            "--credential",
            "password",
            "--interval",
            "60",
            "--mapping",
            str(tmp_path / "mapping.json"),
            *common,
        ],
        input=PASSWORD + "\n",
    )
    assert declared.exit_code == 0, declared.output
    assert PASSWORD not in declared.output
    ran = runner.invoke(app, ["sources", "run-now", dataset, "--json", *common])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.output)["rows"] == 2
    listed = runner.invoke(app, ["sources", "list", "--json", *common])
    assert json.loads(listed.output)[0]["state"]["last_version"] == 1


def test_the_scheduler_of_a_running_veil_runs_a_source_on_its_interval_and_stops(
    tmp_path: Path, key_server: LocalKeyServer, source_postgres: PostgresServer
) -> None:
    url = _mes(source_postgres, 2)
    settings = source_settings(tmp_path, key_server, source_poll_s=0.05)
    with open_veil(settings) as veil:
        from tests.sources.conftest import make_tenants

        tenants = make_tenants(veil)
        dataset = line_dataset(veil, tenants.acme)
        declare_source(
            veil,
            tenants.acme,
            dataset,
            kind="sql",
            interval_s=1,
            mapping=MAPPING,
            config={"url": url, "table": "r", "incremental": "id"},
        )
        deadline = time.monotonic() + 30
        while not _versions(veil, dataset) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _versions(veil, dataset) == [1]
        started = time.monotonic()
    assert time.monotonic() - started < 10  # the scheduler stopped with the Veil


def _versions(veil: Veil, dataset: str) -> list[int]:
    with veil.db.read() as s:
        return list(
            s.scalars(select(DatasetVersion.version).where(DatasetVersion.dataset_id == dataset))
        )


@pytest.mark.parametrize("profile", [CryptoProfile.STANDARD, CryptoProfile.GM])
def test_credentials_are_wrapped_by_the_enterprise_keys_under_each_profile(
    tmp_path: Path,
    key_server: LocalKeyServer,
    bao_binary: Path,
    profile: CryptoProfile,
) -> None:
    from tests.sandbox.conftest import key_server_for
    from tests.sources.conftest import make_tenants

    with (
        key_server_for(profile, key_server, tmp_path / "bao-gm", bao_binary) as server,
        open_veil(source_settings(tmp_path, server, crypto_profile=profile)) as veil,
    ):
        tenants = make_tenants(veil)
        dataset = line_dataset(veil, tenants.acme)
        config = {"url": "postgresql://mes@127.0.0.1:1/mes", "table": "r", "incremental": "id"}
        declare_source(
            veil,
            tenants.acme,
            dataset,
            kind="sql",
            config=config,
            credentials={"password": PASSWORD},
        )
        with veil.db.read() as s:
            source = s.scalars(select(SourceDeclaration)).one()
            s.expunge(source)
        assert source.secrets_wrapped_key is not None
        assert source.secrets_wrapped_key.startswith(
            "veil-sm4:" if profile is CryptoProfile.GM else "vault:"
        )
        assert PASSWORD not in (source.secrets_ciphertext or "")
        assert tenants.acme.slug is not None and tenants.globex.slug is not None
        assert open_credentials(veil, tenants.acme.slug, source) == {"password": PASSWORD}
        with pytest.raises(Exception):  # another enterprise's keys open nothing  # noqa: B017
            open_credentials(veil, tenants.globex.slug, source)
