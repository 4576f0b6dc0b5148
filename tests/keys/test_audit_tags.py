"""Data-key requests name their object in the key server's own audit log (X-Veil-Object)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from keys import OBJECT_HEADER, KeyService, LocalKeyServer, key_operation, object_label
from keys.vault import _operation

pytestmark = pytest.mark.integration


def _entries(log: Path, namespace: str) -> list[dict[str, Any]]:
    """Response entries of the key server's audit log in ``namespace``."""
    found = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry["type"] == "response" and (
            entry["request"].get("namespace", {}).get("path") == f"{namespace}/"
        ):
            found.append(entry)
    return found


def test_data_keys_are_tagged_with_their_object_in_clear(
    keys: KeyService, key_server: LocalKeyServer
) -> None:
    tenant = f"tag-{uuid.uuid4().hex[:8]}"
    keys.create_tenant(tenant)
    wrapped, ciphertext = keys.encrypt_bytes(tenant, "dataset:ds_1", 3, b"rows")
    assert keys.decrypt_bytes(tenant, "dataset:ds_1", 3, wrapped, ciphertext) == b"rows"

    namespace = keys.tenant_location(tenant).namespace
    by_path: dict[str, list[Any]] = {}
    for entry in _entries(key_server.audit_log, namespace):
        headers = entry["request"].get("headers") or {}
        by_path.setdefault(entry["request"]["path"], []).append(headers.get("x-veil-object"))
    assert by_path["transit/datakey/plaintext/dek"] == [["dataset:ds_1/3"]]
    assert by_path["transit/decrypt/dek"] == [["dataset:ds_1/3"]]
    assert all(tag is None for tag in by_path["transit/keys/dek"])  # provisioning: untagged


def test_labels_are_header_safe_and_scoped_to_the_block() -> None:
    assert object_label("dataset:ds_1", 2) == "dataset:ds_1/2"
    assert object_label("odd id/with\nnewline", 1) == "odd%20id%2Fwith%0Anewline/1"
    with pytest.raises(ValueError, match="label"), key_operation("two\nlines"):
        pass
    with key_operation("outer/1"):
        with key_operation("inner/2"):
            assert _operation.get() == "inner/2"
        assert _operation.get() == "outer/1"
    assert _operation.get() is None
    assert OBJECT_HEADER == "X-Veil-Object"
