"""SQL sources against real servers: PostgreSQL and MariaDB on loopback, read into a Veil's
encrypted datasets by the runs the scheduler makes."""

from __future__ import annotations

import base64
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from cluster.postgres import PostgresServer
from policies.audit import AuditEvent
from policies.errors import Conflict, InvalidRequest, NotFound
from sandbox.data.datasets import latest_version, load_frame
from sandbox.runtime.veil import Veil
from sandbox.sources import runs
from sandbox.sources.declarations import (
    SourceView,
    declare_source,
    list_sources,
    set_mapping,
    show_source,
)
from sandbox.sources.scheduler import SourceScheduler
from sandbox.store.models import DatasetVersion
from sandbox.store.source_models import SourceDeclaration, SourceState
from tests.sources.conftest import Tenants, line_dataset
from tests.sources.mariadb import MariaDbServer

PG_PASSWORD = "pg-Secret-4711-zz"

#: Vendor A's MES (PostgreSQL): °F and milliseconds, an id per reading.
VENDOR_A = {
    "columns": {
        "machine": {"field": "equipment"},
        "temperature_c": {"field": "temp_f", "scale": 5 / 9, "offset": -160 / 9},
        "cycle_time_s": {"field": "cycle_ms", "scale": 0.001},
        "plant": {"constant": "plant-a"},
    }
}
#: Vendor B's MES (MariaDB): °C and seconds, a time per reading.
VENDOR_B = {
    "columns": {
        "machine": {"field": "station"},
        "temperature_c": {"field": "temp"},
        "cycle_time_s": {"field": "cycle"},
        "plant": {"constant": "plant-b"},
        "note": {"field": "remark"},
    }
}


def _pg_mes(server: PostgresServer) -> str:
    """A fresh MES database with a readings table; its URL (no password in it)."""
    url = server.create_database()
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        c.execute(
            "CREATE TABLE readings (id serial PRIMARY KEY, equipment text, "
            "temp_f numeric(6,2), cycle_ms integer)"
        )
    return url


def _pg_insert(url: str, rows: list[tuple[Any, ...]]) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        c.cursor().executemany(
            "INSERT INTO readings (equipment, temp_f, cycle_ms) VALUES (%s, %s, %s)", rows
        )


def _declare_pg(veil: Veil, tenants: Tenants, url: str, **extra: Any) -> str:
    dataset = line_dataset(veil, tenants.acme)
    config = {"url": url, "table": "readings", "incremental": "id", "batch_rows": 2} | extra
    declare_source(
        veil,
        tenants.acme,
        dataset,
        kind="sql",
        config=config,
        credentials={"password": PG_PASSWORD},
        interval_s=60,
        mapping=VENDOR_A,
    )
    return dataset


def _versions(veil: Veil, dataset: str) -> list[int]:
    with veil.db.read() as s:
        return list(
            s.scalars(select(DatasetVersion.version).where(DatasetVersion.dataset_id == dataset))
        )


def _frame(veil: Veil, tenants: Tenants, dataset: str) -> Any:
    with veil.db.read() as s:
        version = latest_version(s, dataset)
        assert version is not None
        s.expunge(version)
    assert tenants.acme.slug is not None
    return load_frame(veil, tenants.acme.slug, version)


def test_postgres_incremental_reads_across_runs_with_units(
    veil: Veil, tenants: Tenants, source_postgres: PostgresServer
) -> None:
    url = _pg_mes(source_postgres)
    _pg_insert(url, [("press-1", 212, 30_000), ("press-2", 32, 45_500), ("mill-1", 122, 60_000)])
    dataset = _declare_pg(veil, tenants, url)

    first = runs.run_now(veil, tenants.acme, dataset)
    assert (first.error, first.rows, first.version) == (None, 3, 1)
    frame = _frame(veil, tenants, dataset)
    assert frame["machine"].to_list() == ["press-1", "press-2", "mill-1"]
    assert frame["temperature_c"].round(6).to_list() == [100.0, 0.0, 50.0]  # °F -> °C
    assert frame["cycle_time_s"].to_list() == [30.0, 45.5, 60.0]  # ms -> s
    assert frame["plant"].to_list() == ["plant-a"] * 3
    assert frame["note"].null_count() == 3

    _pg_insert(url, [("press-1", 100, 1_000), ("press-2", 110, 2_000)])
    second = runs.run_now(veil, tenants.acme, dataset)
    assert (second.error, second.rows, second.version) == (None, 2, 2)
    assert _frame(veil, tenants, dataset).height == 5  # a full snapshot: v1's rows and the new
    nothing = runs.run_now(veil, tenants.acme, dataset)
    assert (nothing.error, nothing.rows, nothing.version) == (None, 0, None)
    assert _versions(veil, dataset) == [1, 2]
    state = _shown(veil, tenants, dataset).as_json()["state"]
    assert state["cursor"] == "5" and state["failures"] == 0 and state["last_version"] == 2


def test_mariadb_query_source_lands_in_the_same_declaration(
    veil: Veil, tenants: Tenants, maria: MariaDbServer
) -> None:
    with maria.mes() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE log (recorded_at DATETIME, station VARCHAR(20), temp DOUBLE, "
            "cycle DECIMAL(6,2), remark VARCHAR(50))"
        )
        # Three readings share a time: a batch of 2 must not split them.
        cur.executemany(
            "INSERT INTO log VALUES (%s, %s, %s, %s, %s)",
            [
                ("2026-12-01 08:00:00", "press-1", 71.5, 30.25, None),
                ("2026-12-01 08:00:00", "press-2", 80.0, 31.0, "ok"),
                ("2026-12-01 08:00:00", "mill-1", 65.0, 29.5, None),
                ("2026-12-01 08:05:00", "press-1", 72.0, 30.0, None),
            ],
        )
    dataset = line_dataset(veil, tenants.acme, "line-b")
    config = {
        "url": f"mysql://mes@127.0.0.1:{maria.port}/mes",
        "query": "SELECT recorded_at, station, temp, cycle, remark FROM log WHERE station <> ''",
        "incremental": "recorded_at",
        "batch_rows": 2,
    }
    declare_source(
        veil,
        tenants.acme,
        dataset,
        kind="sql",
        config=config,
        credentials={"password": maria.PASSWORD},
        mapping=VENDOR_B,
    )
    outcome = runs.run_now(veil, tenants.acme, dataset)
    assert (outcome.error, outcome.rows, outcome.version) == (None, 4, 1)
    frame = _frame(veil, tenants, dataset)
    assert sorted(frame["machine"].to_list()) == ["mill-1", "press-1", "press-1", "press-2"]
    assert frame["plant"].unique().to_list() == ["plant-b"]
    assert _shown(veil, tenants, dataset).as_json()["state"]["cursor"] == ("2026-12-01T08:05:00")
    with maria.mes() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO log VALUES ('2026-12-01 08:10:00', 'mill-1', 66, 29, NULL)")
    again = runs.run_now(veil, tenants.acme, dataset)
    assert (again.error, again.rows, again.version) == (None, 1, 2)

    # Without its password the same source is refused by the server, and says so.
    declare_source(
        veil, tenants.acme, dataset, kind="sql", config=config, credentials={"password": "wrong"}
    )
    refused = runs.run_now(veil, tenants.acme, dataset)
    assert refused.error is not None and "OperationalError 1045" in refused.error


def test_validation_problems_name_row_column_and_expectation_never_the_value(
    veil: Veil, tenants: Tenants, source_postgres: PostgresServer
) -> None:
    url = _pg_mes(source_postgres)
    _pg_insert(url, [("press-1", 100, 30_000), ("press-1", 987.65, 30_000)])  # 530.9 °C
    dataset = _declare_pg(veil, tenants, url)
    outcome = runs.run_now(veil, tenants.acme, dataset)
    assert outcome.version is None and outcome.error is not None
    assert "column 'temperature_c', row 2: expected a number between 0 and 200" in outcome.error
    state = _shown(veil, tenants, dataset).as_json()["state"]
    assert state["failures"] == 1 and state["cursor"] is None and state["last_version"] is None
    with veil.db.read() as s:
        failed = s.scalars(select(AuditEvent).where(AuditEvent.action == "source.run_failed")).all()
        text = repr([e.details for e in failed]) + state["last_error"]
    assert failed and not any(v in text for v in ("987", "530.9", "530.91"))
    assert _versions(veil, dataset) == []

    # A mapping naming a field the source lacks is reported by the field's name.
    set_mapping(
        veil,
        tenants.acme,
        dataset,
        VENDOR_A | {"columns": VENDOR_A["columns"] | {"note": {"field": "operator_remark"}}},
    )
    missing = runs.run_now(veil, tenants.acme, dataset)
    assert missing.error is not None and "operator_remark: no such field" in missing.error


def test_credentials_are_never_stored_logged_or_audited_in_clear(
    veil: Veil, tenants: Tenants, source_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = _pg_mes(source_postgres)
    _pg_insert(url, [("press-1", 100, 30_000)])
    dataset = _declare_pg(veil, tenants, url)
    assert runs.run_now(veil, tenants.acme, dataset).version == 1
    # A failing run too (another port): its error is logged and audited.
    bad = url.replace(f":{source_postgres.port}/", ":1/")
    declare_source(
        veil,
        tenants.acme,
        dataset,
        kind="sql",
        interval_s=60,
        config={"url": bad, "table": "readings", "incremental": "id"},
    )
    assert runs.run_now(veil, tenants.acme, dataset).error is not None

    view = _shown(veil, tenants, dataset).as_json()
    assert view["credentials"] == ["password"] and PG_PASSWORD not in repr(view)
    secret = PG_PASSWORD.encode()
    database = Path(str(veil.settings.db_url).removeprefix("sqlite:///"))
    for path in database.parent.glob(database.name + "*"):  # the file, its WAL and shm
        assert secret not in path.read_bytes(), path
    with veil.db.read() as s:
        events = s.scalars(select(AuditEvent)).all()
        assert not any(PG_PASSWORD in repr(e.details) for e in events)
        stored = s.scalars(select(SourceDeclaration)).one()
        assert secret not in base64.b64decode(stored.secrets_ciphertext or "")  # not just encoded
    assert PG_PASSWORD not in caplog.text

    # A password in the URL is refused, and the refusal does not repeat it.
    with pytest.raises(InvalidRequest) as refused:
        declare_source(
            veil,
            tenants.acme,
            dataset,
            kind="sql",
            config={
                "url": url.replace("veil@", f"veil:{PG_PASSWORD}@"),
                "table": "readings",
                "incremental": "id",
            },
        )
    assert PG_PASSWORD not in repr(refused.value.problems)  # type: ignore[attr-defined]


def test_a_server_killed_mid_run_leaves_no_version_and_the_retry_works(
    veil: Veil, tenants: Tenants, maria: MariaDbServer
) -> None:
    with maria.mes() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE seq (n INT PRIMARY KEY, station VARCHAR(20), temp DOUBLE, "
            "cycle DOUBLE, remark VARCHAR(5))"
        )
        cur.executemany("INSERT INTO seq VALUES (%s, 'press-1', 70, 30, NULL)", [(1,), (2,)])
    dataset = line_dataset(veil, tenants.acme, "killed")
    config = {
        "url": f"mariadb://mes@127.0.0.1:{maria.port}/mes",
        "table": "seq",
        "incremental": "n",
    }
    declare_source(
        veil,
        tenants.acme,
        dataset,
        kind="sql",
        config=config,
        interval_s=1,
        credentials={"password": maria.PASSWORD},
        mapping=VENDOR_B,
    )
    scheduler = SourceScheduler(veil)
    assert scheduler.run_due() == 1  # kept open between runs by the scheduler
    assert _versions(veil, dataset) == [1]
    with maria.mes() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO seq VALUES (%s, 'press-2', 71, 31, NULL)", [(3,), (4,)])

    maria.kill()
    _due_now(veil)
    assert scheduler.run_due() == 1
    state = _shown(veil, tenants, dataset).as_json()["state"]
    assert state["failures"] == 1 and state["cursor"] == "2" and state["last_error"]
    assert _versions(veil, dataset) == [1]
    _due_now(veil)
    scheduler.run_due()  # still down: the wait doubles
    with veil.db.read() as s:
        st = s.get(SourceState, _shown(veil, tenants, dataset).declaration.id)
        assert st is not None and st.failures == 2 and st.last_run_at is not None
        assert st.next_attempt_at - st.last_run_at == timedelta(seconds=2)

    maria.start()
    _due_now(veil)
    assert scheduler.run_due() == 1
    state = _shown(veil, tenants, dataset).as_json()["state"]
    assert (state["failures"], state["cursor"], state["last_error"]) == (0, "4", None)
    assert _versions(veil, dataset) == [1, 2]
    assert _frame(veil, tenants, dataset).height == 4
    scheduler.stop()


class _Killed(BaseException):
    """The process dying between the object's write and its commit."""


def test_a_crash_between_read_and_store_keeps_the_old_version_and_cursor(
    veil: Veil, tenants: Tenants, source_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _pg_mes(source_postgres)
    _pg_insert(url, [("press-1", 100, 30_000)])
    dataset = _declare_pg(veil, tenants, url)
    assert runs.run_now(veil, tenants.acme, dataset).version == 1
    _pg_insert(url, [("press-2", 110, 31_000), ("mill-1", 120, 32_000)])

    def die(*args: object) -> None:
        raise _Killed

    with monkeypatch.context() as m:  # a dead process runs no more code: nor its clean-up
        m.setattr(runs, "_commit", die)
        m.setattr(runs, "_release", lambda *args: None)
        with pytest.raises(_Killed):
            runs.run_now(veil, tenants.acme, dataset)
    assert _versions(veil, dataset) == [1]
    assert _shown(veil, tenants, dataset).as_json()["state"]["cursor"] == "1"
    # Its lease is held until it runs out, as a dead process's would be.
    with pytest.raises(Conflict):
        runs.run_now(veil, tenants.acme, dataset)
    with veil.db.transaction() as s:
        s.execute(update(SourceState).values(claimed_until=veil.clock() - timedelta(seconds=1)))
    retried = runs.run_now(veil, tenants.acme, dataset)
    assert (retried.rows, retried.version) == (2, 2)
    assert _frame(veil, tenants, dataset)["machine"].to_list() == ["press-1", "press-2", "mill-1"]


def test_other_enterprises_sources_are_invisible(
    veil: Veil, tenants: Tenants, source_postgres: PostgresServer
) -> None:
    url = _pg_mes(source_postgres)
    dataset = _declare_pg(veil, tenants, url)
    assert [v.declaration.dataset_id for v in list_sources(veil, tenants.acme)] == [dataset]
    assert list_sources(veil, tenants.globex) == []
    for attempt in (
        lambda: show_source(veil, tenants.globex, dataset),
        lambda: set_mapping(veil, tenants.globex, dataset, VENDOR_A),
        lambda: runs.run_now(veil, tenants.globex, dataset),
        lambda: declare_source(
            veil,
            tenants.globex,
            dataset,
            kind="sql",
            config={"url": url, "table": "readings", "incremental": "id"},
        ),
    ):
        with pytest.raises(NotFound):
            attempt()
    # Nothing of acme's changed.
    view = _shown(veil, tenants, dataset)
    assert view.mapping is not None and view.mapping.version == 1
    assert view.declaration.enterprise_id == tenants.acme.id


def test_mapping_versions_are_audited_and_checked_against_the_declaration(
    veil: Veil, tenants: Tenants, source_postgres: PostgresServer
) -> None:
    dataset = _declare_pg(veil, tenants, _pg_mes(source_postgres))
    view = set_mapping(veil, tenants.acme, dataset, VENDOR_B)
    assert view.mapping is not None and view.mapping.version == 2
    with pytest.raises(InvalidRequest) as wrong:
        set_mapping(
            veil,
            tenants.acme,
            dataset,
            {"columns": {"machine": {"field": "m", "scale": 2}, "bogus": {"field": "x"}}},
        )
    problems = [p["message"] for p in wrong.value.problems]  # type: ignore[attr-defined]
    assert "bogus: not a declared column" in problems
    assert "machine: scale: only for numeric columns" in problems
    assert any(p.startswith("temperature_c: not mapped") for p in problems)
    with veil.db.read() as s:
        changes = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "source.mapping_changed")
        ).all()
    assert [e.details["version"] for e in changes] == [1, 2]
    assert _shown(veil, tenants, dataset).mapping.version == 2  # type: ignore[union-attr]


def _shown(veil: Veil, tenants: Tenants, dataset: str) -> SourceView:
    view = show_source(veil, tenants.acme, dataset)
    assert view is not None
    return view


def _due_now(veil: Veil) -> None:
    with veil.db.transaction() as s:
        s.execute(update(SourceState).values(next_attempt_at=veil.clock()))


def test_a_run_whose_lease_was_taken_over_stores_nothing(
    veil: Veil, tenants: Tenants, source_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that outlived its lease (another process took the source meanwhile) must not
    store: the rows would be stored twice."""
    url = _pg_mes(source_postgres)
    _pg_insert(url, [("press-1", 100, 30_000)])
    dataset = _declare_pg(veil, tenants, url)
    snapshot = runs._snapshot

    def slow(*args: Any) -> Any:
        stored = snapshot(*args)
        with veil.db.transaction() as s:  # meanwhile, another scheduler's claim
            s.execute(update(SourceState).values(claimed_by="sched_other"))
        return stored

    monkeypatch.setattr(runs, "_snapshot", slow)
    outcome = runs.run_now(veil, tenants.acme, dataset)
    assert outcome.version is None and outcome.error is not None and "lease" in outcome.error
    assert _versions(veil, dataset) == []
    assert _shown(veil, tenants, dataset).state.cursor is None
    assert not list((veil.settings.objects_dir / tenants.acme.id / dataset).glob("*.veil"))
