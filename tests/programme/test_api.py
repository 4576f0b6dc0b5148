"""The bureau through the API and the CLI, on a real server: the operator creates the
bureau and sets enterprises' categories; the bureau reads every table as JSON, CSV and
XLSX, each figure over fewer than five enterprises suppressed (docs/programme.md)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from keys import LocalKeyServer
from policies.audit import AuditEvent
from policies.grants import BudgetDebit, Grant
from policies.principals import Role
from sandbox import cli
from sandbox.cli import language
from sandbox.client import ApiError, VeilClient
from sandbox.programme.service import load_facts
from sandbox.programme.tables import BREAKDOWNS, TableName
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from sandbox.store.kpi_models import ContractStatus, KpiContract, KpiVerdict, VerdictStatus
from sandbox.store.models import Job
from sandbox.store.source_models import LivenessDay
from tests.sandbox.conftest import settings_for

pytestmark = pytest.mark.integration

COLUMNS = [
    {"name": "machine", "type": "string", "class": "public", "categories": ["a", "b"]},
    {"name": "temperature_c", "type": "float", "class": "internal", "lower": 0, "upper": 99},
]


@dataclass
class Programme:
    veil: Veil
    url: str
    operator: VeilClient
    bureau: VeilClient
    bureau_token: str
    #: Six in machinery (north), one alone in optics (island).
    enterprises: dict[str, str]  # id -> industry


@pytest.fixture(scope="module")
def programme(
    tmp_path_factory: pytest.TempPathFactory, key_server: LocalKeyServer
) -> Iterator[Programme]:
    settings = settings_for(tmp_path_factory.mktemp("programme"), key_server)
    with open_veil(settings, worker=False) as veil, ApiThread(veil.settings, veil) as url:
        token = bootstrap_operator(veil)
        assert token is not None
        operator = VeilClient(url, token)
        enterprises = {}
        for i in range(7):
            industry = "machinery" if i < 6 else "optics"
            made = operator.create_enterprise(
                f"Factory {i}", f"f{i}-{uuid.uuid4().hex[:6]}", industry=industry,
                district="north" if i < 6 else "island", size_band="small",
            )  # fmt: skip
            enterprises[made["id"]] = industry
            with VeilClient(url, operator.issue_token(made["id"])) as owner:
                owner.create_dataset(f"log-{i}", COLUMNS)
        bureau = operator.create_bureau("Industry and Information Technology Bureau")
        bureau_token = operator.issue_token(bureau["id"])
        with VeilClient(url, bureau_token) as client:
            yield Programme(veil, url, operator, client, bureau_token, enterprises)


def test_the_operator_creates_one_bureau(programme: Programme) -> None:
    me = programme.bureau._call("GET", "/v1/me")
    assert me["role"] == Role.BUREAU and me["id"].startswith("bur_")
    with pytest.raises(ApiError) as second:
        programme.operator.create_bureau("Another bureau")
    assert second.value.status == 409 and "bureau already" in str(second.value)


def test_categories_are_set_checked_and_audited(programme: Programme) -> None:
    operator = programme.operator
    lone = next(e for e, industry in programme.enterprises.items() if industry == "optics")
    listed = {e["id"]: e for e in operator.list_enterprises()}
    assert listed[lone]["industry"] == "optics" and listed[lone]["size_band"] == "small"
    for bad in ({"size_band": "huge"}, {"industry": "=HYPERLINK(1)"}, {"district": "a\nb"}):
        with pytest.raises(ApiError) as refused:
            operator.set_categories(lone, **bad)
        assert refused.value.status == 422, bad
    with pytest.raises(ApiError) as unknown:
        operator.set_categories("ent_nobody", industry="x")
    assert unknown.value.status == 404
    changed = operator.set_categories(lone, size_band="medium")
    assert changed["size_band"] == "medium" and changed["industry"] == "optics"  # others kept
    operator.set_categories(lone, size_band="small")
    with programme.veil.db.read() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "enterprise.categorised")
        ).all()
    assert events and events[-1].details["after"] == {"size_band": "small"}


def test_every_table_in_every_breakdown_suppresses_the_lone_enterprise(
    programme: Programme,
) -> None:
    for name in TableName:
        for by in ["total"] if name is TableName.PROVIDERS else BREAKDOWNS:
            table = programme.bureau.programme_table(name.value, by)
            assert table["table"] == name.value and table["by"] == by
            for row in table["rows"]:
                if row.get("category") in ("optics", "island"):
                    assert set(row["suppressed"]) == set(table["columns"]), row
                    assert set(row["values"].values()) == {None}
    participation = programme.bureau.programme_table("participation", "industry")
    machinery = next(r for r in participation["rows"] if r["category"] == "machinery")
    assert 5 <= machinery["values"]["enterprises"] <= 8  # six, perturbed by at most two
    assert participation["protection"]["min_enterprises"] == 5


def test_an_unknown_table_or_breakdown_is_refused_with_what_is_allowed(
    programme: Programme,
) -> None:
    with pytest.raises(ApiError) as table:
        programme.bureau.programme_table("enterprise_list")
    assert table.value.status == 422 and "participation" in str(table.value)
    with pytest.raises(ApiError) as by:
        programme.bureau.programme_table("participation", "enterprise")
    assert by.value.status == 422 and "size_band" in str(by.value)
    with pytest.raises(ApiError):
        programme.bureau.programme_table("providers", "industry")  # providers: total only


def test_csv_and_xlsx_show_the_json_table(programme: Programme) -> None:
    shown = programme.bureau.programme_table("participation", "industry")
    body = programme.bureau.programme_export("participation", "industry", "csv")
    assert body.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0][:2] == ["Group", "Enterprises enrolled"]
    assert [r[0] for r in rows[1:]] == ["machinery", "optics", "Total"]
    assert rows[2][1:] == ["suppressed"] * 4  # optics: never 0
    assert int(rows[1][1]) == next(
        r["values"]["enterprises"] for r in shown["rows"] if r["category"] == "machinery"
    )
    book = load_workbook(io.BytesIO(programme.bureau.programme_export("jobs", "total", "xlsx")))
    sheet = book.worksheets[0]
    cells = [[c.value for c in row] for row in sheet.iter_rows()]
    assert cells[0][:3] == ["Month", "Group", "Jobs submitted"]
    assert all(r[1] == "Total" for r in cells[1:])
    assert book.worksheets[1]["A2"].value == "Protection"


def test_exports_speak_chinese(programme: Programme) -> None:
    with httpx.Client(base_url=programme.url) as http:
        answer = http.get(
            "/v1/programme/coverage",
            params={"by": "industry", "format": "csv"},
            headers={
                "Authorization": f"Bearer {programme.bureau_token}",
                "Accept-Language": "zh-CN",
            },
        )
    text = answer.content.decode("utf-8-sig")
    assert answer.status_code == 200 and text.startswith("分组,有数据集的企业")
    assert "已抑制" in text and "合计" in text


def test_each_read_is_audited(programme: Programme) -> None:
    programme.bureau.programme_table("budget", "district")
    with programme.veil.db.read() as session:
        event = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "programme.table_read")
            .order_by(AuditEvent.seq.desc())
        ).first()
    assert event is not None and event.resource == "programme:budget"
    assert event.details["by"] == "district"


def test_budget_counts_each_jobs_net_epsilon_in_the_month_it_was_charged(
    programme: Programme,
) -> None:
    """A refund (written later, negative) nets out its debit in the debit's month."""
    veil = programme.veil
    enterprise = next(iter(programme.enterprises))
    provider = programme.operator.create_provider(f"Refunds {uuid.uuid4().hex[:6]}")
    march = datetime(2026, 3, 10, tzinfo=UTC)
    with veil.db.transaction() as session:
        grant = Grant(
            id=f"grant_{uuid.uuid4().hex[:8]}", enterprise_id=enterprise,
            provider_id=provider["id"], dataset_ids=[], columns=[], tiers=[3],
            purposes=["p"], valid_from=march, valid_until=march + timedelta(days=1),
            epsilon_budget=10_000_000, delta_budget=0, created_at=march,
        )  # fmt: skip
        session.add(grant)
        session.flush()
        for job, units, at, refund in [
            ("job_a", 500_000, march, None),
            ("job_b", 300_000, march, None),
            ("job_b", -300_000, march + timedelta(days=30), "debit_b"),
        ]:
            session.add(
                BudgetDebit(
                    id=f"debit_{uuid.uuid4().hex[:8]}" if refund is None else f"r_{job}",
                    grant_id=grant.id, job_id=job, epsilon=units, delta=0,
                    created_at=at, refund_of=refund,
                )
            )  # fmt: skip
    with veil.db.read() as session:
        facts = load_facts(session, veil.clock())
    assert facts.spend[(enterprise, "2026-03")] == pytest.approx(0.5)
    assert (enterprise, "2026-04") not in facts.spend
    assert facts.months[0] == "2026-03" and facts.months[-1] == veil.clock().strftime("%Y-%m")


def test_the_cli_creates_categorises_shows_and_exports(
    programme: Programme, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--url", programme.url, "--json"]
    operator_token = programme.operator._http.headers["authorization"].removeprefix("Bearer ")
    lone = next(e for e, industry in programme.enterprises.items() if industry == "optics")
    status = cli.run(
        ["enterprises", "categorise", lone, "--district", "island", "--token", operator_token,
         *common], True,
    )  # fmt: skip
    assert status == 0 and json.loads(capsys.readouterr().out)["district"] == "island"
    assert cli.run(["bureau", "create", "Second", "--token", operator_token, *common], True) == 1
    assert "bureau already" in capsys.readouterr().err
    token = ["--token", programme.bureau_token]
    assert (
        cli.run(["programme", "show", "participation", "--by", "district", *token, *common], True)
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert [r["category"] for r in shown["rows"]] == ["island", "north", None]
    # For people: suppressed cells say so, in the reader's language.
    args = ["programme", "show", "participation", "--by", "industry", "--lang", "zh-CN"]
    try:
        assert cli.run([*args, *token, "--url", programme.url], False) == 0
    finally:
        language.set_language("en")  # the next test reads English
    table = capsys.readouterr().out
    assert "optics" in table and "已抑制" in table and "合计" in table
    out = tmp_path / "coverage.xlsx"
    args = ["programme", "export", "coverage", "--format", "xlsx", "-o", str(out)]
    assert cli.run([*args, *token, *common], True) == 0
    assert load_workbook(out).worksheets[0]["A1"].value == "Group"


def test_the_verdicts_table_counts_released_verdicts_by_category(
    programme: Programme, capsys: pytest.CaptureFixture[str]
) -> None:
    """Signed verdicts, counted for the enterprise whose KPI they judge in the month of their
    release: five machinery enterprises met and one did not, the optics enterprise's was
    inconclusive.  One enterprise's outcome (the one not met, the optics one) is suppressed
    in every breakdown; a pending verdict whose job ended is settled before counting."""
    veil = programme.veil
    provider = programme.operator.create_provider(f"Verdicts {uuid.uuid4().hex[:6]}")
    may = datetime(2026, 5, 15, tzinfo=UTC)
    machinery = [e for e, industry in programme.enterprises.items() if industry == "machinery"]
    (optics,) = [e for e, industry in programme.enterprises.items() if industry == "optics"]
    outcomes = {e: "met" for e in machinery[:5]} | {machinery[5]: "not_met", optics: "inconclusive"}
    tag = uuid.uuid4().hex[:6]
    with veil.db.transaction() as session:
        for enterprise, outcome in outcomes.items():
            contract = KpiContract(
                id=f"kpi_{tag}{enterprise[-6:]}", enterprise_id=enterprise,
                provider_id=provider["id"], dataset_id="ds_x", terms={}, terms_sha256="0" * 64,
                status=ContractStatus.ACTIVE, proposed_by=enterprise,
            )  # fmt: skip
            session.add(contract)
            session.flush()
            session.add(
                KpiVerdict(
                    id=f"vrd_{tag}{enterprise[-6:]}", contract_id=contract.id, job_id="job_x",
                    requested_by=enterprise, status=VerdictStatus.RELEASED, verdict=outcome,
                    document={}, created_at=may, decided_at=may,
                )
            )  # fmt: skip
        # Its job failed: settled (failed, counted nowhere) when the bureau reads the table.
        session.add(
            Job(
                id=f"job_{tag}", provider_id=provider["id"], enterprise_id=machinery[0],
                dataset_id="ds_x", purpose="p", tier=3, query={}, epsilon=0, delta=0,
                status="failed", error="stopped",
            )
        )  # fmt: skip
        session.add(
            KpiVerdict(
                id=f"vrd_{tag}pending", contract_id=f"kpi_{tag}{machinery[0][-6:]}",
                job_id=f"job_{tag}", requested_by=machinery[0], status=VerdictStatus.PENDING,
            )
        )  # fmt: skip
    with veil.db.read() as session:
        facts = load_facts(session, veil.clock())
    assert sorted(v.verdict for v in facts.verdicts if v.month == "2026-05") == sorted(
        outcomes.values()
    )
    for by in BREAKDOWNS:
        table = programme.bureau.programme_table("verdicts", by)
        assert table["columns"] == [
            "enterprises_with_verdicts", "verdicts", "met", "not_met", "inconclusive"
        ]  # fmt: skip
        for row in table["rows"]:
            assert {"not_met", "inconclusive"} <= set(row["suppressed"]), (by, row)
            if row["category"] in ("optics", "island") or row["month"] != "2026-05":
                assert set(row["suppressed"]) == set(table["columns"]), (by, row)
        may_rows = [r for r in table["rows"] if r["month"] == "2026-05"]
        released = [r for r in may_rows if r["values"]["met"] is not None]
        assert released, by  # five enterprises met: the total, machinery, north, small
        assert all(3 <= r["values"]["met"] <= 7 for r in released)  # five, moved by < 2
    with veil.db.read() as session:
        settled = session.get(KpiVerdict, f"vrd_{tag}pending")
        assert settled is not None and settled.status == VerdictStatus.FAILED
    common = ["--url", programme.url, "--json", "--token", programme.bureau_token]
    assert cli.run(["programme", "show", "verdicts", "--by", "industry", *common], True) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["table"] == "verdicts" and shown["protection"]["min_enterprises"] == 5
    body = programme.bureau.programme_export("verdicts", "total", "csv")
    heading = next(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert heading == [
        "Month", "Group", "Enterprises with KPI verdicts", "KPI verdicts released", "Met",
        "Not met", "Inconclusive",
    ]  # fmt: skip


def test_the_equipment_table_shows_the_online_rate_of_released_sums(
    programme: Programme,
) -> None:
    """Six machinery enterprises and the optics one report their equipment (as their nodes
    would): the machinery row and the total show the rate as released online over released
    configured; the optics enterprise, alone in its industry, is suppressed; CSV in Chinese."""
    veil = programme.veil
    may = ["2026-05-20", "2026-05-21"]
    with veil.db.transaction() as session:
        for i, enterprise in enumerate(sorted(programme.enterprises)):
            for day in may:
                session.add(
                    LivenessDay(
                        enterprise_id=enterprise, day=day, configured=10 + i, online=6 + i % 3,
                        node_id="node_x",
                    )
                )  # fmt: skip
    table = programme.bureau.programme_table("equipment", "industry")
    assert table["columns"] == [
        "enterprises_reporting", "devices_configured", "devices_online", "online_rate",
    ]  # fmt: skip
    rows = [r for r in table["rows"] if r["month"] == "2026-05"]
    for row in rows:
        values = row["values"]
        if row["category"] == "optics":
            assert set(row["suppressed"]) == set(table["columns"])
            continue
        online, configured = values["devices_online"], values["devices_configured"]
        assert values["online_rate"] == round(min(1.0, online / configured), 3)
    assert "online_rate" in table["protection"]
    with httpx.Client(base_url=programme.url) as http:
        answer = http.get(
            "/v1/programme/equipment",
            params={"by": "industry", "format": "csv"},
            headers={
                "Authorization": f"Bearer {programme.bureau_token}",
                "Accept-Language": "zh-CN",
            },
        )
    text = answer.content.decode("utf-8-sig")
    assert answer.status_code == 200
    header = text.split("\r\n")[0].split(",")
    assert header[:3] == ["月份", "分组", "上报设备的企业数"] and header[-1] == "设备联网率"
    assert "已抑制" in text
