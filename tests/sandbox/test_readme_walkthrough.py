"""The README's "By hand" walkthrough, run exactly as written, so it cannot drift from the CLI.

Every fenced block of README.md whose info string is ``sh readme-walkthrough`` is run,
in the README's order, as one bash script (``set -euo pipefail``: the first command that
fails fails the test, and the ids kept in shell variables carry from block to block),
in a fresh directory holding links to this checkout's ``.venv`` and ``docs`` (the
README's commands run from the repository root), against a real ``veil serve`` started
here on a free port with the README's data directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cluster.local import stop_processes
from keys.bao import free_port
from tests.conftest import require

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARK = "readme-walkthrough"
#: The README's data directory, relative to where its commands run.
DATA_DIR = ".veil-by-hand"
BLOCK = re.compile(r"^```sh[ \t]+" + MARK + r"[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def walkthrough(readme: Path = README) -> str:
    """A README's marked blocks, in order, as one script."""
    return "\n".join(BLOCK.findall(readme.read_text(encoding="utf-8")))


def commands(script: str) -> list[str]:
    """The script's commands without their comments (which a translation may change)."""
    lines = (re.sub(r"(^|\s+)#.*$", "", line).rstrip() for line in script.splitlines())
    return [line for line in lines if line]


def test_the_walkthrough_covers_the_whole_flow() -> None:
    """Each step the README promises is in a block the test below runs."""
    script = walkthrough()
    assert f"export VEIL_DATA_DIR=$PWD/{DATA_DIR}" in script
    for command in (
        "veil init",
        "veil enterprises create",
        "veil providers create",
        "veil officers create",
        "veil tokens issue",
        "veil datasets create",
        "veil datasets upload",
        "veil grants create",
        "veil letters issue",
        "veil letters sign",
        "veil datasets catalog",
        "veil datasets mock",
        "veil jobs preview",
        "veil jobs submit",
        "veil jobs result",
        "veil audit verify --token",
        "veil audit export",
        "veil audit public-key",
        "veil audit verify --offline",
        "veil receipts create",
        "veil receipts verify",
    ):
        assert command in script, f"the README's walkthrough lost `{command}`"
    grant = script[script.index("veil grants create") :]
    assert len(set(re.findall(r"--tier (\d)", grant[: grant.index("--token")]))) >= 3
    assert re.search(r"veil receipts create [^\n]*--enterprise \$\w+", script)
    assert re.search(r"veil receipts verify \S+ --public-key \S+", script)


def test_the_chinese_readme_walks_through_the_same_commands() -> None:
    """README.zh-CN.md's marked blocks, if it has any, are the commands run below."""
    translated = ROOT / "README.zh-CN.md"
    if not translated.exists() or MARK not in translated.read_text(encoding="utf-8"):
        pytest.skip("README.zh-CN.md has no readme-walkthrough blocks")
    assert commands(walkthrough(translated)) == commands(walkthrough())


class Server:
    """``veil serve`` in ``where``, on a free port, with the README's data directory."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_", "VAULT_"))}
        self.env = inherited | {
            "VEIL_API_PORT": str(self.port),
            "VEIL_URL": self.url,
            "VEIL_JOB_POLL_INTERVAL_S": "0.05",
            "VEIL_LANG": "en",
        }
        self.log = where / "serve.log"

    def start(self) -> subprocess.Popen[bytes]:
        env = self.env | {"VEIL_DATA_DIR": str(self.where / DATA_DIR)}
        with self.log.open("wb") as out:
            process = subprocess.Popen(
                [".venv/bin/veil", "serve"], cwd=self.where, env=env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return process
            time.sleep(0.2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    require(shutil.which("jq") is not None, "jq (apt-get install jq), which the README uses")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    served = Server(tmp_path)
    process = served.start()
    try:
        yield served
    finally:
        stop_processes([process])
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(
                [".venv/bin/veil", "keys", "stop"], cwd=tmp_path, timeout=60, check=False,
                env=served.env | {"VEIL_DATA_DIR": str(tmp_path / DATA_DIR)},
                capture_output=True,
            )  # fmt: skip


@pytest.mark.slow  # the README's whole walkthrough, ~70 s (make test-slow)
def test_the_readme_walkthrough_runs_as_written(server: Server) -> None:
    script = server.where / "walkthrough.sh"
    script.write_text("set -euo pipefail\nset -x\n" + walkthrough() + "\n")
    done = subprocess.run(
        ["bash", str(script)], cwd=server.where, env=server.env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"a command of the README's walkthrough failed (exit {done.returncode}); its last "
        f"output:\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}\n"
        f"server log:\n{server.log.read_text()[-2000:]}"
    )
    # What the commands left is what the README says they leave.
    for name in ("mock.csv", "audit.jsonl", "audit-key.pem", "receipt.json", "receipt.html"):
        assert (server.where / name).stat().st_size > 0, name
    assert "receipt verified" in done.stdout
    assert "audit chain intact" in done.stdout
