"""The ``veil`` command line: errors in plain words, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

from keys import Tenancy, platform_policy
from keys.bao import free_port


def veil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_policy_prints_what_an_external_server_must_grant() -> None:
    result = veil("keys", "policy", "--tenancy", "mount")
    assert result.returncode == 0
    assert result.stdout == platform_policy(Tenancy.MOUNT)


def test_unreachable_external_server_is_a_clear_error() -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    result = veil(
        "keys",
        "status",
        env={"VEIL_VAULT_ADDR": addr, "VEIL_VAULT_TOKEN": "t", "VEIL_VAULT_TIMEOUT_S": "2"},
    )
    assert result.returncode == 1
    assert f"cannot reach the key server at {addr}" in result.stderr
    assert "Traceback" not in result.stderr
