"""Scorecards and exit through the API and the CLI, on a real server (the sandbox's world:
Acme granted Predicta; Other Analytics has no grant)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from sandbox import cli
from sandbox.client import ApiError
from tests.sandbox.conftest import World

pytestmark = pytest.mark.integration


def test_a_period_through_the_api_and_the_cli(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bureau = world.client(world.operator.issue_token(world.operator.create_bureau("Bureau")["id"]))
    token = bureau._http.headers["authorization"].removeprefix("Bearer ")
    common = ["--token", token, "--url", world.url, "--json"]
    assert cli.run(["scorecards", "open", "2026-Q4", "--pass-mark", "50", *common], True) == 0
    period = json.loads(capsys.readouterr().out)
    assert period["weights"]["kpi"] == 0.4 and period["pass_mark"] == 50
    world.acme.rate_provider(world.provider_id, 5)
    with pytest.raises(ApiError) as unknown:  # Globex never granted Predicta
        world.globex.rate_provider(world.provider_id, 1)
    assert unknown.value.status == 404
    # A registered assessor: the bureau registers it, the operator issues its token, and
    # it records its own assessment (the bureau may no longer name one).
    assert cli.run(["assessors", "register", "Quality Institute", *common], True) == 0
    registered = json.loads(capsys.readouterr().out)
    assessor_token = world.operator.issue_token(registered["id"])
    theirs = ["--token", assessor_token, "--url", world.url, "--json"]
    args = ["assessments", "record", world.provider_id, "--score", "40", "--reason", "late"]
    assert cli.run([*args, *theirs], True) == 0
    assert json.loads(capsys.readouterr().out)["assessor_id"] == registered["id"]
    assert cli.run(["assessments", "list", *theirs], True) == 0
    (listed,) = [p for p in json.loads(capsys.readouterr().out)["providers"]
                 if p["id"] == world.provider_id]  # fmt: skip
    assert listed["assessment"]["score"] == 40
    assert cli.run(["assessors", "list", *common], True) == 0
    assert [a["id"] for a in json.loads(capsys.readouterr().out)] == [registered["id"]]
    forged = {"provider_id": world.provider_id, "score": 99, "reason": "x",
              "assessor": registered["id"]}  # fmt: skip
    refused = bureau._http.post("/v1/programme/assessments", json=forged)
    assert refused.status_code == 422 and "assessors register" in refused.json()["message"]
    own_route = {k: v for k, v in forged.items() if k != "assessor"}
    assert bureau._http.post("/v1/assessments", json=own_route).status_code == 403
    args = ["scorecards", "assess", world.provider_id, "--score", "80", "--reason", "on plan"]
    assert cli.run([*args, *common], True) == 0
    capsys.readouterr()
    closed = bureau.close_period(period["id"])
    ours = next(c for c in closed["scorecards"] if c["provider_id"] == world.provider_id)
    document = ours["document"]
    assert document["components"]["ratings"] == {
        "score": None, "raters": 1, "shown": False, "mean": None, "note": "too few to show"
    }  # fmt: skip
    assert document["score"] == 60.0 and document["result"] == "passed"  # (80 + 40) / 2
    (named,) = document["components"]["assessors"]["assessments"]
    assert named["assessor_id"] == registered["id"] and named["assessor"] == "Quality Institute"
    assert named["score"] == 40 and named["assessor_status"] == "active"
    assert cli.run(["assessors", "suspend", registered["id"], "--reason", "conflict", *common],
                   True) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["status"] == "suspended"
    assert cli.run(["assessments", "list", *theirs], True) != 0  # its token is refused now
    capsys.readouterr()
    assert [c["id"] for c in world.provider.list_scorecards()] == [ours["id"]]
    with pytest.raises(ApiError) as hidden:
        world.other_provider.get_scorecard(ours["id"])
    assert hidden.value.status == 404
    provider_token = world.provider._http.headers["authorization"].removeprefix("Bearer ")
    mine = ["--token", provider_token, "--url", world.url, "--json"]
    assert cli.run(["scorecards", "list", *mine], True) == 0
    assert [c["id"] for c in json.loads(capsys.readouterr().out)] == [ours["id"]]
    assert cli.run(["exits", "list", *common], True) == 0
    assert json.loads(capsys.readouterr().out) == []
    # The console: the provider's page shows its own scorecard, another provider's does not.
    for who, shown in ((provider_token, True), (world.other_provider, False)):
        value = who if isinstance(who, str) else who._http.headers["authorization"][7:]
        page = httpx.get(f"{world.url}/console/scorecards", cookies={"veil_console": value})
        assert page.status_code == 200
        # Predicta's card passed; Other Analytics' own was not scored.
        assert ("Predicta" in page.text) is shown
        assert ('data-result="passed"' in page.text) is shown
        assert ("too few to show (1 rated)" in page.text) is shown
    bureau_page = httpx.get(f"{world.url}/console/scorecards", cookies={"veil_console": token})
    assert "Predicta" in bureau_page.text and "Other Analytics" in bureau_page.text
    assert "too few to show (1 rated)" in bureau_page.text
    assert "Quality Institute</span>: 40.0" in bureau_page.text  # the assessor, by name
    # Offline: the signed file verifies with the platform's public key; a change does not.
    card, pem = tmp_path / "card.json", tmp_path / "keys.pem"
    pem.write_text(world.operator.audit_public_key())
    assert cli.run(["scorecards", "show", ours["id"], "--out", str(card), *mine], True) == 0
    capsys.readouterr()
    assert cli.run(["scorecards", "verify", str(card), "--public-key", str(pem)], True) == 0
    changed = json.loads(card.read_text()) | {"result": "failed"}
    card.write_text(json.dumps(changed))
    assert cli.run(["scorecards", "verify", str(card), "--public-key", str(pem)], True) == 1
    assert "scorecard NOT valid" in capsys.readouterr().err
