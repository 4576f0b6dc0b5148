"""The authorization matrix: every /v1 endpoint x every caller x own / other tenant.

OWASP API Security Top 10 (2023): API1 broken object level authorization (another
tenant's dataset, grant, job, code request, held output, receipt), API5 broken
function level authorization (a role calling another role's function, no token, a bad
or suspended one).  The expected statuses are the policy in ``authz_table.py``; this
module only sends the requests, over real HTTP, and checks each answer against it.

A refused call must change nothing: the rows of every state table are compared before
and after (the audit log, which records the refusal, aside).  A route of the app without
a row in the table fails ``test_every_api_route_has_a_row``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from keys import LocalKeyServer
from policies.audit import AuditEvent
from policies.grants import Grant
from policies.principals import ApiToken, hash_token
from sandbox.config.settings import Settings
from sandbox.server.app import create_app
from sandbox.store.models import CodeRequest, Job
from tests.security.authz_table import (
    BY_KEY,
    OBJECT_COLUMNS,
    OTHER,
    PLAIN_COLUMNS,
    POLICY,
    Endpoint,
)
from tests.security.authz_world import AuthzWorld, build, job_body, send, target_for

pytestmark = pytest.mark.integration

#: Successful calls that change no state table (a preview, signing the chain's head,
#: recording a full verification of the chain in the chain itself).
STATELESS_WRITES = {
    ("POST", "/v1/jobs/preview"),
    ("POST", "/v1/audit/checkpoints"),
    ("POST", "/v1/audit/verifications"),
}


def cases() -> Iterator[Any]:
    for endpoint in POLICY:
        for column, status in endpoint.expect.items():
            yield pytest.param(
                endpoint, column, status, id=f"{endpoint.method} {endpoint.path}-{column}"
            )


@pytest.fixture(scope="module")
def authz(
    tmp_path_factory: pytest.TempPathFactory, key_server: LocalKeyServer
) -> Iterator[AuthzWorld]:
    yield from build(tmp_path_factory.mktemp("authz-matrix"), key_server)


@pytest.mark.parametrize(("endpoint", "column", "expected"), list(cases()))
def test_authorization(authz: AuthzWorld, endpoint: Endpoint, column: str, expected: int) -> None:
    target = target_for(authz, endpoint, column)
    before = authz.state()
    answer = send(authz, endpoint, column, target)
    is_json = answer.headers.get("content-type") == "application/json"
    body = answer.json() if is_json else {}
    assert answer.status_code == expected, (
        f"{endpoint.method} {endpoint.path} as {column}: expected {expected}, got "
        f"{answer.status_code} {str(body)[:300]}"
    )
    if expected == 403:
        # A role refusal never reaches the policy engine; a policy denial says why.
        assert ("reasons" in body) == (column in endpoint.denied), body
    if expected == 422:  # refused by the service, after authorization: not by the schema
        assert body["code"] != "validation_error", body
    if expected == 401:
        assert answer.headers.get("www-authenticate") == "Bearer"
    if (
        expected == 200
        and endpoint.key == ("POST", "/v1/jobs/preview")
        and column != "provider-own"
    ):
        assert body["allowed"] is False and body.get("aggregates") is None, body
    changes_state = expected < 300 and endpoint.method != "GET"
    if not changes_state or endpoint.key in STATELESS_WRITES:
        assert authz.state() == before, "a refused call (or a read) changed the stored state"


def test_every_api_route_has_a_row(tmp_path: Path) -> None:
    """A new endpoint cannot slip in untested: each /v1 route needs a row in the policy."""
    app = create_app(Settings(data_dir=tmp_path / "veil"))
    routes = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/v1/")
        for method in route.methods - {"HEAD", "OPTIONS"}
    }
    assert len(routes) >= 40
    missing = sorted(routes - set(BY_KEY))
    assert not missing, f"routes without a row in tests/security/authz_table.py: {missing}"
    stale = sorted(set(BY_KEY) - routes)
    assert not stale, f"rows for routes the app does not have: {stale}"


def test_every_row_names_every_caller() -> None:
    """Each row gives a status for every caller: own / other exactly when it names objects."""
    assert len(BY_KEY) == len(POLICY), "two rows for one endpoint"
    for endpoint in POLICY:
        columns = OBJECT_COLUMNS if endpoint.target else PLAIN_COLUMNS
        assert set(endpoint.expect) == set(columns), endpoint.key
        statuses = set(endpoint.expect.values())
        assert statuses <= {200, 201, 202, 401, 403, 404, 409, 422}, endpoint.key
        assert endpoint.denied <= {c for c, s in endpoint.expect.items() if s == 403}
        if endpoint.target is None:
            continue
        # Object level: another tenant's object is never served.
        for role in ("enterprise", "provider", "officer-scoped"):
            assert endpoint.expect[f"{role}-{OTHER}"] >= 400 or endpoint.key in {
                ("GET", "/v1/audit/events"),  # 200 and empty: tested below
                ("POST", "/v1/jobs/preview"),  # 200 and allowed: false
            }, (endpoint.key, role)


# -- collections: object level authorization inside lists --------------------------------


def _job_tenants(world: AuthzWorld, ids: list[str]) -> set[str | None]:
    with world.veil.db.read() as session:
        return set(session.scalars(select(Job.enterprise_id).where(Job.id.in_(ids))))


def _code_tenants(world: AuthzWorld, ids: list[str]) -> set[str]:
    with world.veil.db.read() as session:
        return set(
            session.scalars(select(CodeRequest.enterprise_id).where(CodeRequest.id.in_(ids)))
        )


def test_an_enterprise_lists_only_its_own_objects(authz: AuthzWorld) -> None:
    a, token = authz.a, authz.tokens["enterprise"]
    datasets = authz.ok(token, "GET", "/v1/datasets")
    grants = authz.ok(token, "GET", "/v1/grants")
    jobs = authz.ok(token, "GET", "/v1/jobs", params={"limit": 500})
    codes = authz.ok(token, "GET", "/v1/code-requests")
    assert datasets and grants and jobs and codes
    assert {d["enterprise_id"] for d in datasets} == {a.enterprise}
    assert {g["enterprise_id"] for g in grants} == {a.enterprise}
    assert _job_tenants(authz, [j["id"] for j in jobs]) == {a.enterprise}
    assert _code_tenants(authz, [c["id"] for c in codes]) == {a.enterprise}


def test_a_provider_lists_only_what_it_was_granted_or_did(authz: AuthzWorld) -> None:
    a, token = authz.a, authz.tokens["provider"]
    granted = {g["id"] for g in authz.ok(token, "GET", "/v1/grants")}
    assert a.grant in granted and authz.b.grant not in granted
    with authz.veil.db.read() as session:
        owners = set(session.scalars(select(Grant.provider_id).where(Grant.id.in_(granted))))
    assert owners == {a.provider}
    datasets = {d["id"] for d in authz.ok(token, "GET", "/v1/datasets")}
    catalog = {e["dataset_id"] for e in authz.ok(token, "GET", "/v1/catalog")}
    assert datasets == catalog == {a.dataset}
    jobs = authz.ok(token, "GET", "/v1/jobs", params={"limit": 500})
    codes = authz.ok(token, "GET", "/v1/code-requests")
    assert jobs and {j["provider_id"] for j in jobs} == {a.provider}
    assert codes and {c["provider_id"] for c in codes} == {a.provider}
    assert all(j.get("progress") is None or "loss" not in j["progress"] for j in jobs)


def test_a_provider_without_grant_sees_nothing(authz: AuthzWorld) -> None:
    token = authz.tokens["provider-nogrant"]
    for path in ("/v1/datasets", "/v1/catalog", "/v1/grants", "/v1/code-requests"):
        assert authz.ok(token, "GET", path) == [], path
    # Its jobs, if the matrix ran first: its own denied submissions, nothing else.
    me = authz.ok(token, "GET", "/v1/me")["id"]
    jobs = authz.ok(token, "GET", "/v1/jobs", params={"limit": 500})
    assert {(j["provider_id"], j["status"]) for j in jobs} <= {(me, "denied")}


def test_a_scoped_officer_reads_nothing_of_other_tenants(authz: AuthzWorld) -> None:
    a, b, token = authz.a, authz.b, authz.tokens["officer-scoped"]
    events = authz.ok(token, "GET", "/v1/audit/events", params={"limit": 1000})
    assert events and {e["tenant_id"] for e in events} == {a.enterprise}
    params = {"tenant_id": b.enterprise, "limit": 1000}
    assert authz.ok(token, "GET", "/v1/audit/events", params=params) == []
    attention = authz.ok(token, "GET", "/v1/audit/attention")
    assert attention["failed_logins_included"] is False and attention["failed_logins"] == []
    assert {g["enterprise_id"] for g in attention["budget_burn"]} == {a.enterprise}
    assert {h["enterprise_id"] for h in attention["held_outputs"]} <= {a.enterprise}
    keys = authz.ok(token, "GET", "/v1/audit/keys")
    assert {t["tenant_id"] for t in keys["tenants"]} == {a.enterprise}
    export = authz.call(token, "GET", "/v1/audit/export")
    assert export.status_code == 200
    secrets_of_b = (b.enterprise, b.dataset, b.grant, b.job, b.queued_job, b.code, b.held_job)
    for text in (str(events), str(attention), str(keys), export.text):
        leaked = [i for i in secrets_of_b if i in text]
        assert not leaked, "a scoped officer was shown another tenant's ids"


def test_a_denial_does_not_tell_another_tenants_dataset_from_none(authz: AuthzWorld) -> None:
    """POST /v1/jobs on B's dataset and on an id that exists nowhere: the same reasons."""
    token = authz.tokens["provider"]
    answers = [
        authz.call(token, "POST", "/v1/jobs", json=job_body(authz.a, dataset_id))
        for dataset_id in (authz.b.dataset, "ds_doesnotexist")
    ]
    assert [a.status_code for a in answers] == [403, 403]
    assert answers[0].json()["reasons"] == answers[1].json()["reasons"]
    previews = [
        authz.call(token, "POST", "/v1/jobs/preview", json=job_body(authz.a, dataset_id)).json()
        for dataset_id in (authz.b.dataset, "ds_doesnotexist")
    ]
    assert previews[0] == previews[1] and previews[0]["allowed"] is False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/datasets/{}"),
        ("GET", "/v1/grants/{}"),
        ("GET", "/v1/jobs/{}"),
        ("GET", "/v1/code-requests/{}"),
        ("GET", "/v1/jobs/{}/held"),
    ],
)
def test_another_tenants_object_answers_like_a_missing_one(
    authz: AuthzWorld, method: str, path: str
) -> None:
    """404 for B's object and for an unknown id alike, with the same words but the id."""
    kind = {"datasets": "dataset", "grants": "grant", "code-requests": "code"}.get(
        path.split("/")[2], "held_job" if path.endswith("held") else "job"
    )
    token = authz.tokens["enterprise"]
    theirs = authz.b.ids(kind)
    missing = theirs[:-4] + "zzzz"
    answers = [authz.call(token, method, path.format(i)) for i in (theirs, missing)]
    assert [a.status_code for a in answers] == [404, 404]
    details = [
        a.json()["detail"].replace(i, "ID") for a, i in zip(answers, (theirs, missing), strict=True)
    ]
    assert details[0] == details[1]


# -- authentication: every way of sending a wrong credential is 401, and audited ------------

BAD_HEADERS = {
    "unknown token, lowercase scheme": {"Authorization": "bearer veil_" + "b" * 43},
    "scheme only": {"Authorization": "Bearer"},
    "basic scheme": {"Authorization": "Basic dmVpbDp2ZWls"},
    "token without scheme": {"Authorization": "veil_" + "a" * 43},
    "not a veil token": {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."},
    "overlong token": {"Authorization": "Bearer veil_" + "a" * 400},
    "two tokens": {"Authorization": "Bearer veil_aaaa veil_bbbb"},
}


@pytest.mark.parametrize(
    "variant", [*BAD_HEADERS, "revoked token", "expired token", "token in the query"]
)
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/me"), ("GET", "/v1/grants"), ("POST", "/v1/jobs")]
)
def test_a_bad_credential_is_refused_and_audited(
    authz: AuthzWorld, variant: str, method: str, path: str
) -> None:
    kwargs: dict[str, Any] = {"headers": BAD_HEADERS.get(variant, {})}
    if variant in ("revoked token", "expired token"):
        token = authz.ok(authz.operator_token, "POST", f"/v1/principals/{authz.a.provider}/tokens")
        with authz.veil.db.transaction() as session:
            spent = session.scalars(
                select(ApiToken).where(ApiToken.token_hash == hash_token(token["token"]))
            ).one()
            if variant == "revoked token":
                spent.revoked_at = authz.veil.clock()
            else:
                spent.expires_at = authz.veil.clock() - timedelta(seconds=1)
        kwargs["headers"] = {"Authorization": f"Bearer {token['token']}"}
    if variant == "token in the query":
        kwargs["params"] = {"token": authz.a.provider_token, "access_token": authz.a.provider_token}
    if method == "POST":
        kwargs["json"] = job_body(authz.a, authz.a.dataset)
    with authz.veil.db.read() as session:
        last = session.scalar(select(func.max(AuditEvent.seq)))
    before = authz.state()
    answer = authz.http.request(method, path, **kwargs)
    assert answer.status_code == 401, answer.text[:200]
    assert answer.headers.get("www-authenticate") == "Bearer"
    assert authz.state() == before
    with authz.veil.db.read() as session:
        actions = list(session.scalars(select(AuditEvent.action).where(AuditEvent.seq > last)))
    assert actions == ["auth.failed"]
