"""Reading OpenBao's file audit log (JSON lines): what was done to which key, when, why.

The log's response entries hold their request: time, namespace, path, operation,
the caller, and the request headers the server was told to audit in clear (Veil's
``X-Veil-Object``; see :func:`keys.key_operation`).  ``sandbox.keyaudit`` puts
these entries next to Veil's own audit events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from keys.vault import OBJECT_HEADER

_HMAC_PREFIX = "hmac-sha256:"
_WORTH_PARSING = re.compile(r'"mount_type":"transit"|"sys/(?:namespaces|mounts)/')


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    namespace: str  # without slashes at the ends; "" for the root namespace
    path: str  # relative to the namespace
    how: str  # create, read, update, delete, list
    transit: bool
    ok: bool
    header: str | None  # the X-Veil-Object value as logged
    request_id: str
    remote_address: str | None
    actor: str | None

    @property
    def label(self) -> str | None:
        """The object label, unless absent or HMAC'd by the key server."""
        hmac = self.header is not None and self.header.startswith(_HMAC_PREFIX)
        return None if hmac else self.header

    @property
    def data_key(self) -> bool:
        """A data key issued or decrypted (``<mount>/datakey/<kind>/<key>``, ``/decrypt/<key>``)."""
        parts = self.path.split("/")
        return self.transit and (parts[-2:-1] == ["decrypt"] or parts[-3:-2] == ["datakey"])


def read_entries(path: Path, since: datetime | None = None) -> Iterator[AuditEntry]:
    """The response entries (each holds its request) about transit, namespaces or mounts."""
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if '"type":"response"' not in line or not _WORTH_PARSING.search(line):
                continue  # a cheap filter before parsing JSON
            try:
                entry = _entry(json.loads(line))
            except (ValueError, TypeError, AttributeError, KeyError, IndexError):
                continue  # a line cut short by a crash, or not an audit entry
            if entry is not None and (since is None or entry.at >= since):
                yield entry


def _entry(raw: dict[str, Any]) -> AuditEntry | None:
    request = raw.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("path"), str):
        return None
    values = (request.get("headers") or {}).get(OBJECT_HEADER.lower()) or [None]
    return AuditEntry(
        at=datetime.fromisoformat(str(raw["time"])),
        namespace=str((request.get("namespace") or {}).get("path") or "").strip("/"),
        path=request["path"],
        how=str(request.get("operation") or ""),
        transit=request.get("mount_type") == "transit",
        ok=not raw.get("error"),
        header=None if values[0] is None else str(values[0]),
        request_id=str(request.get("id") or ""),
        remote_address=request.get("remote_address"),
        actor=(raw.get("auth") or {}).get("display_name"),
    )


def transit_operation(sub: str, how: str) -> str | None:
    """What a request to ``<transit mount>/<sub>`` did; None for reads."""
    if how in ("read", "list"):
        return None
    parts = sub.split("/")
    head = parts[0]
    if head == "datakey":
        return "datakey.generate" if parts[1:2] == ["plaintext"] else "datakey.wrapped"
    if head in ("decrypt", "encrypt", "rewrap"):
        return head
    if head == "keys" and len(parts) <= 2:
        return "key.delete" if how == "delete" else "key.create"
    if head == "keys":
        return f"key.{parts[2]}"  # rotate, config, trim
    return f"key.{head}" if head in ("export", "backup", "restore") else f"transit.{head}"


def parse_label(label: str | None) -> tuple[str, int] | None:
    """``dataset:ds_1/3`` -> ("dataset:ds_1", 3); None when absent or malformed."""
    object_id, _, version = (label or "").rpartition("/")
    if not object_id or not version.isdigit():
        return None
    return unquote(object_id), int(version)
