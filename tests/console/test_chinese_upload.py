"""The console takes a Chinese MES export as it comes: GB18030, Chinese headers; it suggests
classes from the names (a recipe column secret), asks for bounds, and stores the dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.console.conftest import log_in, token_of
from tests.sandbox.conftest import World

pytestmark = pytest.mark.integration

HEADER = "班次,机台,主轴温度,配方参数,单价"
ROWS = [f"{s},机台-0{m},{60 + m}.5,{m}.25,{10 + m}.0" for s in ("早班", "夜班") for m in (1, 2, 3)]


def test_a_gb18030_file_with_chinese_headers_is_classified_and_stored(
    page: Page, world: World, tmp_path: Path
) -> None:
    log_in(page, world.url, token_of(world.acme))
    csv = tmp_path / "主轴日志.csv"
    csv.write_bytes(("\r\n".join([HEADER, *ROWS * 5]) + "\r\n").encode("gb18030"))
    page.goto(f"{world.url}/console/datasets")
    form = page.get_by_role("form", name="New dataset")
    form.get_by_label("Name", exact=True).fill("主轴日志")
    form.get_by_label("CSV or Parquet file").set_input_files(str(csv))
    expect(form.get_by_label("Class of 配方参数")).to_have_value("secret")
    expect(form.get_by_label("Class of 单价")).to_have_value("confidential")
    expect(form.get_by_label("Class of 班次")).to_have_value("public")
    expect(form.get_by_label("Lowest value of 主轴温度")).to_have_value("")
    expect(form.get_by_label("Categories of 班次")).to_have_value("")
    expect(form.get_by_text("would reveal values of your data").first).to_be_visible()
    form.get_by_label("Categories of 班次").fill("早班, 中班, 夜班")
    form.get_by_label("Class of 机台").select_option("internal")
    for name, low, high in (("主轴温度", 0, 150), ("配方参数", 0, 10), ("单价", 0, 100)):
        form.get_by_label(f"Lowest value of {name}").fill(str(low))
        form.get_by_label(f"Highest value of {name}").fill(str(high))
    form.get_by_label("Data domain of 配方参数").select_option("production")
    form.get_by_role("button", name="Upload dataset").click()
    expect(page.locator("p.notice")).to_contain_text("first version stored")
    created = next(d for d in world.acme.list_datasets() if d["name"] == "主轴日志")
    assert [c["name"] for c in created["columns"]] == HEADER.split(",")
    assert created["latest_version"]["row_count"] == 30
    national = {c["name"]: c for c in world.acme.classification(created["id"])["columns"]}
    assert national["配方参数"]["domain"] == "production"
    assert national["配方参数"]["level"] == "important"
