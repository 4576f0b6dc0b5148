"""No endpoint a provider can reach returns rows of a private dataset; nothing stored is clear."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from sandbox.runtime.veil import Veil
from sandbox.server.app import create_app
from tests.sandbox.conftest import PURPOSE, World

pytestmark = pytest.mark.integration

NON_PUBLIC = [
    "temperature_c",
    "cycle_time_s",
    "vibration_mm_s",
    "defects",
    "yield_pct",
    "recipe_p1",
]


TOKEN = re.compile(r"[A-Za-z0-9_.\-]+")


def _private_cells(world: World) -> set[str]:
    """Distinctive cell texts of the non-public columns (short ones could occur by chance)."""
    rows = list(csv.DictReader(io.StringIO(world.csv.decode())))
    return {row[c] for row in rows for c in NON_PUBLIC if len(row[c]) >= 6}


def _kpi_ids(world: World) -> dict[str, str]:
    """A KPI contract both parties agreed to, and its released verdict."""
    kpi = {"kpi": "lead_time", "columns": {"lead_time": "cycle_time_s"},
           "time_column": "temperature_c", "baseline": {"from": 20, "to": 60},
           "evaluation": {"from": 60, "to": 120}}  # fmt: skip
    body = {"dataset_id": world.dataset_id, "purpose": PURPOSE, "kpi": kpi, "target": 0.05,
            "epsilon": 0.1}  # fmt: skip
    made = world.provider.propose_kpi_contract(body)
    world.acme.accept_kpi_contract(made["id"], made["terms_sha256"])
    verdict = world.provider.evaluate_kpi_contract(made["id"])
    assert world.provider.wait_for_kpi_verdict(made["id"], verdict["id"])["status"] == "released"
    return {"contract_id": made["id"], "verdict_id": verdict["id"]}


def _provider_calls(
    world: World, veil: Veil, job_id: str, kpi: dict[str, str]
) -> list[tuple[str, str]]:
    ids = {
        "dataset_id": world.dataset_id,
        "job_id": job_id,
        "grant_id": world.grant_id,
        "principal_id": world.provider_id,
        "provider_id": world.provider_id,
        "code_id": "code_none",  # no tier-5 grant here: test_reviewed_code covers its outputs
        "token_id": "tok_none",  # token routes show metadata only (tests/sandbox/test_tokens.py)
        "decision": "approve",
        "action": "decline",
        "kind": "download",
        "fmt": "json",
        "enterprise_id": "ent_none",  # the operator's node enrolment: refused to a provider
        # The provider's own benchmark proposal; no run of it (nobody joined).
        "collaboration_id": world.provider.propose_collaboration(
            "t",
            "p",
            [{"name": "x", "type": "float"}],
            {"statistics": [{"kind": "count"}], "epsilon": 1.0},
        )["id"],
        "run_id": "crun_none",
        "table": "participation",  # the bureau's tables: refused to a provider
        # Scorecards and exit: none exist here; another provider's would be "not found".
        "period_id": "per_none",
        "scorecard_id": "scd_none",
        "exit_id": "exi_none",
        "assessor_id": "asr_none",  # the bureau's register of assessors: refused to a provider
        **kpi,
        "phase": "advertise",  # the node protocol's routes: refused without a node signature
        "code": "process-optimization",  # the purpose vocabulary: the operator's to change
    }
    calls = []
    for route in create_app(veil.settings).routes:
        if not isinstance(route, APIRoute):
            continue
        path = re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], route.path)
        calls += [(method, path) for method in sorted(route.methods)]
    return calls


def test_no_provider_reachable_endpoint_returns_rows(world: World, veil: Veil) -> None:
    job = world.provider.submit_job(
        world.dataset_id, PURPOSE, 0.5, [{"kind": "mean", "column": "temperature_c"}], "machine"
    )
    world.provider.wait_for_job(job["id"])
    cells = _private_cells(world)
    assert len(cells) > 1000
    token = world.provider._http.headers["authorization"]
    kpi = _kpi_ids(world)
    calls = _provider_calls(world, veil, job["id"], kpi)
    assert len(calls) >= 15
    # The KPI verdict's released DP figures, as the console prints them ("%.4f"): a
    # released figure may equal one of the thousand 4-decimal cells by chance, and is
    # the provider's to see; any other token equal to a cell is a leak.
    document = world.provider.get_kpi_verdict(kpi["contract_id"], kpi["verdict_id"])["document"]
    figures = [document["change"], *document["interval"]]
    released = {f"{figure:.4f}" for figure in figures if figure is not None}
    assert released, "the verdict released no figure"
    answered = 0
    # The bearer header for the API, the session cookie for the web console's pages.
    cookies = {"veil_console": token.removeprefix("Bearer ")}
    with httpx.Client(
        base_url=world.url, headers={"authorization": token}, cookies=cookies
    ) as http:
        for method, path in calls:
            body = b'{"dataset_id": "%s"}' % world.dataset_id.encode() if method == "POST" else None
            response = http.request(
                method, path, content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code < 500, (method, path, response.text)
            text = response.text
            # Whole tokens: a DP value such as 10.44312 must not count as the cell "0.4431".
            leaked = sorted(cells & set(TOKEN.findall(text)) - released)
            assert not leaked, f"{method} {path} returned private cells {leaked[:3]}"
            answered += response.status_code == 200
    assert answered >= 6  # the walk really reached the provider's own views


def test_stored_objects_hold_no_plaintext(world: World, veil: Veil) -> None:
    files = [p for p in Path(veil.settings.objects_dir).rglob("*") if p.is_file()]
    assert files, "nothing was stored"
    cells = sorted(_private_cells(world))[:200]
    for path in files:
        blob = path.read_bytes()
        assert blob.startswith(b"VEILSTRM")
        assert not any(c.encode() in blob for c in cells)
        assert b"press-01" not in blob and b"temperature_c" not in blob
