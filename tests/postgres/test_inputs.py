"""Where SQLite and PostgreSQL differ on what callers send, through the API on PostgreSQL.

PostgreSQL refuses a value longer than its ``String(n)`` column, which SQLite stores: every
input that lands in such a column is limited by the API's schema (a clear 422, never a
500).  SQLite's ``LIKE`` ignores ASCII case and PostgreSQL's does not: the audit filters
match case-sensitively on both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import String

import node.work.models
import policies.audit
import policies.grants
import policies.letters
import policies.principals
import policies.purposes
import sandbox.store.collab_models
import sandbox.store.kpi_models
import sandbox.store.models
import sandbox.store.node_models
import sandbox.store.programme_models
import sandbox.store.scorecard_models
import sandbox.store.source_models
from cluster.postgres import PostgresServer
from keys import LocalKeyServer
from policies.db import Base
from sandbox.api.schemas import PURPOSE_LENGTH
from sandbox.client import VeilClient
from sandbox.console.session import CSRF_FIELD, PREFIX, csrf_token
from sandbox.demo.data import DECLARATION
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from tests.sandbox.conftest import PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.integration

ID, PURPOSE_LONG, NAME = "x" * 41, "p" * 65, "n" * 201
LONG_PATH_ID = "y" * 300
UNTIL = (datetime.now(UTC) + timedelta(days=1)).isoformat()


@pytest.fixture(scope="module")
def veil(
    tmp_path_factory: pytest.TempPathFactory, key_server: LocalKeyServer, postgres: PostgresServer
) -> Iterator[Veil]:
    settings = settings_for(
        tmp_path_factory.mktemp("inputs"), key_server, database_url=postgres.create_database()
    )
    with open_veil(settings) as running:
        yield running


@pytest.fixture(scope="module")
def world(veil: Veil) -> Iterator[World]:
    assert veil.db.engine.dialect.name == "postgresql"
    with ApiThread(veil.settings, veil) as url:
        yield make_world(veil, url, rows=200)


def http(client: VeilClient) -> httpx.Client:
    """The client's own authenticated connection, to send what its methods would not."""
    return client._http


def _grant(**change: Any) -> dict[str, Any]:
    body = {
        "provider_id": "p",
        "dataset_ids": ["d"],
        "columns": ["machine"],
        "tiers": [3],
        "purposes": [PURPOSE],
        "valid_until": UNTIL,
        "epsilon": 1.0,
    }
    return body | change


def _job(**change: Any) -> dict[str, Any]:
    return {"dataset_id": "d", "purpose": PURPOSE, "epsilon": 0.1, "query": {}} | change


def _code(**change: Any) -> dict[str, Any]:
    return {"dataset_id": "d", "purpose": PURPOSE, "source": "def f(): pass"} | change


KPI = {"kpi": "lead_time", "columns": {"lead_time": "cycle_time_s"},
       "time_column": "temperature_c", "baseline": {"from": 20, "to": 60},
       "evaluation": {"from": 60, "to": 120}}  # fmt: skip


def _kpi_contract(**change: Any) -> dict[str, Any]:
    return {"dataset_id": "d", "purpose": PURPOSE, "kpi": KPI, "target": 0.05,
            "epsilon": 0.1} | change  # fmt: skip


def test_every_length_limited_column_is_known() -> None:
    """The columns the schema limits below; a new ``String(n)`` column fails here until its
    inputs are checked (and added)."""
    _ = (policies.audit, policies.grants, policies.principals, policies.purposes,
         policies.letters, sandbox.store.models,
         sandbox.store.node_models, node.work.models,
         sandbox.store.collab_models, sandbox.store.programme_models,
         sandbox.store.kpi_models, sandbox.store.scorecard_models,
         sandbox.store.source_models)  # every table  # fmt: skip
    limited = {
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, String)
        and column.type.length is not None
        and not column.foreign_keys  # holds an existing row's id: fits, as that id does
    }
    inputs = {
        "principals.name": "EnterpriseIn, ProviderIn, SecurityOfficerIn, AssessorIn: NAME_LENGTH",
        "principals.slug": "EnterpriseIn.slug: SLUG_LENGTH",
        "principals.industry": "CategoriesIn.industry: CATEGORY_LENGTH",
        "principals.district": "CategoriesIn.district: CATEGORY_LENGTH",
        "principals.size_band": "CategoriesIn.size_band: SIZE_BAND_LENGTH",
        "datasets.name": "DatasetIn.name: NAME_LENGTH (console: enterprise_forms.declaration)",
        "source_declarations.kind": "SourceIn.kind: max_length 32 (one of sandbox.sources.kinds)",
        "device_days.device": "sandbox.data.liveness.record_read: cut to DEVICE_LENGTH (200)",
        "jobs.dataset_id": "JobIn.dataset_id: ObjectId (console: QueryForm.submission; SQL: FROM)",
        "jobs.purpose": "JobIn.purpose: Purpose (console: provider_forms.check_purpose)",
        "code_requests.dataset_id": "CodeIn.dataset_id: ObjectId",
        "code_requests.purpose": "CodeIn.purpose: Purpose",
        "code_requests.function_name": "analytics.syft_code: at most 64 characters",
        "audit_events.resource": "built from stored ids, or cut to 120 (failed logins)",
        "collaborations.title": "CollaborationIn.title: NAME_LENGTH",
        "collaborations.purpose": "CollaborationIn.purpose: 500",
        "collaboration_members.category": "proposals.set_membership: 1-100 characters",
        "node_collaborations.category": "node.work.collab.join: 1-100 characters",
        "kpi_contracts.dataset_id": "KpiContractIn.dataset_id: ObjectId (an existing dataset's)",
        "purposes.code": "PUT /v1/purposes/{code}: Code (64), policies.purposes.check_code",
        "purposes.name_zh": "PurposeIn.name_zh: PurposeName (100)",
        "purposes.name_en": "PurposeIn.name_en: PurposeName (100)",
        "evaluation_periods.name": "PeriodIn.name: 80 (sandbox.scorecards.periods: 1-80)",
        "provider_assessments.reason": (
            "AssessmentIn.reason, OwnAssessmentIn.reason: 500 (periods.check_assessment: 1-500)"
        ),
        "exit_proposals.reason": "ExitDecisionIn.reason: 500 (require_reason: 1-500)",
    }
    # Set by Veil itself, never from a caller's text: ids it generates, hashes, enum values,
    # paths under the data directory, signatures.
    internal = {
        "principals.id", "principals.role", "principals.status", "api_tokens.id",
        "api_tokens.token_hash", "datasets.id", "dataset_versions.id",
        "dataset_versions.source_format", "dataset_versions.object_path",
        "dataset_versions.ciphertext_sha256", "jobs.id",
        "jobs.enterprise_id", "jobs.grant_id", "jobs.status", "jobs.result_sha256",
        "jobs.artifact_path", "jobs.artifact_sha256", "code_requests.id",
        "code_requests.enterprise_id", "code_requests.sha256", "code_requests.status",
        "code_requests.reviewer_id", "grants.id", "budget_debits.id", "budget_debits.job_id",
        "budget_debits.refund_of",
        "audit_events.actor_id", "audit_events.actor_role", "audit_events.tenant_id",
        "audit_events.action", "audit_events.outcome", "audit_events.prev_hash",
        "audit_events.hash", "audit_head.hash", "audit_head.hash_alg",
        "audit_checkpoints.head_hash",
        "audit_checkpoints.signature", "jobs.worker_id", "job_workers.id",
        "job_workers.host",  # the hostname cut to 180, "/", 8 characters of the boot id
        # Enterprise nodes: ids Veil makes, hashes, states; a node's own ids are checked
        # (sandbox.nodes.mirror._ident, node.work.jobs: the control plane's job id cut to 40).
        "nodes.id", "nodes.status", "nodes.enrolment_sha256", "node_nonces.node_id",
        "node_nonces.nonce", "node_jobs.control_job_id", "node_jobs.local_job_id",
        "node_jobs.state", "datasets.node_id",
        # Data sources: ids Veil makes; a run's lease holder is a scheduler's or a run's id.
        "source_declarations.id", "source_mappings.id", "source_states.claimed_by",
        # Liveness: a day Veil writes (sandbox.data.liveness.day_of) or parses from a node's
        # signed report (sandbox.nodes.liveness._day: date.isoformat, 10 characters); the
        # reporting node's own id, authenticated.
        "device_days.day", "liveness_days.day", "liveness_days.node_id",
        # Collaborations: ids Veil makes or checks (a node checks the run ids it is handed,
        # node.work.collab._ID; the control plane takes a phase only when it is the run's),
        # hashes, states.
        "collaborations.id", "collaborations.spec_sha256", "collaborations.status",
        "collaboration_members.node_id", "collaboration_members.status",
        "collaboration_runs.id", "collaboration_runs.status", "collaboration_runs.phase",
        "collaboration_messages.phase", "collaboration_messages.sender",
        "collaboration_messages.recipient", "node_collaborations.collaboration_id",
        "node_collaborations.spec_sha256", "node_collaborations.dataset_id",
        "node_collaborations.status", "node_collaboration_runs.run_id",
        "node_collaboration_runs.collaboration_id", "node_collaboration_runs.state",
        # The programme's secret: its fixed name and a hex digest Veil makes.
        "programme_secrets.name", "programme_secrets.secret",
        # KPI contracts: ids Veil makes, hashes, states; the error cut to 500
        # (sandbox.kpi.verdicts).
        "kpi_contracts.id", "kpi_contracts.terms_sha256", "kpi_contracts.status",
        "kpi_verdicts.id", "kpi_verdicts.job_id", "kpi_verdicts.status", "kpi_verdicts.verdict",
        "kpi_verdicts.error",
        # Commitment letters: ids Veil makes, key fingerprints it computes.
        "provider_signing_keys.id", "provider_signing_keys.fingerprint",
        "commitment_letters.id",
        # Scorecards and exit: ids Veil makes, states.
        "evaluation_periods.id", "evaluation_periods.status", "provider_ratings.id",
        "provider_assessments.id", "scorecards.id", "exit_proposals.id",
        "exit_proposals.status",
        # Who assessed: "bureau", or a registered assessor's id (migration 0022).
        "provider_assessments.assessor", "provider_assessments.assessor_id",
    }  # fmt: skip
    assert limited - internal == set(inputs)


def test_over_long_inputs_are_refused_as_invalid(world: World) -> None:
    operator, acme, provider = http(world.operator), http(world.acme), http(world.provider)
    made = world.operator.create_bureau("Bureau")
    bureau_client = world.client(world.operator.issue_token(made["id"]))
    registered = bureau_client.register_assessor("Quality Institute")
    bureau, assessor = (
        http(bureau_client),
        http(world.client(world.operator.issue_token(registered["id"]))),
    )
    refused = [
        operator.post("/v1/enterprises", json={"name": NAME, "slug": f"s-{uuid.uuid4().hex[:8]}"}),
        operator.post("/v1/enterprises", json={"name": "Initech", "slug": "s" * 49}),
        operator.post("/v1/providers", json={"name": NAME}),
        operator.post(
            "/v1/enterprises",
            json={"name": "Initech", "slug": f"s-{uuid.uuid4().hex[:8]}", "industry": "i" * 65},
        ),
        operator.patch(f"/v1/enterprises/{ID}/categories", json={"district": "d" * 65}),
        operator.patch(f"/v1/enterprises/{ID}/categories", json={"size_band": "s" * 17}),
        operator.post("/v1/bureau", json={"name": NAME}),
        bureau.post("/v1/assessors", json={"name": NAME}),
        assessor.post("/v1/assessments", json={"provider_id": ID, "score": 50, "reason": "r"}),
        assessor.post(
            "/v1/assessments", json={"provider_id": "p", "score": 50, "reason": "r" * 501}
        ),
        operator.post("/v1/security-officers", json={"name": NAME}),
        operator.post("/v1/security-officers", json={"name": "Sam", "scope": [ID]}),
        acme.post("/v1/datasets", json={"name": NAME, "columns": DECLARATION["columns"]}),
        acme.post(
            "/v1/datasets",
            json={"name": "d", "columns": [{"name": "c" * 65, "type": "int", "class": "public"}]},
        ),
        acme.post("/v1/grants", json=_grant(provider_id=ID)),
        operator.put(f"/v1/purposes/{'p' * 65}", json={"name_zh": "z", "name_en": "e"}),
        operator.put("/v1/purposes/long-name", json={"name_zh": NAME, "name_en": "e"}),
        operator.put("/v1/purposes/long-name", json={"name_zh": "z", "name_en": NAME}),
        acme.post("/v1/grants", json=_grant(dataset_ids=[ID])),
        acme.post("/v1/grants", json=_grant(columns=["c" * 65])),
        acme.post("/v1/grants", json=_grant(purposes=[PURPOSE_LONG])),
        acme.patch(
            f"/v1/grants/{world.grant_id}", json={"reason": "r", "purposes": [PURPOSE_LONG]}
        ),
        acme.patch(f"/v1/grants/{world.grant_id}", json={"reason": "r", "columns": ["c" * 65]}),
        provider.post("/v1/jobs", json=_job(dataset_id=ID)),
        provider.post("/v1/jobs", json=_job(dataset_id=world.dataset_id, purpose=PURPOSE_LONG)),
        provider.post("/v1/jobs/preview", json=_job(dataset_id=ID)),
        provider.post("/v1/code-requests", json=_code(dataset_id=ID)),
        provider.post("/v1/code-requests", json=_code(purpose=PURPOSE_LONG)),
        provider.post("/v1/kpi-contracts", json=_kpi_contract(dataset_id=ID)),
        provider.post("/v1/kpi-contracts", json=_kpi_contract(purpose=PURPOSE_LONG)),
        acme.post("/v1/kpi-contracts", json=_kpi_contract(provider_id=ID)),
        acme.post("/v1/programme/ratings", json={"provider_id": ID, "rating": 3}),
    ]
    answers = [(r.request.method, r.request.url.path, r.status_code) for r in refused]
    assert [a for a in answers if a[2] != 422] == []
    # The same bodies within the limits reach the database and are answered from it.
    ok = acme.post("/v1/grants", json=_grant(provider_id=world.provider_id,
                                             dataset_ids=[world.dataset_id]))  # fmt: skip
    assert ok.status_code == 201, ok.text
    longest = {"name_zh": "z" * 100, "name_en": "e" * 100}
    fits = operator.put(f"/v1/purposes/{'p' * 64}", json=longest)
    assert fits.status_code == 200, fits.text


def test_over_long_ids_in_paths_are_unknown_not_errors(world: World) -> None:
    """Ids in paths are only looked up, never stored: any length is a 404 (or a refusal)."""
    calls = {
        world.operator: [
            ("POST", "/v1/principals/{id}/tokens"),
            ("POST", "/v1/providers/{id}/suspend"),
            ("POST", "/v1/providers/{id}/reinstate"),
        ],
        world.acme: [
            ("GET", "/v1/datasets/{id}"),
            ("POST", "/v1/datasets/{id}/versions"),
            ("GET", "/v1/grants/{id}"),
            ("PATCH", "/v1/grants/{id}"),
            ("POST", "/v1/grants/{id}/revoke"),
            ("GET", "/v1/code-requests/{id}"),
            ("POST", "/v1/code-requests/{id}/approve"),
            ("POST", "/v1/code-requests/{id}/deny"),
            ("POST", "/v1/jobs/{id}/release"),
            ("POST", "/v1/jobs/{id}/reject"),
        ],
        world.provider: [
            ("GET", "/v1/jobs/{id}"),
            ("GET", "/v1/jobs/{id}/result"),
            ("GET", "/v1/jobs/{id}/model"),
            ("GET", "/v1/jobs/{id}/held"),
            ("POST", "/v1/jobs/{id}/cancel"),
            ("GET", "/v1/kpi-contracts/{id}"),
            ("POST", "/v1/kpi-contracts/{id}/accept"),
            ("POST", "/v1/kpi-contracts/{id}/decline"),
            ("POST", "/v1/kpi-contracts/{id}/evaluations"),
            ("GET", "/v1/kpi-contracts/{id}/verdicts"),
            ("GET", "/v1/scorecards/{id}"),
        ],
    }
    bodies = {"reason": "because"}
    answers = []
    for client, routes in calls.items():
        for method, path in routes:
            url = path.format(id=LONG_PATH_ID)
            body = None if method == "GET" or path.endswith("/versions") else bodies
            response = http(client).request(method, url, json=body)
            answers.append((method, path, response.status_code))
    assert [a for a in answers if a[2] >= 500] == []
    assert {a[2] for a in answers} <= {403, 404, 422}, answers


def test_audit_filters_match_case_sensitively(world: World) -> None:
    """As on SQLite (tests/sandbox/test_audit_oversight.py); SQLite's LIKE alone would
    also find ``job.*`` events for ``JOB.*``."""
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, [{"kind": "count"}])
    operator = world.operator
    assert {e["action"] for e in operator.audit_events(action="job.*")} >= {"job.submitted"}
    assert all(e["action"].startswith("job.") for e in operator.audit_events(action="job.*"))
    assert operator.audit_events(action="JOB.*") == []
    assert operator.audit_events(action="Job.Submitted") == []
    found = operator.audit_events(resource=f"job:{job['id']}")
    assert found and {e["resource"] for e in found} == {f"job:{job['id']}"}
    assert operator.audit_events(resource=f"JOB:{job['id'][:6]}*") == []
    assert operator.audit_events(resource=f"job:{job['id'][:6]}*") != []
    # A prefix with LIKE's own wildcards matches them literally.
    assert operator.audit_events(action="job_%*") == []
    assert operator.audit_events(action="*") != []


def test_the_console_query_form_refuses_an_over_long_purpose(world: World) -> None:
    """The console's forms do not pass through the API's schema: its query form checks the
    lengths itself (a denied job is stored too, so a long purpose reached the column)."""
    token = http(world.provider).headers["Authorization"].removeprefix("Bearer ")
    with httpx.Client(base_url=world.url) as console:
        console.post(f"{PREFIX}/login", data={"token": token})  # the session cookie
        form = {
            CSRF_FIELD: csrf_token(token),
            "dataset_id": world.dataset_id,
            "kind": "count",
            "epsilon": "0.1",
        }
        long_purpose = console.post(f"{PREFIX}/query", data=form | {"purpose": PURPOSE_LONG})
        long_id = console.post(f"{PREFIX}/query", data=form | {"purpose": PURPOSE,
                                                               "dataset_id": ID})  # fmt: skip
        fits = console.post(f"{PREFIX}/query", data=form | {"purpose": PURPOSE})
        count = "SELECT COUNT(*) FROM " + world.dataset_id  # noqa: S608 - Veil translates it
        sql = {CSRF_FIELD: form[CSRF_FIELD], "sql": count, "epsilon": "0.1",
               "purpose": PURPOSE_LONG}  # fmt: skip
        long_sql_purpose = console.post(f"{PREFIX}/query/sql", data=sql)
    assert long_sql_purpose.status_code == 422, long_sql_purpose.text[:2000]
    assert (long_purpose.status_code, long_id.status_code) == (422, 422)
    assert f"longer than {PURPOSE_LENGTH} characters" in long_purpose.text
    assert fits.status_code == 303, fits.text[:2000]  # to the new job's page


def test_a_kpi_contract_is_agreed_and_evaluated_on_postgresql(world: World) -> None:
    """The contract, its consent, the evaluation's job and the signed verdict (settled under a
    row lock) on PostgreSQL."""
    made = world.provider.propose_kpi_contract(_kpi_contract(dataset_id=world.dataset_id))
    world.acme.accept_kpi_contract(made["id"], made["terms_sha256"])
    pending = world.provider.evaluate_kpi_contract(made["id"])
    done = world.acme.wait_for_kpi_verdict(made["id"], pending["id"])
    assert done["status"] == "released", done
    assert done["document"]["verdict"] in ("met", "not_met", "inconclusive")
    assert world.provider.list_kpi_verdicts(made["id"]) == [done]
