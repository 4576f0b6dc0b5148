"""Chinese data end to end through the real API: Chinese column headers in a GB18030 CSV,
a DP query and a tier-2 table on Chinese columns released, mock data, the catalog, the
national classification and the catalogue of important data (JSON and XLSX)."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from openpyxl import load_workbook  # type: ignore[import-untyped]

from i18n.catalog import use
from sandbox.client import ApiError, VeilClient
from sandbox.data import important_data
from sandbox.runtime.veil import Veil
from sandbox.service import bootstrap_operator
from tests.sandbox.conftest import PURPOSE

pytestmark = pytest.mark.integration

SHIFTS = ["早班", "中班", "夜班"]
COLUMNS = [
    {"name": "班次", "type": "string", "class": "public", "categories": SHIFTS},
    {"name": "设备编号", "type": "string", "class": "internal"},
    {"name": "主轴温度", "type": "float", "class": "internal", "lower": 0, "upper": 150},
    {"name": "良率", "type": "float", "class": "confidential", "lower": 0, "upper": 1},
    {"name": "配方参数", "type": "float", "class": "secret", "lower": 0, "upper": 10},
]
GRANTED = ["班次", "设备编号", "主轴温度", "良率"]


def chinese_csv(rows: int, seed: int) -> str:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    lines = ["班次,设备编号,主轴温度,良率,配方参数"]
    for _ in range(rows):
        lines.append(
            f"{rng.choice(SHIFTS)},机台-{rng.randint(1, 4):02d},{rng.uniform(40, 90):.2f},"
            f"{rng.uniform(0.8, 1):.3f},{rng.uniform(1, 9):.2f}"
        )
    return "\n".join(lines) + "\n"


@pytest.fixture
def chinese(veil: Veil, api: str) -> tuple[VeilClient, VeilClient, VeilClient, str, str]:
    token = bootstrap_operator(veil)
    assert token is not None
    operator = VeilClient(api, token)
    acme = operator.create_enterprise("精密机械有限公司", "precision")
    provider = operator.create_provider("数智服务商")
    enterprise = VeilClient(api, operator.issue_token(acme["id"]))
    analyst = VeilClient(api, operator.issue_token(provider["id"]))
    ds = enterprise.create_dataset("主轴日志", COLUMNS)
    # As a Chinese Excel or MES export writes it: GB18030, detected without being named.
    version = enterprise.upload(ds["id"], chinese_csv(600, seed=3).encode("gb18030"))
    assert version["row_count"] == 600
    soon = datetime.now(UTC) + timedelta(days=1)
    enterprise.create_grant(
        provider["id"], [ds["id"]], GRANTED, [0, 1, 2, 3, 5], [PURPOSE], soon, 5
    )
    return operator, enterprise, analyst, ds["id"], acme["id"]


def test_chinese_columns_are_declared_uploaded_queried_and_released(chinese: tuple) -> None:  # type: ignore[type-arg]
    operator, enterprise, analyst, dataset_id, _ = chinese
    assert [c["name"] for c in enterprise.get_dataset(dataset_id)["columns"]][:3] == [
        "班次",
        "设备编号",
        "主轴温度",
    ]
    (entry,) = analyst.catalog()
    assert "主轴温度" in json.dumps(entry, ensure_ascii=False)
    mock = pl.read_csv(io.BytesIO(analyst.mock(dataset_id, rows=20)))
    assert mock.columns[:3] == ["班次", "设备编号", "主轴温度"]

    aggregates = [{"kind": "count"}, {"kind": "mean", "column": "主轴温度"}]
    job = analyst.submit_job(dataset_id, PURPOSE, 1.0, aggregates, group_by="班次")
    final = analyst.wait_for_job(job["id"], timeout=60)
    assert final["status"] == "released", (final["error"], final["reasons"])
    result = json.dumps(analyst.get_result(job["id"]), ensure_ascii=False)
    assert "主轴温度" in result and "夜班" in result

    table = analyst.submit_table(dataset_id, PURPOSE, [{"kind": "count"}], ["班次"])
    assert analyst.wait_for_job(table["id"], timeout=60)["status"] == "released"
    cells = analyst.get_result(table["id"])["cells"]
    assert {c["key"]["班次"] for c in cells} == set(SHIFTS)

    # A column the dataset does not have is refused by name, Chinese or not.
    with pytest.raises(ApiError):
        analyst.submit_job(dataset_id, PURPOSE, 0.1, [{"kind": "mean", "column": "配方参数"}])
    actions = [e["action"] for e in operator.audit_events(limit=50)]
    assert "dataset.uploaded" in actions
    # The usage receipt names the dataset and its jobs as they are, Chinese included.
    receipt = json.dumps(enterprise.usage_receipt(final["provider_id"]), ensure_ascii=False)
    assert "主轴日志" in receipt


def test_a_name_typed_decomposed_is_the_same_column(veil: Veil, api: str) -> None:
    token = bootstrap_operator(veil)
    assert token is not None
    operator = VeilClient(api, token)
    ent = operator.create_enterprise("Café SA", "cafe")
    client = VeilClient(api, operator.issue_token(ent["id"]))
    decomposed = "cafe\u0301_temp"  # e + combining acute: NFC makes it "café_temp"
    ds = client.create_dataset(
        "cafe",
        [{"name": decomposed, "type": "integer", "class": "internal", "lower": 0, "upper": 9}],
    )
    assert ds["columns"][0]["name"] == "caf\u00e9_temp"
    # The header as another tool wrote it (composed) matches the declaration.
    assert client.upload(ds["id"], "caf\u00e9_temp\n1\n2\n".encode())["row_count"] == 2
    with pytest.raises(ApiError) as refused:
        client.create_dataset(
            "bidi",
            [{"name": "a\u202eb", "type": "integer", "class": "internal", "lower": 0, "upper": 1}],
        )
    assert refused.value.status == 422 and "invisible" in str(refused.value.detail)


def test_classification_and_the_catalogue_of_important_data(chinese: tuple) -> None:  # type: ignore[type-arg]
    operator, enterprise, analyst, dataset_id, enterprise_id = chinese
    found = {c["name"]: c for c in enterprise.classification(dataset_id)["columns"]}
    assert found["配方参数"]["level"] == "important"  # secret: important until changed
    assert found["良率"]["level"] == "general-3" and found["班次"]["level"] == "general-1"
    assert all(c["domain"] is None for c in found.values())

    enterprise.classify(
        dataset_id,
        {
            "配方参数": {"domain": "production"},
            "良率": {"domain": "management", "level": "important"},
            "班次": {"domain": "production"},
        },
    )
    with pytest.raises(ApiError) as refused:  # important data must be confidential or secret
        enterprise.classify(dataset_id, {"主轴温度": {"level": "important"}})
    assert refused.value.status == 422

    # A provider whose grant names the dataset sees it, as it sees the schema (tier 0).
    seen = {c["name"]: c["domain"] for c in analyst.classification(dataset_id)["columns"]}
    assert seen["配方参数"] == "production" and len(seen) == len(COLUMNS)
    with pytest.raises(ApiError):
        analyst.classify(dataset_id, {"良率": {"level": "general-1"}})

    catalogue = json.loads(enterprise.important_data())
    rows = {e["column"]: e for e in catalogue["entries"]}
    assert set(rows) == {"配方参数", "良率"}
    assert rows["配方参数"]["domain"] == "production" and rows["良率"]["level"] == "important"
    assert rows["良率"]["rows_rounded"] == 600 and rows["良率"]["dataset"] == "主轴日志"
    assert catalogue["enterprise"]["id"] == enterprise_id
    # Only names, classes, domains, levels, counts and dates: no value of the data (dates
    # and ids aside, whose digits can happen to contain a value's).
    values = {
        field for line in chinese_csv(600, 3).splitlines()[1:] for field in line.split(",")[1:]
    }
    stamps = ("generated_at", "declared_at", "classified_at", "dataset_id", "id")
    shown = [
        json.dumps({k: v for k, v in part.items() if k not in stamps}, ensure_ascii=False)
        for part in (catalogue["enterprise"], *catalogue["entries"])
    ]
    assert not any(value in text for value in values for text in shown)
    book = load_workbook(io.BytesIO(enterprise.important_data(fmt="xlsx")))
    sheet = book.worksheets[0]
    cells = [[c.value for c in row] for row in sheet.iter_rows()]
    assert len(cells) == 3 and {r[2] for r in cells[1:]} == {"配方参数", "良率"}
    # The operator may read it by naming the enterprise; a provider may not.
    assert json.loads(operator.important_data(enterprise_id))["entries"] == catalogue["entries"]
    with pytest.raises(ApiError):
        analyst.important_data()
    actions = [e["action"] for e in operator.audit_events(limit=50)]
    assert "dataset.classified" in actions and "important_data.exported" in actions


def _veil(url: str, client: VeilClient, *args: str) -> subprocess.CompletedProcess[str]:
    token = client._http.headers["Authorization"].removeprefix("Bearer ")
    clean = {k: v for k, v in os.environ.items() if k not in ("VEIL_TOKEN", "VEIL_URL")}
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "VEIL_URL": url, "VEIL_TOKEN": token},
    )


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_the_cli_uploads_gbk_classifies_and_exports(
    chinese: tuple, api: str, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    _, enterprise, _, dataset_id, _ = chinese
    gbk = tmp_path / "主轴日志.csv"
    gbk.write_bytes(chinese_csv(50, seed=4).encode("gbk"))
    upload = _veil(
        api, enterprise, "datasets", "upload", dataset_id, str(gbk), "--encoding", "gbk", "--json"
    )
    assert upload.returncode == 0, upload.stderr
    assert json.loads(upload.stdout)["row_count"] == 50
    wrong = _veil(
        api, enterprise, "datasets", "upload", dataset_id, str(gbk), "--encoding", "utf-16"
    )
    assert wrong.returncode == 1 and "utf-16 text" in wrong.stderr and "机台" not in wrong.stderr

    classify = _veil(
        api,
        enterprise,
        "datasets",
        "classify",
        dataset_id,
        "--set",
        "良率=management:important",
        "--json",
    )
    assert classify.returncode == 0, classify.stderr
    levels = {c["name"]: c["level"] for c in json.loads(classify.stdout)["columns"]}
    assert levels["良率"] == "important"
    bad = _veil(api, enterprise, "datasets", "classify", dataset_id, "--set", "良率")
    assert bad.returncode != 0 and "COLUMN=DOMAIN" in bad.stderr

    out = tmp_path / "目录.xlsx"
    export = _veil(
        api, enterprise, "datasets", "important-data", "--format", "xlsx", "-o", str(out)
    )
    assert export.returncode == 0, export.stderr
    sheet = load_workbook(out).worksheets[0]
    assert {row[2].value for row in sheet.iter_rows(min_row=2)} == {"配方参数", "良率"}
    # The headings follow the reader's language.
    with use("zh-CN"):
        book = load_workbook(
            io.BytesIO(important_data.to_xlsx(json.loads(enterprise.important_data())))
        )
    assert [c.value for c in book.worksheets[0][1]][:3] == ["数据集 ID", "数据集", "列"]


MEAN_BY_SHIFT = """import syft as sy


@sy.syft_function_single_use(data=asset)
def mean_by_shift(data):
    return data.groupby("班次")["主轴温度"].mean()
"""


@pytest.mark.slow  # PySyft in two sandboxes, ~30 s (make test-slow); tier 5 is tested in make test
def test_reviewed_code_reads_chinese_columns(chinese: tuple) -> None:  # type: ignore[type-arg]
    _, enterprise, analyst, dataset_id, _ = chinese
    code = analyst.submit_code(dataset_id, PURPOSE, MEAN_BY_SHIFT)
    assert code["columns"] == sorted(["主轴温度", "班次"])
    enterprise.approve_code(code["id"], "均值可以")
    job = analyst.submit_code_job(dataset_id, PURPOSE, code["id"])
    final = analyst.wait_for_job(str(job["id"]), timeout=240)
    assert final["status"] == "released", (final["error"], final.get("output_check"))
    output = analyst.get_result(str(job["id"]))["output"]
    assert set(output["index"]) <= set(SHIFTS) and output["index"]
    assert all(40 <= v <= 90 for v in output["values"])
