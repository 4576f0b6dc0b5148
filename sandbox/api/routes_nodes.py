"""Enterprise nodes: the operator's registry (``/v1/nodes``) and the node protocol
(``/node/v1``, requests signed by the node, ``keys.node_auth``; ``docs/nodes.md``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from i18n import Msg
from keys.node_auth import TASKS_AT_HEADER, WAKE_HEADER, RequestRejected
from policies.capabilities import Capability, require
from policies.errors import InvalidRequest, Unauthenticated
from sandbox.api.deps import PrincipalDep, VeilDep, get_veil
from sandbox.api.schemas import NAME_LENGTH, SLUG_LENGTH, Input
from sandbox.collaborations import proposals, runs
from sandbox.nodes import code, feed, liveness, mirror, registry
from sandbox.nodes import letters as node_letters
from sandbox.nodes.schemas import (
    CodeRequestDoc,
    DatasetDoc,
    JobDoc,
    LivenessAnswer,
    SignedDoc,
    SigningKeysAnswer,
    SigningKeysDoc,
    body,
)
from sandbox.runtime.veil import Veil
from sandbox.store.node_models import Node

router = APIRouter(tags=["nodes"])
MAX_CLAIM_WAIT_S = 20.0  # the longest a claim may wait for a job (a long poll)
MAX_SINCE = 4_102_444_800.0  # a claim's ``since`` (Unix seconds) is before 2100


class NodeEnterpriseIn(Input):
    name: str = Field(min_length=1, max_length=NAME_LENGTH)
    slug: str = Field(min_length=1, max_length=SLUG_LENGTH)


class EnrolIn(Input):
    code: str = Field(min_length=8, max_length=200)
    identity_key: str = Field(min_length=1, max_length=4000)
    signing_key: str = Field(min_length=1, max_length=4000)


@router.post("/v1/nodes", status_code=status.HTTP_201_CREATED)
def create_node_enterprise(
    body: NodeEnterpriseIn, veil: VeilDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Create an enterprise whose data and keys live on its own node; the one-time
    enrolment code (shown once) is what `veil node init --enrol CODE` takes on the node."""
    made = registry.create_node_enterprise(veil, caller, body.name, body.slug)
    return {
        "enterprise": {"id": made.enterprise.id, "name": made.enterprise.name,
                       "slug": made.enterprise.slug},
        "node": made.node.summary(),
        "enrolment_code": made.code,
    }  # fmt: skip


@router.get("/v1/nodes")
def list_nodes(veil: VeilDep, caller: PrincipalDep) -> list[dict[str, object]]:
    """Every node and when it was last heard from (operators)."""
    require(caller, Capability.MANAGE_PRINCIPALS)
    with veil.db.read() as session:
        return [n.summary() for n in session.scalars(select(Node).order_by(Node.created_at))]


@router.post("/v1/nodes/{enterprise_id}/enrolment-code")
def new_enrolment_code(enterprise_id: str, veil: VeilDep, caller: PrincipalDep) -> dict[str, str]:
    """A fresh enrolment code for a node not yet enrolled (the previous one stops working)."""
    return {"enrolment_code": registry.new_enrolment_code(veil, caller, enterprise_id)}


@router.post("/node/v1/enrol")
def enrol(body: EnrolIn, veil: VeilDep) -> dict[str, Any]:
    """A node enrols once with the operator's code and its two public keys."""
    try:
        node, enterprise = registry.enrol(veil, body.code, body.identity_key, body.signing_key)
    except RequestRejected as exc:
        raise Unauthenticated(exc.reason, code="enrolment_refused") from None
    return {
        "node_id": node.id,
        "enterprise": {"id": enterprise.id, "name": enterprise.name, "slug": enterprise.slug},
        "control_plane_key": veil.keys.signing_public_key().to_pem(),
    }


class Signed:
    """A request signed by an enrolled node: the node, and the body's JSON."""

    def __init__(self, node: Node, body: Any) -> None:
        self.node, self.body = node, body


async def signed_request(request: Request, veil: Annotated[Veil, Depends(get_veil)]) -> Signed:
    """Authenticate the node's signature over this exact request (401 otherwise)."""
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    query = request.url.query  # signed with the path: a long poll's wait is the node's
    path = request.url.path + (f"?{query}" if query else "")
    try:
        node = await run_in_threadpool(
            registry.authenticate, veil, request.method, path, body, headers
        )
    except RequestRejected as exc:
        raise Unauthenticated(exc.reason, code="node_unauthenticated") from None
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        raise InvalidRequest(Msg("the request body is not JSON")) from None
    return Signed(node, parsed)


SignedDep = Annotated[Signed, Depends(signed_request)]


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(Msg("the request body must be a JSON object"))
    return value


@router.get("/node/v1/providers")
def providers(veil: VeilDep, signed: SignedDep) -> list[dict[str, Any]]:
    """The providers an enterprise may grant to (ids and names)."""
    return mirror.providers(veil)


@router.put("/node/v1/signing-keys", response_model=SigningKeysAnswer,
            openapi_extra=body(SigningKeysDoc))  # fmt: skip
def publish_signing_keys(veil: VeilDep, signed: SignedDep) -> dict[str, list[int]]:
    """The node's signing public keys, every version: taken only when they extend those the
    control plane holds (same keys for the versions it has, newer versions added), ``409``
    otherwise; the documents the node signs are checked against them."""
    pem = _object(signed.body).get("signing_keys")
    if not isinstance(pem, str):
        raise InvalidRequest(Msg("'signing_keys' must be the keys' PEM text"))
    published = registry.publish_signing_keys(veil, signed.node, pem)
    return {"added": published.added, "versions": published.versions}


@router.put("/node/v1/datasets/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT,
            openapi_extra=body(DatasetDoc))  # fmt: skip
def publish_dataset(dataset_id: str, veil: VeilDep, signed: SignedDep) -> Response:
    """Publish a dataset's catalog entry: its declaration and public row counts, no data."""
    doc = _object(signed.body)
    if doc.get("id") != dataset_id:
        raise InvalidRequest(Msg("the body's id is not the path's"))
    try:
        mirror.publish_dataset(veil, signed.node, doc)
    except (KeyError, TypeError, ValueError):
        raise InvalidRequest(Msg("the dataset document is incomplete")) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/node/v1/grants/{grant_id}", status_code=status.HTTP_204_NO_CONTENT,
            openapi_extra=body(SignedDoc))  # fmt: skip
def publish_grant(grant_id: str, veil: VeilDep, signed: SignedDep) -> Response:
    """Publish a grant the enterprise made on its node, signed by the node's key server."""
    body = _object(signed.body)
    if _object(body.get("document")).get("id") != grant_id:
        raise InvalidRequest(Msg("the body's id is not the path's"))
    try:
        mirror.publish_grant(veil, signed.node, body)
    except (KeyError, TypeError, ValueError):
        raise InvalidRequest(Msg("the grant document is incomplete")) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/node/v1/letters/{grant_id}", status_code=status.HTTP_204_NO_CONTENT,
            openapi_extra=body(SignedDoc))  # fmt: skip
def publish_letter(grant_id: str, veil: VeilDep, signed: SignedDep) -> Response:
    """Publish the commitment letter of a grant the node published, as the enterprise
    signed it on the node (the node's key server), inside a document the node signs."""
    try:
        node_letters.publish_letter(veil, signed.node, grant_id, _object(signed.body))
    except (KeyError, TypeError, ValueError):
        raise InvalidRequest(Msg("the letter document is incomplete")) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/node/v1/liveness", response_model=LivenessAnswer,
            openapi_extra=body(SignedDoc))  # fmt: skip
def report_liveness(veil: VeilDep, signed: SignedDep) -> dict[str, int]:
    """The node's equipment online rate: each finished day's counts of devices configured
    and online (never a device's name), signed by the node's key server; the last report of
    a day is kept, for the bureau's ``equipment`` table only."""
    return {"changed": liveness.accept_report(veil, signed.node, _object(signed.body))}


@router.get("/node/v1/letters/signatures")
def letter_signatures(veil: VeilDep, signed: SignedDep) -> list[dict[str, str]]:
    """The providers' signatures of the node's letters (the node checks each itself)."""
    return node_letters.signed_letters(veil, signed.node)


_CLAIMED: dict[int | str, dict[str, Any]] = {
    200: {"model": JobDoc},
    204: {"description": "no job waiting"},
}


@router.post("/node/v1/jobs/claim", response_model=None, responses=_CLAIMED)
async def claim_job(
    veil: VeilDep,
    signed: SignedDep,
    wait: Annotated[float, Query(ge=0, le=MAX_CLAIM_WAIT_S)] = 0.0,
    since: Annotated[float | None, Query(ge=0, le=MAX_SINCE)] = None,
) -> dict[str, Any] | Response:
    """The oldest queued job on this node's datasets, now running for the node; with
    ``wait``, a long poll: answered as soon as one is queued (204 at once when a code
    request for the node was submitted meanwhile, or when a collaboration run asks the node
    to answer a phase that opened since, with ``Veil-Wake: code`` or ``collaboration``), 204
    after ``wait`` seconds without one.  ``since``: when the node last read its
    collaboration tasks (the ``Veil-Tasks-At`` they came with); a phase opened after it
    returns the claim (without it: a phase opened since, or just before, the claim).  A
    waiting claim holds no server thread: it waits in the event loop, woken by a submission
    in this process, and looks again every 0.5 s for other processes'."""
    deadline, started = time.monotonic() + wait, veil.clock()
    recent = _tasks_seen(started, since)
    woke, first = "", True
    with veil.node_wakeup() as woken:
        while True:
            woken.clear()  # before looking: a submission from now on wakes the wait below
            job = None
            # Looked at again: the write lock only when a job is queued (N nodes wait, and
            # every wake or 0.5 s each looks).
            if first or await run_in_threadpool(feed.queued, veil, signed.node):
                job = await run_in_threadpool(feed.claim, veil, signed.node)
            first = False
            left = deadline - time.monotonic()
            if job is not None or left <= 0:
                break
            if wait and await run_in_threadpool(code.waiting_since, veil, signed.node, started):
                woke = "code"  # the node takes the new code request in its next round
                break
            if wait and await run_in_threadpool(runs.asks_since, veil, signed.node, recent):
                woke = "collaboration"  # the node answers the phase in its next round
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=min(0.5, left))
    if job is not None:
        return job
    return Response(status_code=status.HTTP_204_NO_CONTENT,
                    headers={WAKE_HEADER: woke} if woke else None)  # fmt: skip


def _tasks_seen(started: datetime, since: float | None) -> datetime:
    """Since when a waiting claim looks for collaboration phases: the node's last read of
    its tasks (never later than the claim), or a grace before the claim began."""
    if since is None:
        return started - timedelta(seconds=runs.CLAIM_GRACE_S)
    return min(datetime.fromtimestamp(since, UTC), started)


@router.post("/node/v1/jobs/{job_id}/taken", status_code=status.HTTP_204_NO_CONTENT)
def job_taken(job_id: str, veil: VeilDep, signed: SignedDep) -> Response:
    """The node has the job it claimed (sent once it took it); a claimed job not
    acknowledged within 30 s is queued again (``409 not_claimed`` afterwards)."""
    feed.taken(veil, signed.node, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/node/v1/jobs/running", response_model=list[JobDoc])
def running_jobs(veil: VeilDep, signed: SignedDep) -> list[dict[str, Any]]:
    """The jobs running under this node's claim (a restarted node takes those it lost)."""
    return feed.running(veil, signed.node)


@router.post("/node/v1/jobs/{job_id}/release", openapi_extra=body(SignedDoc))
def release_job(job_id: str, veil: VeilDep, signed: SignedDep) -> dict[str, str]:
    """The node's signed release of a job's result (at most once; a repeat is answered
    "already")."""
    outcome = feed.accept_release(veil, signed.node, job_id, _object(signed.body))
    if outcome != "already":
        veil.job_ended(job_id)  # committed: wake the provider's requests waiting for it
    return {"outcome": outcome}


@router.post("/node/v1/jobs/{job_id}/progress", status_code=status.HTTP_204_NO_CONTENT)
def job_progress(job_id: str, veil: VeilDep, signed: SignedDep) -> Response:
    """A training job's epoch on the node (``{"epoch": 3, "epochs": 5}``; never its loss)."""
    feed.progress(veil, signed.node, job_id, _object(signed.body))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/node/v1/jobs/{job_id}/fail", openapi_extra=body(SignedDoc))
def fail_job(job_id: str, veil: VeilDep, signed: SignedDep) -> dict[str, str]:
    """The node's signed refusal or failure of a job, with its reason."""
    outcome = feed.accept_failure(veil, signed.node, job_id, _object(signed.body))
    if outcome != "already":
        veil.job_ended(job_id)  # committed: wake the provider's requests waiting for it
    return {"outcome": outcome}


@router.post("/node/v1/jobs/{job_id}/held", status_code=status.HTTP_204_NO_CONTENT)
def job_held(job_id: str, veil: VeilDep, signed: SignedDep) -> Response:
    """The node's output checks held a tier-5 job's output for its enterprise to decide
    (on the node); the job shows as held until the node's release or failure comes."""
    code.held(veil, signed.node, job_id)
    veil.job_ended(job_id)  # held for its enterprise: a waiting request answers
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/node/v1/code-requests", response_model=list[CodeRequestDoc])
def pending_code(
    veil: VeilDep,
    signed: SignedDep,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> list[dict[str, Any]]:
    """The oldest pending code requests (tier 5) on this node's datasets, after the id
    ``after``: the node checks each against its own grants and runs it on the mock."""
    return code.pending(veil, signed.node, after)


@router.post("/node/v1/code-requests/{code_id}/decision", openapi_extra=body(SignedDoc))
def code_decision(code_id: str, veil: VeilDep, signed: SignedDep) -> dict[str, str]:
    """The enterprise's decision on a code request, made on its node and signed there
    (``{"kind": "code_decision", "id", "sha256", "approved", "reason"}``)."""
    return {"outcome": code.accept_decision(veil, signed.node, code_id, _object(signed.body))}


@router.get("/node/v1/collaborations")
def open_collaborations(veil: VeilDep, signed: SignedDep) -> list[dict[str, Any]]:
    """The open proposals this node's enterprise may join (with the exact spec it pins)."""
    return proposals.open_for_nodes(veil)


@router.put("/node/v1/collaborations/{collaboration_id}/membership",
            openapi_extra=body(SignedDoc))  # fmt: skip
def collaboration_membership(
    collaboration_id: str, veil: VeilDep, signed: SignedDep
) -> dict[str, str]:
    """The enterprise joins (naming the spec's SHA-256) or leaves, signed by its node."""
    status = proposals.set_membership(veil, signed.node, collaboration_id, _object(signed.body))
    return {"status": status}


@router.get("/node/v1/collaborations/tasks")
def collaboration_tasks(
    veil: VeilDep, signed: SignedDep, response: Response
) -> list[dict[str, Any]]:
    """What this node is asked now in each run it takes part in (one phase each); the
    ``Veil-Tasks-At`` header is when they were read (a waiting claim's ``since``)."""
    read_at = veil.clock()  # before the read: a phase opened after it is not in the answer
    response.headers[TASKS_AT_HEADER] = f"{read_at.timestamp():.6f}"
    return runs.tasks(veil, signed.node)


@router.post("/node/v1/collaborations/runs/{run_id}/{phase}",
             status_code=status.HTTP_204_NO_CONTENT)  # fmt: skip
def collaboration_answer(run_id: str, phase: str, veil: VeilDep, signed: SignedDep) -> Response:
    """This node's answer to one phase of a run (once)."""
    runs.answer(veil, signed.node, run_id, phase, signed.body)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
