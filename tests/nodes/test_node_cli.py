"""`veil node`'s expected failures are one line each, and a failed enrolment can be retried."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.cli import run
from tests.nodes.conftest import NodeWorld

pytestmark = pytest.mark.integration


def test_a_directory_that_is_not_a_node_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["node", "status", "--dir", str(tmp_path)], False) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a node directory" in err
    assert "Traceback" not in err


def test_a_refused_enrolment_leaves_nothing_to_trip_on(
    node_world: NodeWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_dir = tmp_path / "new-node"
    args = ["node", "init", "--enrol", "not-a-real-code", "--control-plane",
            node_world.cp_url, "--dir", str(node_dir)]  # fmt: skip
    assert run(args, False) == 1
    err = capsys.readouterr().err.strip()
    assert "the control plane refused" in err and "enrolment code" in err
    assert len(err.splitlines()) == 1
    assert not (node_dir / "identity.key").exists() and not (node_dir / "node.json").exists()
    assert run(args, False) == 1  # run again: the same answer, not "holds a node already"
    assert "holds a node already" not in capsys.readouterr().err
