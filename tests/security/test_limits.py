"""Request limits on a real API over loopback: body sizes (413), rates and failed logins (429)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from sandbox.api.limits import AUTH_FAILED, MAX_BUCKETS, RequestGuard, TokenBuckets
from sandbox.client import VeilClient
from sandbox.config.settings import Settings
from sandbox.console.routes_enterprise import FORM_SLACK
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from tests.sandbox.conftest import World

MiB = 2**20


def limited(veil: Veil, **limits: Any) -> ApiThread:
    """A second API server on the same core, with these limits instead of the defaults."""
    return ApiThread(veil.settings.model_copy(update=limits), veil)


def bearer(client: VeilClient) -> dict[str, str]:
    return {"authorization": client._http.headers["authorization"]}


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body of ``total`` bytes sent chunked: httpx gives a generator no Content-Length."""
    while total > 0:
        yield b" " * min(size, total)
        total -= size


def assert_too_large(response: httpx.Response, limit: int, setting: str) -> None:
    assert response.status_code == 413, response.text
    body = response.json()
    assert setting in body["detail"]
    assert body["problems"] == [
        {"location": "body", "expected": f"at most {limit} bytes ({setting})"}
    ]
    assert response.headers["x-content-type-options"] == "nosniff"


# --- Body sizes ----------------------------------------------------------------------------


def test_an_oversized_json_body_is_refused_by_its_declared_length(world: World) -> None:
    padding = "x" * MiB  # the default VEIL_MAX_REQUEST_BYTES is 1 MiB
    body = json.dumps({"name": "too big", "padding": padding}).encode()
    before = len(world.acme.list_grants())
    response = httpx.post(f"{world.url}/v1/grants", content=body, headers=bearer(world.acme))
    assert_too_large(response, MiB, "VEIL_MAX_REQUEST_BYTES")
    assert len(world.acme.list_grants()) == before


def test_an_oversized_chunked_body_is_cut_off_as_it_arrives(world: World, veil: Veil) -> None:
    with limited(veil, max_request_bytes=100_000) as url:
        auth = bearer(world.acme) | {"content-type": "application/json"}
        sent = httpx.post(f"{url}/v1/grants", content=chunks(3 * MiB), headers=auth)
        assert "content-length" not in sent.request.headers
        assert_too_large(sent, 100_000, "VEIL_MAX_REQUEST_BYTES")
        # A chunked body within the limit reaches the route (which finds it is not a grant).
        small = httpx.post(f"{url}/v1/grants", content=chunks(1000), headers=auth)
        assert small.status_code == 422, small.text
        # The same connection goes on serving after a refusal.
        with httpx.Client(base_url=url, headers=auth) as client:
            assert client.post("/v1/grants", content=chunks(MiB)).status_code == 413
            assert client.get("/v1/me").status_code == 200


def test_uploads_have_their_own_limit(world: World, veil: Veil) -> None:
    size = len(world.csv)
    path = f"/v1/datasets/{world.dataset_id}/versions"
    auth = bearer(world.acme) | {"content-type": "text/csv"}
    with limited(veil, max_upload_bytes=size - 1, max_request_bytes=1024) as url:
        declared = httpx.post(url + path, content=world.csv, headers=auth)
        assert_too_large(declared, size - 1, "VEIL_MAX_UPLOAD_BYTES")
        streamed = httpx.post(url + path, content=chunks(size, 4096), headers=auth)
        assert_too_large(streamed, size - 1, "VEIL_MAX_UPLOAD_BYTES")
        # The console's upload forms: the same limit, plus room for the form's fields.
        console = f"{url}/console/datasets/{world.dataset_id}/versions"
        form = {"content-type": "multipart/form-data; boundary=x"}
        over = httpx.post(console, content=b" " * (size + FORM_SLACK), headers=form)
        assert over.status_code == 413
        assert "VEIL_MAX_UPLOAD_BYTES" in over.text
        within = httpx.post(console, content=b" " * (size + 1024), headers=form)
        assert within.status_code != 413  # past the general limit, within the upload's
    versions = world.acme.get_dataset(world.dataset_id)["latest_version"]["version"]
    # An upload far above the general limit but within VEIL_MAX_UPLOAD_BYTES is stored.
    with limited(veil, max_upload_bytes=size, max_request_bytes=1024) as url:
        stored = httpx.post(url + path, content=world.csv, headers=auth)
        assert stored.status_code == 201, stored.text
        assert stored.json()["version"] == versions + 1


# --- Rates ---------------------------------------------------------------------------------


def test_a_token_over_its_rate_gets_429_then_recovers(world: World, veil: Veil) -> None:
    # Slow refills, so that a loaded machine cannot earn a token back between the requests.
    with limited(veil, rate_limit_per_s=0.25, rate_limit_burst=3) as url:
        provider = bearer(world.provider)
        assert [httpx.get(f"{url}/v1/me", headers=provider).status_code for _ in range(3)] == [
            200
        ] * 3
        refused = httpx.get(f"{url}/v1/me", headers=provider)
        assert refused.status_code == 429
        assert "VEIL_RATE_LIMIT_PER_S" in refused.json()["detail"]
        assert refused.headers["cache-control"] == "no-store"
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 4
        # Another token has its own bucket.
        assert httpx.get(f"{url}/v1/me", headers=bearer(world.acme)).status_code == 200
        time.sleep(wait)
        assert httpx.get(f"{url}/v1/me", headers=provider).status_code == 200


def test_requests_without_a_token_are_limited_per_address(veil: Veil) -> None:
    with limited(veil, rate_limit_per_s=0.25, rate_limit_burst=2) as url:
        assert [httpx.get(f"{url}/v1/health").status_code for _ in range(2)] == [200, 200]
        refused = httpx.get(f"{url}/v1/health")
        assert refused.status_code == 429
        assert "from this address" in refused.json()["detail"]
        time.sleep(int(refused.headers["retry-after"]))
        assert httpx.get(f"{url}/v1/health").status_code == 200


def test_failed_logins_are_limited_per_address_without_reaching_the_database(
    world: World, veil: Veil
) -> None:
    def failures() -> int:
        return len(world.operator.audit_events(action="auth.failed", limit=1000))

    before = failures()
    wrong = {"authorization": "Bearer veil_not-a-token"}
    with limited(veil, auth_failures_per_min=15, auth_failure_burst=3) as url:
        provider = bearer(world.provider)
        assert httpx.get(f"{url}/v1/me", headers=provider).status_code == 200
        statuses = [httpx.get(f"{url}/v1/me", headers=wrong).status_code for _ in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        refused = httpx.get(f"{url}/v1/health")
        assert refused.status_code == 429
        assert "VEIL_AUTH_FAILURE_BURST" in refused.json()["detail"]
        # A token that worked from here before keeps working; a new one waits like everyone.
        assert httpx.get(f"{url}/v1/me", headers=provider).status_code == 200
        assert httpx.get(f"{url}/v1/me", headers=bearer(world.acme)).status_code == 429
        time.sleep(int(refused.headers["retry-after"]))
        assert httpx.get(f"{url}/v1/me", headers=wrong).status_code == 401
    # The refused attempts never reached authentication, so they wrote no audit event.
    assert failures() == before + 4


def test_console_errors_before_a_route_are_pages(world: World, veil: Veil) -> None:
    with limited(veil, max_request_bytes=1000) as url:
        response = httpx.post(f"{url}/console/grants", content=b"a=" + b"b" * 2000)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert "VEIL_MAX_REQUEST_BYTES" in response.text
    assert response.headers["content-security-policy"].startswith("default-src 'none'")


# --- The buckets themselves, on an injected clock ------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_grants_its_burst_then_its_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=4, burst=2, clock=clock)
    assert [buckets.take("k"), buckets.take("k")] == [0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.25)
    assert buckets.wait("k") == pytest.approx(0.25)
    assert buckets.take("other") == 0.0
    clock.now += 0.25
    assert buckets.take("k") == 0.0
    clock.now += 100
    assert [buckets.take("k"), buckets.take("k")] == [0.0, 0.0]  # never more than the burst
    assert buckets.take("k") > 0


def test_a_zero_rate_turns_the_limit_off() -> None:
    buckets = TokenBuckets(rate=0, burst=1)
    assert all(buckets.take("k") == 0.0 for _ in range(100))
    # What authenticated is remembered all the same (failed logins may still be limited).
    buckets.set_trusted("k", True)
    assert buckets.trusted("k") and not buckets.trusted("other")
    buckets.set_trusted("k", False)
    assert not buckets.trusted("k")


def test_memory_stays_bounded_under_a_flood_of_new_keys() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=1, clock=clock)
    for i in range(MAX_BUCKETS + 10):
        buckets.take(str(i))
    assert len(buckets._buckets) <= MAX_BUCKETS
    clock.now += 10  # every bucket is full again: forgetting them changes nothing
    buckets.take("new")
    assert buckets.take("new") > 0  # the newest key kept its state


# --- The guard in-process, around a stand-in app -------------------------------------------


def run_guard(guard: RequestGuard, scope: dict[str, Any], body: list[bytes]) -> dict[str, Any]:
    """Send ``body`` (as chunks) through ``guard``; what was pulled, and the answer."""
    pulled: list[bytes] = []
    sent: list[Message] = []

    async def receive() -> Message:
        chunk = body[len(pulled)]
        pulled.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": len(pulled) < len(body)}

    async def send(message: Message) -> None:
        sent.append(message)

    # In a thread of its own: in a full run, the browser tests' Playwright keeps an event loop
    # running in the main thread, where asyncio.run() refuses to start another.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, guard(scope, receive, send)).result()
    start = sent[0]
    return {"pulled": sum(map(len, pulled)), "status": start["status"], "body": sent[1]["body"]}


def http_scope(*headers: tuple[bytes, bytes], path: str = "/v1/grants") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "scheme": "http",
        "client": ("192.0.2.7", 50000),
        "headers": list(headers),
    }


def test_a_chunked_body_is_not_read_past_its_limit(tmp_path: Path) -> None:
    seen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        size, more = 0, True
        while more:  # an app that would buffer everything it is given
            message = await receive()
            size += len(message["body"])
            more = message["more_body"]
            seen.append(size)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    settings = Settings(data_dir=tmp_path, max_request_bytes=1000)
    answer = run_guard(RequestGuard(app, settings), http_scope(), [b"x" * 400] * 10)
    assert answer["status"] == 413
    assert answer["pulled"] == 1200  # the third chunk passed the limit: nothing more was read
    assert seen == [400, 800]  # and the app never got it
    assert json.loads(answer["body"])["problems"][0]["expected"] == (
        "at most 1000 bytes (VEIL_MAX_REQUEST_BYTES)"
    )


def test_a_refusal_flagged_in_the_scope_counts_as_a_failed_login(tmp_path: Path) -> None:
    async def console(scope: Scope, receive: Receive, send: Send) -> None:
        scope[AUTH_FAILED] = True  # a stale session cookie: redirected to the login page
        await send({"type": "http.response.start", "status": 303, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    settings = Settings(data_dir=tmp_path, auth_failures_per_min=1, auth_failure_burst=2)
    guard = RequestGuard(console, settings, credential_cookie="veil_console")
    cookie = (b"cookie", b"theme=dark; veil_console=stale")
    statuses = [run_guard(guard, http_scope(cookie), [b""])["status"] for _ in range(3)]
    assert statuses == [303, 303, 429]


def test_each_node_has_its_own_bucket_and_forged_nodes_hit_the_failure_limit(
    tmp_path: Path,
) -> None:
    """Nodes behind one address (one NAT) do not share the anonymous bucket: a node's
    signed requests are limited per node, as a token's are.  Naming a node is no way around
    the limits: a request whose signature fails (401) counts as a failed login of its
    address, and the address is then refused whatever node it names."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        named = dict(scope["headers"]).get(b"veil-node", b"")
        status = 401 if named.startswith(b"forged") else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    settings = Settings(data_dir=tmp_path, rate_limit_per_s=0.001, rate_limit_burst=2,
                        auth_failures_per_min=0.001, auth_failure_burst=3)  # fmt: skip
    guard = RequestGuard(app, settings)

    def status(*headers: tuple[bytes, bytes]) -> int:
        return int(run_guard(guard, http_scope(*headers), [b""])["status"])

    node_a, node_b = (b"veil-node", b"node_a"), (b"veil-node", b"node_b")
    assert [status(node_a) for _ in range(3)] == [200, 200, 429]  # node A's own bucket
    assert [status(node_b) for _ in range(2)] == [200, 200]  # B is not A
    assert [status() for _ in range(2)] == [200, 200]  # nor is the anonymous one
    forged = [status((b"veil-node", f"forged-{i}".encode())) for i in range(5)]
    assert forged == [401, 401, 401, 429, 429]  # fresh node names: still the failure limit
