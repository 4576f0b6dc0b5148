"""docs/nodes-openapi.json is the node protocol's schema as the code serves it."""

from __future__ import annotations

import json
from pathlib import Path

from sandbox.server.nodes_openapi import node_openapi

ROOT = Path(__file__).resolve().parents[2]


def test_node_protocol_schema_is_current() -> None:
    committed = json.loads((ROOT / "docs" / "nodes-openapi.json").read_text())
    assert committed == json.loads(json.dumps(node_openapi())), (
        "the node protocol changed: run scripts/node-openapi and commit docs/nodes-openapi.json"
    )
    assert set(committed["paths"]) == {
        "/node/v1/enrol", "/node/v1/providers", "/node/v1/signing-keys",
        "/node/v1/datasets/{dataset_id}",
        "/node/v1/grants/{grant_id}", "/node/v1/letters/{grant_id}",
        "/node/v1/letters/signatures", "/node/v1/jobs/claim", "/node/v1/jobs/running",
        "/node/v1/jobs/{job_id}/release", "/node/v1/jobs/{job_id}/fail",
        "/node/v1/jobs/{job_id}/progress", "/node/v1/jobs/{job_id}/held",
        "/node/v1/jobs/{job_id}/taken",
        "/node/v1/code-requests", "/node/v1/code-requests/{code_id}/decision",
        "/node/v1/collaborations", "/node/v1/collaborations/{collaboration_id}/membership",
        "/node/v1/collaborations/tasks", "/node/v1/collaborations/runs/{run_id}/{phase}",
        "/node/v1/liveness",
    }  # fmt: skip
