"""Reading OpenBao's file audit log (JSON lines): what was done to which key, policy or
login, when, and why.

The log's response entries hold their request: time, namespace, path, mount, operation,
the caller, and the request headers the server was told to audit in clear (Veil's
``X-Veil-Object``; see :func:`keys.key_operation`).  :func:`operation_of` names what each
request did to keys, policies or authentication, reads included (a key's configuration, an
export, a backup, a role id), and ``sandbox.oversight.keyaudit`` puts these next to Veil's own audit
events.
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

from keys.tenancy import KEK, PLATFORM_GM_MOUNT
from keys.vault import OBJECT_HEADER

_HMAC_PREFIX = "hmac-sha256:"
# A cheap filter before parsing JSON: transit, KV (the GM profile's SM4 key-encryption keys
# and SM2 signing key), and everything under sys/, auth/ or identity/.
_WORTH_PARSING = re.compile(
    rf'"mount_type":"(?:transit|kv)"|"path":"(?:sys|auth|identity|{PLATFORM_GM_MOUNT})/'
)
_READS = frozenset({"read", "list"})


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
    mount: str = ""  # the mount the path is in, relative to the namespace ("transit/", "sys/")
    mount_type: str = ""  # transit, ns_system, system, approle, token, identity, ...
    fields: frozenset[str] = frozenset()  # the request's data fields (their values HMAC'd)

    @property
    def label(self) -> str | None:
        """The object label, unless absent or HMAC'd by the key server."""
        hmac = self.header is not None and self.header.startswith(_HMAC_PREFIX)
        return None if hmac else self.header

    @property
    def data_key(self) -> bool:
        """A data key issued or decrypted (``<mount>/datakey/<kind>/<key>``, ``/decrypt/<key>``),
        or, under the GM profile, the random bytes of a new SM4 data key (``<mount>/random/<n>``)
        and a read of the SM4 key-encryption key that wraps or unwraps one."""
        if self.mount_type == "kv":
            return self.how == "read" and self.sub_path == f"data/{KEK}"
        parts = self.path.split("/")
        return self.transit and (
            parts[-2:-1] == ["decrypt"]
            or parts[-3:-2] == ["datakey"]
            or self.sub_path.startswith("random/")
        )

    @property
    def sub_path(self) -> str:
        """The path inside its mount (``keys/dek`` of ``transit/keys/dek``)."""
        return self.path.removeprefix(self.mount) if self.mount else self.path

    @property
    def operation(self) -> str | None:
        """What the request did to keys, policies or authentication, as reports name it
        (:func:`operation_of`); None when it touched none of them."""
        return operation_of(self)


def read_entries(path: Path, since: datetime | None = None) -> Iterator[AuditEntry]:
    """The response entries (each holds its request) about transit, sys/, auth/ or identity/."""
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
    namespace = str((request.get("namespace") or {}).get("path") or "")
    mount = str(request.get("mount_point") or "").removeprefix(namespace)
    return AuditEntry(
        at=datetime.fromisoformat(str(raw["time"])),
        namespace=namespace.strip("/"),
        path=request["path"],
        how=str(request.get("operation") or ""),
        transit=request.get("mount_type") == "transit",
        ok=not raw.get("error"),
        header=None if values[0] is None else str(values[0]),
        request_id=str(request.get("id") or ""),
        remote_address=request.get("remote_address"),
        actor=(raw.get("auth") or {}).get("display_name"),
        mount=mount,
        mount_type=str(request.get("mount_type") or ""),
        fields=frozenset(map(str, request.get("data") or {})),
    )


def operation_of(entry: AuditEntry) -> str | None:
    """What ``entry`` did to keys (transit), policies, authentication, namespaces, audit
    devices or the server's configuration; None for a request that touched none of them
    (a login, a look-up of one's own token or capabilities, a read of the server's state,
    another secrets engine).

    Names: ``datakey.generate``, ``decrypt``, ``key.read``, ``key.export``, ``key.config``,
    ``kek.read``, ``kek.write``, ``policy.write``, ``auth.enable``,
    ``approle.secret-id.create``, ``token.create``, ``namespace.create``, ``audit.enable``,
    ``sys.config``, ...
    """
    kind, mount, sub = entry.mount_type, entry.mount, entry.sub_path
    if not mount:  # a request the server answered before routing it (an error)
        head, _, sub = entry.path.partition("/")
        kind = {"sys": "system", "identity": "identity"}.get(head, kind)
        mount = f"{head}/"
    if kind == "transit":
        return transit_operation(sub, entry.how)
    if kind == "kv" and mount == f"{PLATFORM_GM_MOUNT}/":
        return signing_key_operation(sub, entry.how)
    if kind == "kv":
        return kv_operation(sub, entry.how, entry.fields)
    if kind in ("system", "ns_system"):
        return _system_operation(sub, entry.how)
    if kind == "identity":
        return None if entry.how in _READS else "identity.write"
    if mount.startswith("auth/"):
        return _auth_operation(kind, sub, entry.how)
    return None


def transit_operation(sub: str, how: str) -> str | None:
    """What a request to ``<transit mount>/<sub>`` did (reads included: a key's
    configuration, an export and a backup are all reads)."""
    parts = sub.split("/")
    head = parts[0]
    if head == "datakey":
        return "datakey.generate" if parts[1:2] == ["plaintext"] else "datakey.wrapped"
    if head in ("decrypt", "encrypt", "rewrap"):
        return head
    if head == "keys":
        if len(parts) == 1 or not parts[1]:
            return "key.list"
        if len(parts) == 2:
            return {"read": "key.read", "list": "key.list", "delete": "key.delete"}.get(
                how, "key.create"
            )
        return f"key.{parts[2]}"  # rotate, config, trim, import, import_version
    if head in ("export", "byok-export"):
        return "key.export"
    if head in ("backup", "restore"):
        return f"key.{head}"
    return f"transit.{head}"  # sign, verify, hmac, hash, random, wrapping_key, cache-config


def kv_operation(sub: str, how: str, fields: frozenset[str] = frozenset()) -> str | None:
    """What a request to ``<KV v2 mount>/<sub>`` (with data ``fields``) did to the GM
    profile's SM4 key-encryption key (secret ``kek``, ``keys._kek``); None for any other
    secret (another application's).

    A read of its key is ``kek.read.wrap`` (the newest version: a new data key wrapped, or
    a rewrap's target) or ``kek.read.unwrap`` (a named version: a stored data key
    unwrapped), as ``datakey.generate`` and ``decrypt`` are for transit; then
    ``kek.versions`` (its metadata), ``kek.write`` (a new version), ``kek.config``,
    ``kek.destroy``, ``kek.delete``, ``kek.undelete``.
    """
    head, _, name = sub.partition("/")
    if name != KEK:
        return None
    if head == "data":
        if how in _READS:
            return "kek.read.unwrap" if "version" in fields else "kek.read.wrap"
        return "kek.delete" if how == "delete" else "kek.write"
    if head == "metadata":
        if how in _READS:
            return "kek.versions"
        return "kek.delete" if how == "delete" else "kek.config"
    return f"kek.{head}"  # destroy, delete, undelete, subkeys


def signing_key_operation(sub: str, how: str) -> str:
    """What a request to Veil's own KV v2 mount of the GM profile's SM2 signing key
    (``<mount>/<sub>``) did: ``secret.read`` (the key in clear),
    ``secret.write``, ``secret.delete``, ``secret.metadata.read`` / ``.write``, ..."""
    head = sub.split("/")[0]
    if head == "data":
        return {"read": "secret.read", "delete": "secret.delete"}.get(how, "secret.write")
    if head == "metadata":
        return {"read": "secret.metadata.read", "list": "secret.list"}.get(
            how, "secret.metadata.write" if how != "delete" else "secret.destroy"
        )
    return f"secret.{head}"  # destroy, undelete, delete (versions), config, subkeys


#: Requests to sys/ that touch neither keys, policies nor authentication, written or read.
_SYS_HARMLESS = frozenset(
    {"capabilities", "capabilities-self", "capabilities-accessor", "tools", "audit-hash",
     "internal", "renew", "health", "seal-status", "leader"}
)  # fmt: skip


def _system_operation(sub: str, how: str) -> str | None:
    parts = sub.split("/")
    head, rest = parts[0], parts[1:]
    if head in _SYS_HARMLESS:
        return None
    if how in _READS:
        return "sys.raw" if head == "raw" else None  # raw storage holds every key
    delete = how == "delete"
    if head in ("policy", "policies"):
        return "policy.delete" if delete else "policy.write"
    if head in ("auth", "mounts"):
        kind = "auth" if head == "auth" else "mount"
        if rest[-1:] == ["tune"]:
            return f"{kind}.tune"
        return f"{kind}.disable" if delete else f"{kind}.enable"
    if head == "remount":
        return "mount.move"
    if head == "namespaces":
        if "lock" in rest or "unlock" in rest:
            return "namespace.lock"
        return "namespace.delete" if delete else "namespace.create"
    if head == "audit":
        return "audit.disable" if delete else "audit.enable"
    if head == "config":
        return "audit.headers" if rest[:1] == ["auditing"] else "sys.config"
    if head == "wrapping":
        return "sys.unwrap" if rest[:1] == ["unwrap"] else None  # unwrap: the wrapped secret
    if head == "leases" and rest[:1] in (["lookup"], ["renew"]):
        return None
    return f"sys.{head}"  # generate-root, rekey, rotate, raw, seal, plugins, quotas, ...


_TOKEN_SELF = frozenset(
    {"lookup-self", "renew-self", "revoke-self", "lookup", "lookup-accessor", "renew",
     "renew-accessor"}
)  # fmt: skip


def _auth_operation(kind: str, sub: str, how: str) -> str | None:
    parts = sub.split("/")
    head = parts[0]
    if head == "login" or (head == "tidy" and kind == "approle"):
        return None
    if kind == "token":
        if head in _TOKEN_SELF:
            return None
        if head.startswith("create"):
            return "token.create"
        return None if how in _READS else f"token.{head}"  # roles, revoke, revoke-orphan
    if kind == "approle" and head == "role":
        return _approle_operation(parts[1:], how)
    return None if how in _READS else f"auth.{kind or 'method'}.write"


def _approle_operation(parts: list[str], how: str) -> str:
    """``role/<name>/...`` of an AppRole mount: roles, role ids and secret ids."""
    read, leaf = how in _READS, parts[1] if len(parts) > 1 else ""
    if len(parts) <= 1:
        if read:
            return "approle.role.read"
        return "approle.role.delete" if how == "delete" else "approle.role.write"
    if leaf == "role-id":
        return "approle.role-id.read" if read else "approle.role-id.write"
    if leaf in ("secret-id", "custom-secret-id", "secret-id-accessor"):
        action = parts[2] if len(parts) > 2 else ""
        if action == "lookup" or how == "list":
            return "approle.secret-id.read"
        if action == "destroy" or how == "delete":
            return "approle.secret-id.destroy"
        return "approle.secret-id.create"
    return "approle.role.read" if read else "approle.role.write"  # its settings


def parse_label(label: str | None) -> tuple[str, int] | None:
    """``dataset:ds_1/3`` -> ("dataset:ds_1", 3); None when absent or malformed."""
    object_id, _, version = (label or "").rpartition("/")
    if not object_id or not version.isdigit():
        return None
    return unquote(object_id), int(version)
