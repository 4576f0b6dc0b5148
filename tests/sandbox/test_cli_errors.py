"""The ``veil`` entry point fails in one line, once, in the reader's language, never with a
traceback; under ``--json`` the error is a JSON object on standard error with the API's code.

Each test runs the installed ``veil`` script in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from keys.bao import free_port
from sandbox.cli.errors import describe
from sandbox.client import VeilClient
from sandbox.demo.data import DECLARATION
from sandbox.runtime.veil import Veil
from sandbox.service import bootstrap_operator

#: Variables that choose a language; each test sets its own.
LANGUAGE_VARIABLES = ("VEIL_LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def cli(*args: str, lang: str = "C.UTF-8", **env: str) -> subprocess.CompletedProcess[str]:
    """``veil ARGS`` with ``LANG=lang`` and nothing else choosing a language or a server."""
    script = shutil.which("veil", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "sandbox.cli"]
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in (*LANGUAGE_VARIABLES, "VEIL_TOKEN", "VEIL_URL", "VEIL_DEBUG")
    }
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "LANG": lang, "COLUMNS": "200", **env},
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failure printed on standard error (and nothing on standard output)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


def json_error(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.stdout == "", result.stdout
    document = json.loads(result.stderr)
    assert set(document) == {"error"}
    error: dict[str, object] = document["error"]
    return error


@pytest.fixture
def nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_server_not_running_is_one_line_printed_once(nowhere: str) -> None:
    result = cli("datasets", "list", "--token", "t", "--url", nowhere)
    assert result.returncode == 1
    line = one_error_line(result)
    assert line == (
        f"error: cannot reach Veil at {nowhere}: is `veil serve` running? "
        "(start it, or set VEIL_URL)"
    )


@pytest.mark.slow  # CLI processes, ~8 s (make test-slow)
def test_server_not_running_in_chinese(nowhere: str) -> None:
    for how in ({"lang": "zh_CN.UTF-8"}, {"VEIL_LANG": "zh-CN"}):
        result = cli("datasets", "list", "--token", "t", "--url", nowhere, **how)
        assert result.returncode == 1
        line = one_error_line(result)
        assert line.startswith("错误：无法连接") and nowhere in line  # noqa: RUF001
        assert "veil serve" in line
    # --lang wins over the environment, before or after the subcommand.
    english = cli("datasets", "list", "--lang", "en", "--url", nowhere, "--token", "t",
                   lang="zh_CN.UTF-8")  # fmt: skip
    assert one_error_line(english).startswith("error: cannot reach Veil")


def test_server_not_running_under_json_is_a_json_object_on_stderr(nowhere: str) -> None:
    result = cli("jobs", "list", "--token", "t", "--url", nowhere, "--json")
    assert result.returncode == 1
    error = json_error(result)
    assert error["code"] == "unreachable"
    assert nowhere in str(error["message"])


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = cli("datasets", "create", str(missing), "--token", "t")
    assert result.returncode == 1
    assert one_error_line(result) == f"error: no such file: {missing}: check the path"
    upload = cli("datasets", "upload", "ds_x", str(tmp_path / "nope.csv"), "--token", "t",
                  lang="zh_CN.UTF-8")  # fmt: skip
    said = one_error_line(upload)
    assert said == f"错误：文件不存在：{tmp_path / 'nope.csv'}：请检查路径"  # noqa: RUF001


def test_invalid_json_names_the_place_not_the_contents(tmp_path: Path) -> None:
    bad = tmp_path / "declaration.json"
    bad.write_text('{"name": "secret-plant-7",\n  "columns": [oops]}\n')
    result = cli("datasets", "create", str(bad), "--token", "t")
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith(f"error: {bad} is not valid JSON: ")
    assert "line 2, column 15" in line
    assert "secret-plant-7" not in line and "oops" not in line
    as_json = json_error(cli("jobs", "submit", "--query", str(bad), "--dataset", "d",
                              "--purpose", "p", "--token", "t", "--json"))  # fmt: skip
    assert as_json["code"] == "invalid_json"
    zh = one_error_line(cli("datasets", "create", str(bad), "--token", "t", lang="zh_CN.UTF-8"))
    assert "第 2 行第 15 列" in zh


@pytest.mark.slow  # CLI processes, ~12 s (make test-slow)
def test_version_and_short_help() -> None:
    shown = cli("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"veil {version('veil')}"
    for args in (["-h"], ["--help"], ["datasets", "-h"], ["jobs", "submit", "-h"]):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        assert "Usage: veil" in result.stdout and "--help" in result.stdout


@pytest.mark.slow  # CLI processes, ~8 s (make test-slow)
def test_a_mistyped_subcommand_gets_a_suggestion() -> None:
    result = cli("dataset", "list")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "No such command 'dataset'" in line and "Did you mean 'datasets'?" in line
    nested = one_error_line(cli("grants", "lst", "--token", "t"))
    assert "Did you mean 'list'?" in nested
    zh = one_error_line(cli("dataset", lang="zh_CN.UTF-8"))
    assert "你是不是想输入 'datasets'" in zh


def test_usage_errors_exit_2_and_are_json_under_json() -> None:
    result = cli("datasets", "create", "--token", "t")
    assert result.returncode == 2
    assert "Missing argument 'DECLARATION'" in one_error_line(result)
    error = json_error(cli("datasets", "create", "--token", "t", "--json"))
    assert error["code"] == "usage"
    unknown = cli("--lang", "fr", "datasets", "list")
    assert unknown.returncode == 2 and "zh-CN" in one_error_line(unknown)


@pytest.mark.slow  # CLI processes, ~12 s (make test-slow)
def test_help_follows_the_locale() -> None:
    zh = cli("--help", lang="zh_CN.UTF-8")
    assert zh.returncode == 0
    assert "用法" in zh.stdout and "数据集" in zh.stdout and "显示此帮助信息并退出" in zh.stdout
    assert "Show this message" not in zh.stdout
    sub = cli("--lang", "zh-CN", "jobs", "submit", "-h")
    assert "选项" in sub.stdout and "用途（必须已获授权）" in sub.stdout  # noqa: RUF001
    assert "Usage" not in cli("-h", VEIL_LANG="zh-CN").stdout
    assert "Usage: veil" in cli("-h", lang="zh_CN.UTF-8", VEIL_LANG="en").stdout


@pytest.mark.integration
def test_api_errors_carry_the_api_code_once(tmp_path: Path, veil: Veil, api: str) -> None:
    operator_token = bootstrap_operator(veil)
    assert operator_token is not None
    operator = VeilClient(api, operator_token)
    provider_token = operator.issue_token(operator.create_provider("Predicta")["id"])
    enterprise = operator.create_enterprise("Acme", "acme-cli")
    enterprise_token = operator.issue_token(enterprise["id"])

    # 404: the provider asks for a dataset that is not there (or not its to see).
    missing = cli("datasets", "show", "ds_nothere", "--token", provider_token, "--url", api,
                   "--json")  # fmt: skip
    assert missing.returncode == 1
    error = json_error(missing)
    assert error["code"] == "not_found" and error["status"] == 404
    assert "ds_nothere" in str(error["message"])
    # 403: the operator may not read datasets.
    forbidden = cli("datasets", "show", "ds_x", "--token", operator_token, "--url", api,
                     "--json")  # fmt: skip
    assert json_error(forbidden)["code"] == "forbidden"
    # The same in words: one line, the status in it.
    said = one_error_line(cli("datasets", "show", "ds_nothere", "--token", provider_token,
                               "--url", api))  # fmt: skip
    assert said.startswith("error (404): ") and "ds_nothere" in said

    # An upload's problems: each printed once, none with an empty place.
    with VeilClient(api, enterprise_token) as acme:
        dataset = acme.create_dataset(DECLARATION["name"], DECLARATION["columns"])
    bad = tmp_path / "bad.csv"
    bad.write_text("nothing,like,the,declaration\n1,2,3,4\n")
    upload = cli("datasets", "upload", dataset["id"], str(bad), "--token", enterprise_token,
                  "--url", api)  # fmt: skip
    assert upload.returncode == 1 and "Traceback" not in upload.stderr
    lines = [line.strip() for line in upload.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error (422): ")
    assert len(lines) > 1 and len(set(lines)) == len(lines), upload.stderr
    assert not any(line.startswith("- :") for line in lines), upload.stderr
    as_json = json_error(cli("datasets", "upload", dataset["id"], str(bad), "--token",
                              enterprise_token, "--url", api, "--json"))  # fmt: skip
    assert as_json["code"] in ("invalid_request", "invalid_upload") and as_json["problems"]


@pytest.mark.slow  # CLI processes, ~18 s (make test-slow)
def test_an_unexpected_failure_is_one_line_with_where_its_traceback_is(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model-card.json").write_text("[]")  # JSON, but not a model card
    (model / "model.safetensors").write_bytes(b"")
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    result = cli("models", "predict", str(model), str(data))
    assert result.returncode == 1
    line = one_error_line(result)
    where = re.search(r"traceback is in (\S+) ", line)
    assert line.startswith("error: unexpected error (") and where, line
    assert "Traceback" in Path(where.group(1)).read_text()
    Path(where.group(1)).unlink()
    debug = cli("models", "predict", str(model), str(data), VEIL_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_os_errors_name_the_file_and_what_to_do() -> None:
    denied = describe(PermissionError(13, "Permission denied", "/srv/veil/veil.db"))
    assert denied is not None and denied.code == "permission_denied"
    assert "/srv/veil/veil.db" in denied.message and "veil init" in denied.message
    full = describe(OSError(28, "No space left on device", "/srv/veil/x"))
    assert full is not None and full.code == "os_error" and "No space left" in full.message
    slow = describe(TimeoutError("job job_1 still running after 300 s"))
    assert slow is not None and slow.code == "timeout" and "job_1" in slow.message
    assert describe(RuntimeError("a bug")) is None
