"""The node protocol's documents, for its OpenAPI schema (``docs/nodes.md``).

The routes read the exact bytes the node signed (``keys.node_auth``), so these models
describe the bodies; the checks themselves are in ``sandbox.nodes``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class VersionDoc(BaseModel):
    version: int
    rows_public: int = Field(description="The row count rounded to two significant figures.")
    created_at: str


class DatasetDoc(BaseModel):
    """A catalog entry: the declaration and public counts, never data."""

    id: str
    name: str
    declaration: dict[str, Any]
    classification: dict[str, Any] | None = None
    epsilon_cap: float
    delta_cap: float
    versions: list[VersionDoc]


class SignedDoc(BaseModel):
    """A document and the node key server's signature over its canonical JSON
    (``veil-ed25519:v<key version>:<base64>``)."""

    kind: str | None = Field(default=None, description="release or fail (answers only)")
    document: dict[str, Any] = Field(
        description="grant: id, enterprise_id, provider_id, dataset_ids, columns, tiers, "
        "purposes, valid_from, valid_until, min_group_size, epsilon_budget, delta_budget "
        "(integer units), revoked_at, node_id. release: job_id, query_sha256, result, "
        "output_check, data_read_at, audit {events, head_seq, head_hash}, model "
        "{sha256, base64} (tier 4), node_id. fail: job_id, reason, refused, data_read_at, "
        "node_id. code_decision: id, sha256 (of the source the node reviewed), approved, "
        "reason, node_id. equipment_liveness: days [{day, configured, online}] (finished "
        "days, counts only), node_id."
    )
    signature: str


class LivenessAnswer(BaseModel):
    """How many of the report's days were new or changed (the others were held already)."""

    changed: int


class SigningKeysDoc(BaseModel):
    """Every version of the node key server's signing public key, oldest first: each a
    ``# veil-<algorithm> key version N`` line and its PEM block (``keys.signing``)."""

    signing_keys: str


class SigningKeysAnswer(BaseModel):
    """The versions this publication added (none when the control plane had them all) and
    every version it now holds."""

    added: list[int]
    versions: list[int]


class JobDoc(BaseModel):
    """A job handed to the node; it decides it again against its own grants and ledger."""

    id: str
    provider_id: str
    enterprise_id: str | None
    dataset_id: str
    dataset_version: int | None
    grant_id: str | None
    purpose: str
    tier: int
    query: dict[str, Any]
    query_sha256: str
    epsilon: float
    delta: float
    created_at: str


class CodeRequestDoc(BaseModel):
    """A pending tier-5 code request on the node's data: the node checks it against its
    own grants, runs it on the mock, and its enterprise reviews it there."""

    id: str
    provider_id: str
    dataset_id: str
    purpose: str
    source: str
    sha256: str
    created_at: str


def body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` naming ``model`` as the JSON request body (its nested models
    inlined: OpenAPI has no ``$defs`` of its own in a request body)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(value: Any) -> Any:
        if isinstance(value, dict):
            ref = value.get("$ref", "")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in value.items()}
        if isinstance(value, list):
            return [inline(v) for v in value]
        return value

    content = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": True, "content": content}}
