"""Tier 5 reviewed code: submission checks, columns, pinning, and runs through real PySyft."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]
import polars as pl
import pytest

from analytics import syft_dp
from analytics.output_checks import check_output
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from analytics.syft_code import (
    CodeError,
    LocalDatasite,
    SyftCode,
    columns_named,
    columns_read,
    parse_submission,
    run_on_mock,
    run_syft_function,
    source_sha256,
    to_pandas,
    verify_pinned,
)

HEADER = "import syft as sy\n\n@sy.syft_function_single_use(data=asset)\ndef analyse(data):\n"


def function(*body: str) -> str:
    """A submission whose function body is ``body`` (one line each)."""
    return HEADER + "".join(f"    {line}\n" for line in body)


GROUPED = function('return data.groupby("machine")["temperature"].sum()')

# ---------------------------------------------------------------- submissions


def test_a_submission_is_parsed_and_pinned_by_its_sha256() -> None:
    code = parse_submission(GROUPED)
    assert code == SyftCode(GROUPED, "analyse", "data", source_sha256(GROUPED))
    assert len(code.sha256) == 64


def test_the_syft_function_form_and_inner_imports_are_accepted() -> None:
    source = (
        '"""Mean temperature per machine."""\n'
        "import syft\n\n"
        "@syft.syft_function(\n"
        "    input_policy=syft.ExactMatch(frame=asset),\n"
        "    output_policy=syft.SingleExecutionExactOutput(),\n"
        ")\n"
        "def per_machine(frame):\n"
        "    import numpy as np\n"
        "    from statistics import fmean\n"
        "    import veil_dp\n"
        '    return float(np.mean(frame["temperature"]))\n'
    )
    code = parse_submission(source)
    assert (code.function_name, code.parameter) == ("per_machine", "frame")


REFUSED = {
    "syntax": ("def analyse(:\n", "not valid Python"),
    "statement": ("import syft as sy\nx = 1\n" + GROUPED.split("\n", 1)[1], "module level"),
    "two functions": (GROUPED + "\ndef other(data):\n    return 1\n", "exactly one function"),
    "module import": ("import pandas as pd\n" + GROUPED, "inside the function"),
    "from syft": ("from syft import syft_function\n" + GROUPED, "module level"),
    "no syft import": (GROUPED.split("\n", 1)[1], "import syft as sy"),
    "no decorator": ("import syft as sy\ndef analyse(data):\n    return 1\n", "decorator"),
    "other decorator": (GROUPED.replace("sy.syft_function_single_use", "sy.other"), "decorator"),
    "keyword mismatch": (GROUPED.replace("(data=asset)", "(frame=asset)"), "parameter's name"),
    "not the asset": (GROUPED.replace("data=asset", "data=(lambda: asset)()"), "decorator"),
    "custom policy": (
        GROUPED.replace(
            "sy.syft_function_single_use(data=asset)",
            "sy.syft_function(input_policy=sy.ExactMatch(data=asset), output_policy=Mine())",
        ),
        "SingleExecutionExactOutput",
    ),
    "two parameters": (GROUPED.replace("(data):", "(data, other):"), "exactly one parameter"),
    "default": (GROUPED.replace("(data):", "(data=1):"), "exactly one parameter"),
    "annotation": (GROUPED.replace("(data):", "(data: int):"), "annotations"),
    "reserved": (GROUPED.replace("data", "uid"), "PySyft reserves"),
    "dunder import": (function('return __import__("os")'), "'__import__' is not allowed"),
    "exec": (function('exec("x = 1")'), "'exec' is not allowed"),
    "eval": (function('return eval("1")'), "'eval' is not allowed"),
    "open": (function('return open("/etc/passwd").read()'), "'open' is not allowed"),
    "compile": (function('return compile("1", "f", "eval")'), "'compile' is not allowed"),
    "getattr": (function('return getattr(data, "shape")'), "'getattr' is not allowed"),
    "print": (function("print(data)", "return 1"), "'print' is not allowed"),
    "class attribute": (function("return data.__class__"), "not allowed"),
    "subclasses": (function("return ().__class__.__bases__[0].__subclasses__()"), "not allowed"),
    "globals attribute": (function("return analyse.__globals__"), "not allowed"),
    "private attribute": (function("return data._mgr"), "starting with _"),
    "dunder string": (function('return data.query("__import__")'), "__"),
    "os import": (function("import os", "return 1"), "'os' is not allowed"),
    "syft import inside": (function("import syft", "return 1"), "'syft' is not allowed"),
    "numpy load": (function("from numpy import load", "return 1"), "'load'"),
    "read_csv": (function("import pandas as pd", 'return pd.read_csv("x")'), "read_csv"),
    "to_csv": (function('data.to_csv("x")', "return 1"), "to_csv"),
    "global": (function("global x", "return 1"), "global"),
    "class": (function("class A:", "    pass", "return 1"), "classes"),
    "yield": (function("yield 1"), "generators"),
    "top-level lambda": ("import syft as sy\nanalyse = lambda data: data\n", "one function"),
    "star import": (function("from math import *", "return 1"), "import *"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_submissions_outside_the_convention_are_refused_with_a_fix(case: str) -> None:
    source, message = REFUSED[case]
    with pytest.raises(CodeError, match=None) as refused:
        parse_submission(source)
    assert message in str(refused.value)


def test_a_submission_over_max_bytes_is_refused() -> None:
    with pytest.raises(CodeError, match="expected at most 100"):
        parse_submission(GROUPED, max_bytes=100)


def test_columns_read_finds_subscripts_keys_and_plain_attributes() -> None:
    code = parse_submission(
        function(
            'a = data["temperature"] + data[["line", "shift"]].sum(axis=1)',
            'b = data.groupby("machine").agg({"yield_pct": "mean"})',
            'c = data.loc[:, "pressure"]',
            "d = data.speed + data.count()",
            'return data["nope"]',
        )
    )
    available = ["temperature", "line", "shift", "machine", "yield_pct", "pressure", "speed"]
    available += ["count", "unused"]
    expected = ("line", "machine", "pressure", "shift", "speed", "temperature", "yield_pct")
    assert columns_read(code, available) == expected  # "count" is called: a method
    named = columns_named(code)
    assert {"nope", "mean", "temperature", "pressure"} <= set(named)
    assert named == tuple(sorted(named))


def test_verify_pinned_refuses_code_changed_after_approval() -> None:
    approved = parse_submission(GROUPED)
    verify_pinned(approved, approved.sha256)
    changed = parse_submission(GROUPED.replace("sum()", "max()"))
    with pytest.raises(CodeError, match="differs from the approved code"):
        verify_pinned(changed, approved.sha256)
    forged = replace(changed, sha256=approved.sha256)  # a hash copied onto other source
    with pytest.raises(CodeError, match="differs from the approved code"):
        verify_pinned(forged, approved.sha256)


def test_to_pandas_keeps_columns_and_values() -> None:
    frame = pl.DataFrame({"machine": ["a", "b"], "line": [1, 2], "temperature": [1.5, None]})
    converted = to_pandas(frame)
    assert list(converted.columns) == ["machine", "line", "temperature"]
    assert converted["line"].tolist() == [1, 2]
    assert converted["machine"].tolist() == ["a", "b"]


# ---------------------------------------------------------------- runs through PySyft

SCHEMA = DatasetSchema(
    columns=(
        ColumnSpec("machine", ColumnType.STRING, ColumnClass.PUBLIC, categories=("a", "b")),
        ColumnSpec("temperature", ColumnType.FLOAT, ColumnClass.INTERNAL, lower=0, upper=200),
        ColumnSpec("yield_pct", ColumnType.FLOAT, ColumnClass.CONFIDENTIAL, lower=0, upper=100),
    )
)
PRIVATE = pd.DataFrame(
    {
        "machine": ["a"] * 30 + ["b"] * 20,
        "temperature": [70.0 + i for i in range(50)],
        "yield_pct": [90.0 - i * 0.5 for i in range(50)],
    }
)
MOCK = pd.DataFrame({"machine": ["a", "b"] * 5, "temperature": [1.0] * 10, "yield_pct": [5.0] * 10})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDatasite]:
    workdir = tmp_path_factory.mktemp("datasite")
    with LocalDatasite(workdir) as datasite:
        assert datasite.state_dir.is_relative_to(workdir)
        yield datasite


def test_a_function_runs_on_the_private_data_through_pysyft(site: LocalDatasite) -> None:
    result = site.run(parse_submission(GROUPED), PRIVATE, MOCK)
    assert isinstance(result, pd.Series)
    expected = PRIVATE.groupby("machine")["temperature"].sum()
    assert result.to_dict() == expected.to_dict()  # the private data's, not the mock's


def test_the_exact_layout_of_the_approved_source_is_what_runs(site: LocalDatasite) -> None:
    source = (
        "# Reviewed by the enterprise\n"
        "import syft as sy\n\n\n"
        "@sy.syft_function(\n"
        "    input_policy=sy.ExactMatch(frame=asset),  # the one asset\n"
        ")\n"
        "def rows_per_machine(frame):\n"
        '    """Rows per machine."""\n'
        "    import pandas as pd\n\n"
        '    return frame.groupby("machine").size().to_dict()\n'
        "\n# end\n"
    )
    assert site.run(parse_submission(source), PRIVATE, MOCK) == {"a": 30, "b": 20}


def test_an_error_on_the_private_data_names_only_its_type(site: LocalDatasite) -> None:
    leaky = parse_submission(function('raise ValueError(str(data["yield_pct"].iloc[0]))'))
    with pytest.raises(CodeError) as failed:
        site.run(leaky, PRIVATE, MOCK)
    message = str(failed.value)
    assert "analyse raised ValueError" in message
    assert "90.0" not in message
    with pytest.raises(CodeError, match=r"analyse raised ValueError: 5\.0"):
        site.run(leaky, MOCK, MOCK, reveal_errors=True)  # the mock's own message is shown


def test_an_output_pysyft_cannot_return_is_an_error(site: LocalDatasite) -> None:
    code = parse_submission(function("return data.dtypes.to_dict()"))
    with pytest.raises(CodeError, match="could not run analyse or return its output"):
        site.run(code, PRIVATE, MOCK)


def test_code_whose_hash_does_not_match_is_not_run(site: LocalDatasite) -> None:
    forged = replace(parse_submission(GROUPED), sha256="0" * 64)
    with pytest.raises(CodeError, match="does not match"):
        site.run(forged, PRIVATE, MOCK)
    edited = replace(parse_submission(GROUPED), source=GROUPED + "    return 1\n")
    with pytest.raises(CodeError):
        site.run(edited, PRIVATE, MOCK)


def test_dp_helpers_run_inside_pysyft_and_their_output_passes(site: LocalDatasite) -> None:
    budget = syft_dp.DpBudget(1.0, SCHEMA)
    syft_dp.install(SCHEMA, syft_dp.local(budget, pl.from_pandas(PRIVATE)))
    try:
        code = parse_submission(
            function(
                "import veil_dp",
                'mean = veil_dp.mean(data, "yield_pct", epsilon=0.5)',
                'rows = veil_dp.count(data, epsilon=0.5, where={"machine": "b"})',
                'return {"yield_pct": mean, "b": rows}',
            )
        )
        result = site.run(code, PRIVATE, MOCK)
    finally:
        syft_dp.uninstall()
    assert isinstance(result, dict)
    assert budget.spent == 1.0  # PySyft's second run, on the mock, is not charged
    assert budget.released == (result["yield_pct"], result["b"])
    assert abs(result["b"] - 20) < 30  # Laplace scale 2: well within
    given = columns_read(code, SCHEMA.names)
    assert given == ("machine", "yield_pct")
    checked = check_output(
        result,
        pl.from_pandas(PRIVATE),
        SCHEMA,
        given,
        min_count=10,
        dp_required=True,
        dp_values=budget.released,
    )
    assert checked.status == "pass"


def test_a_dp_helper_refusal_explains_itself(site: LocalDatasite) -> None:
    syft_dp.install(SCHEMA, syft_dp.local(syft_dp.DpBudget(1.0, SCHEMA), pl.from_pandas(PRIVATE)))
    try:
        code = parse_submission(
            function(
                "import veil_dp",
                'return veil_dp.count(data[data["machine"] == "a"], epsilon=0.5)',
            )
        )
        with pytest.raises(CodeError, match=r"raised DpError: pass the data frame .* unchanged"):
            site.run(code, PRIVATE, MOCK)
    finally:
        syft_dp.uninstall()


def test_run_syft_function_keeps_pysyft_state_under_workdir(tmp_path: Path) -> None:
    before = tempfile.gettempdir()
    result = run_syft_function(parse_submission(GROUPED), PRIVATE, MOCK, tmp_path)
    assert isinstance(result, pd.Series)
    databases = list((tmp_path / "syft").rglob("*.db"))
    assert databases  # PySyft's SQLite store lives under workdir
    assert tempfile.gettempdir() == before  # and the process's temp folder is restored


def test_run_on_mock_shows_the_output_on_the_mock(tmp_path: Path) -> None:
    result = run_on_mock(parse_submission(GROUPED), MOCK, tmp_path)
    assert isinstance(result, pd.Series)
    assert result.to_dict() == {"a": 5.0, "b": 5.0}
