"""The node's HTTPS client to the control plane: every request signed (``keys.node_auth``).

The node only ever connects out (it may sit behind the enterprise's NAT or firewall);
the control plane never calls it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from keys.node_auth import NodeIdentity, canonical_json


class ControlPlaneUnavailable(Exception):
    """The control plane did not answer (down, or the network between is)."""


class ControlPlaneRefused(Exception):
    """The control plane answered with an error; ``status`` and its ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Reply:
    """The control plane's answer: its JSON (None for 204) and its headers (hints the node
    may act on, never data it trusts: ``keys.node_auth.WAKE_HEADER``, ``TASKS_AT_HEADER``)."""

    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


class ControlPlane:
    def __init__(
        self,
        url: str,
        identity: NodeIdentity,
        *,
        verify: bool | str = True,
        timeout_s: float = 30.0,
    ) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), verify=verify, timeout=timeout_s)
        self.identity = identity

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one signed request; the answer's JSON (None for 204)."""
        return self.send(method, path, body).body

    def send(self, method: str, path: str, body: Any = None) -> Reply:
        """Send one signed request; the answer's JSON and headers."""
        data = b"" if body is None else canonical_json(body)
        headers = self.identity.headers(method, path, data, time.time())
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(method, path, content=data, headers=headers)
        except httpx.TransportError as exc:
            raise ControlPlaneUnavailable(str(exc)) from None
        if response.status_code == 204:
            return Reply(None, response.headers)
        if response.status_code >= 400:
            try:
                error = response.json()
            except json.JSONDecodeError:
                error = {}
            raise ControlPlaneRefused(
                response.status_code,
                str(error.get("code", "error")),
                str(error.get("message") or error.get("detail") or response.text[:200]),
            )
        return Reply(response.json(), response.headers)


def enrol(url: str, code: str, identity_pem: str, signing_pem: str, verify: bool | str) -> Any:
    """The one unsigned call: enrol with the operator's one-time code."""
    body = {"code": code, "identity_key": identity_pem, "signing_key": signing_pem}
    try:
        response = httpx.post(f"{url.rstrip('/')}/node/v1/enrol", json=body, verify=verify,
                              timeout=30.0)  # fmt: skip
    except httpx.TransportError as exc:
        raise ControlPlaneUnavailable(str(exc)) from None
    if response.status_code >= 400:
        error = response.json() if response.headers.get("content-type", "").startswith(
            "application/json") else {}  # fmt: skip
        raise ControlPlaneRefused(
            response.status_code, str(error.get("code", "error")), str(error.get("message", ""))
        )
    return response.json()
