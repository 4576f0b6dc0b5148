"""``veil demo --keep``: the demo's instance keeps running, with a token per role, until Ctrl-C.

The real command in a subprocess on a fresh data directory: its printed address is
read from its output, each printed token is used over HTTP, then SIGINT stops it and
everything it started (API, job worker, key server).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from keys import LocalKeyServer

pytestmark = pytest.mark.integration  # the whole demo: about 30 s on an idle machine

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = re.compile(r"^console: (https?://127\.0\.0\.1:\d+)/console$")
LOGIN = re.compile(r"^  (enterprise|provider|security officer|operator) \(.+\): (veil_\S+)$")
#: What each role may read, to show its token works as that role.
READS = {
    "enterprise": "/v1/datasets",
    "provider": "/v1/catalog",
    "security officer": "/v1/audit/events",
    "operator": "/v1/enterprises",
}


def _reader(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line.rstrip("\n"))
    lines.put(None)


@pytest.mark.slow  # a whole demo, ~25 s (make test-slow)
def test_demo_keep_leaves_the_instance_running_until_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_", "VAULT_"))}
    env |= {"VEIL_DATA_DIR": str(tmp_path / "veil"), "VEIL_LANG": "en", "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.cli", "demo", "--keep"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(process, lines), daemon=True).start()
    output: list[str] = []
    url, tokens = None, {}
    try:
        deadline = time.monotonic() + 900
        while len(tokens) < len(READS) or "Press Ctrl-C to stop it." not in output:
            line = lines.get(timeout=max(1, deadline - time.monotonic()))
            assert line is not None, "the demo ended:\n" + "\n".join(output[-40:])
            output.append(line)
            if match := CONSOLE.match(line):
                url = match.group(1)
            elif match := LOGIN.match(line):
                tokens[match.group(1)] = match.group(2)
        assert url is not None, "\n".join(output[-40:])

        assert httpx.get(f"{url}/console/login").status_code == 200
        for role, path in READS.items():
            auth = {"Authorization": f"Bearer {tokens[role]}"}
            assert httpx.get(url + path, headers=auth).status_code == 200, role
            refused = httpx.get(url + path, headers={"Authorization": "Bearer veil_wrong"})
            assert refused.status_code == 401
        # The provider has a grant in force to explore (the demo's own was revoked).
        catalog = httpx.get(
            f"{url}/v1/catalog", headers={"Authorization": f"Bearer {tokens['provider']}"}
        ).json()
        assert any(3 in entry["tiers"] for entry in catalog)

        process.send_signal(signal.SIGINT)
        assert process.wait(120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    while (line := lines.get(timeout=10)) is not None:
        output.append(line)
    assert "Demo finished" in "\n".join(output[-5:]), "\n".join(output[-20:])
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v1/health", timeout=2)
    assert not LocalKeyServer(tmp_path / "veil" / "demo" / "keyserver").is_running()
