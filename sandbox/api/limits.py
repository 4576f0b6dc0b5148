"""Request limits in front of the app: body sizes (413) and rates (429), in one ASGI layer.

Both are checked before a route runs, so a refused request costs no database
work: no authentication, no audit event.  The rate state is kept in this
process's memory (token buckets, no lock: only the event loop touches it), so
every API process limits on its own: with N API processes (workers, or machines
behind a load balancer) a client gets up to N times the configured rate.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from i18n import Msg
from i18n.catalog import translate
from keys.node_auth import NODE_HEADER
from sandbox.api.language import request_language
from sandbox.api.transport import security_headers
from sandbox.config.settings import Settings

_NODE_HEADER: Final = NODE_HEADER.lower().encode()

#: Buckets kept before the full (idle) ones are forgotten.
MAX_BUCKETS: Final = 100_000
RATE_SETTINGS = ("VEIL_RATE_LIMIT_PER_S", "VEIL_RATE_LIMIT_BURST")
FAILURE_SETTINGS = ("VEIL_AUTH_FAILURES_PER_MIN", "VEIL_AUTH_FAILURE_BURST")
#: Set to True in the ASGI scope by whatever refuses a credential without answering 401
#: (the console redirects to its login page), so the failure counts against the address.
AUTH_FAILED: Final = "veil.auth_failed"


class _Bucket:
    __slots__ = ("stamp", "tokens", "trusted")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        #: The credential was accepted once here: failed logins from its address do not block it.
        self.trusted = False


class TokenBuckets:
    """One token bucket per key: ``burst`` requests at once, then ``rate`` per second.

    ``rate`` 0 means no limit.  Only ever used from one thread (the event loop).
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[bytes | str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _refilled(self, key: bytes | str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_idle(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        return bucket

    def wait(self, key: bytes | str) -> float:
        """Seconds until ``key`` may send again; 0 when it may send now (nothing is taken)."""
        if not self.enabled:
            return 0.0
        bucket = self._refilled(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def take(self, key: bytes | str) -> float:
        """Take one token for ``key``: 0 when granted, else the seconds to wait."""
        if not self.enabled:
            return 0.0
        bucket = self._refilled(key)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def trusted(self, key: bytes | str) -> bool:
        bucket = self._buckets.get(key)
        return bucket is not None and bucket.trusted

    def set_trusted(self, key: bytes | str, trusted: bool) -> None:
        """Remember whether ``key`` authenticated (kept even where the rate is unlimited)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if not trusted:
                return
            bucket = self._refilled(key)
        bucket.trusted = trusted

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that have refilled (forgetting them changes nothing); if that is
        not enough, the oldest half, so memory stays bounded under a flood of new keys."""
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= MAX_BUCKETS:
            for k in list(self._buckets)[: MAX_BUCKETS // 2]:
                del self._buckets[k]


@dataclass(frozen=True)
class BodyLimit:
    """Requests matching ``method`` and ``path`` may send up to ``max_bytes``."""

    method: str
    path: re.Pattern[str]
    max_bytes: int
    setting: str


class BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes its limit."""


class _Exchange:
    __slots__ = ("exceeded", "size", "started")

    def __init__(self) -> None:
        self.size = 0
        self.exceeded = False
        self.started = False


class RequestGuard:
    """The outermost ASGI layer: rate limits, body limits, and security headers.

    ``uploads`` name the endpoints that take a file; every other request may send
    up to ``settings.max_request_bytes``.  ``credential_cookie`` is the console's
    session cookie, which identifies a principal like a bearer token does.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        uploads: tuple[BodyLimit, ...] = (),
        credential_cookie: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.max_request_bytes = settings.max_request_bytes
        self.uploads = uploads
        self.cookie = f"{credential_cookie}=".encode() if credential_cookie else None
        self.requests = TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst, clock)
        self.failures = TokenBuckets(
            settings.auth_failures_per_min / 60, settings.auth_failure_burst, clock
        )
        self.per_second = settings.rate_limit_per_s
        self.burst = settings.rate_limit_burst
        self.failure_burst = settings.auth_failure_burst
        self.failures_per_min = settings.auth_failures_per_min
        # Credentials are keyed by a keyed BLAKE2b (fast; the raw token is never kept in
        # memory, and the key makes the digests useless outside this process).
        self._salt = secrets.token_bytes(16)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        credential, declared = self._read_headers(scope)
        client = scope.get("client")
        address = client[0] if client else "unknown"
        key: bytes | str = (
            hashlib.blake2b(credential, digest_size=16, key=self._salt).digest()
            if credential
            else address
        )
        refusal = self._admit(key, address, bool(credential))
        if refusal is not None:
            message, retry_after = refusal
            await _answer(
                scope,
                send,
                429,
                {"code": "rate_limited", "message": message},
                ((b"retry-after", retry_after.encode()),),
            )
            return
        limit, setting = self._body_limit(scope)
        if declared is not None and declared > limit:
            await _answer(scope, send, 413, _too_large(limit, setting))
            return
        trust = key if credential else None
        await self._forward(scope, receive, send, trust, address, limit, setting, declared)

    def _read_headers(self, scope: Scope) -> tuple[bytes | None, int | None]:
        credential = declared = node = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                credential = value
            elif name == _NODE_HEADER:
                # A node's signed request: the node is its credential (its own bucket, as a
                # token has), so nodes behind one address do not share the anonymous one.
                node = b"node:" + value
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else None
            elif name == b"cookie" and credential is None and self.cookie is not None:
                start = value.find(self.cookie)
                if start >= 0:
                    credential = value[start:].split(b";", 1)[0]
        return credential or node, declared

    def _admit(
        self, key: bytes | str, address: str, has_credential: bool
    ) -> tuple[Msg, str] | None:
        """None to let the request in; else the 429's message and Retry-After (seconds)."""
        if not (has_credential and self.requests.trusted(key)):
            wait = math.ceil(self.failures.wait(address))
            if wait:
                return (
                    Msg(
                        "too many failed authentications from this address: at most "
                        "{burst}, then {rate} a minute ({settings}); retry in {wait} s",
                        burst=self.failure_burst,
                        rate=f"{self.failures_per_min:g}",
                        settings=", ".join(FAILURE_SETTINGS),
                        wait=wait,
                    ),
                    str(wait),
                )
        wait = math.ceil(self.requests.take(key))
        if wait:
            template = (
                Msg(
                    "too many requests with this credential: at most {burst} at once, "
                    "then {rate} a second ({settings}); retry in {wait} s"
                )
                if has_credential
                else Msg(
                    "too many requests from this address without a credential: at most "
                    "{burst} at once, then {rate} a second ({settings}); retry in {wait} s"
                )
            )
            return (
                Msg(
                    template.template,
                    burst=self.burst,
                    rate=f"{self.per_second:g}",
                    settings=", ".join(RATE_SETTINGS),
                    wait=wait,
                ),
                str(wait),
            )
        return None

    def _body_limit(self, scope: Scope) -> tuple[int, str]:
        method, path = scope["method"], scope["path"]
        for upload in self.uploads:
            if method == upload.method and upload.path.fullmatch(path):
                return upload.max_bytes, upload.setting
        return self.max_request_bytes, "VEIL_MAX_REQUEST_BYTES"

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        credential_key: bytes | str | None,
        address: str,
        limit: int,
        setting: str,
        declared: int | None,
    ) -> None:
        exchange = _Exchange()
        extra = security_headers(scope)

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.size += len(message.get("body", b""))
                if exchange.size > limit:
                    exchange.exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if exchange.exceeded:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            if message["type"] == "http.response.start":
                exchange.started = True
                status = message["status"]
                failed = status == 401 or scope.get(AUTH_FAILED, False)
                if failed:
                    self.failures.take(address)
                if credential_key is not None and (failed or status < 400):
                    self.requests.set_trusted(credential_key, not failed)
                message["headers"] = _with_headers(message.get("headers", []), extra)
            await send(message)

        # A declared length is enforced by the server's HTTP parser; only a chunked body
        # (no Content-Length) needs counting as it arrives.
        try:
            await self.app(
                scope, receive if declared is not None else limited_receive, guarded_send
            )
        except Exception:
            if not exchange.exceeded:
                raise
        if exchange.exceeded and not exchange.started:
            await _answer(scope, send, 413, _too_large(limit, setting))


def _with_headers(
    headers: list[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """``headers`` plus those of ``extra`` that the response does not set itself."""
    present = {name.lower() for name, _ in headers}
    return list(headers) + [(n, v) for n, v in extra if n not in present]


def _too_large(limit: int, setting: str) -> dict[str, object]:
    return {
        "code": "body_too_large",
        "message": Msg(
            "the request body is larger than this endpoint accepts ({limit} bytes); "
            "{setting} raises the limit",
            limit=limit,
            setting=setting,
        ),
        "problems": [
            {
                "location": "body",
                "expected": Msg("at most {limit} bytes ({setting})", limit=limit, setting=setting),
            }
        ],
    }


def _translated(content: dict[str, object], language: str) -> dict[str, object]:
    """``content`` with its messages in ``language``."""
    message = translate(content["message"], language)
    translated: dict[str, object] = content | {"message": message, "detail": message}
    problems = content.get("problems")
    if isinstance(problems, list):
        translated["problems"] = [
            p | {"expected": translate(p["expected"], language)} for p in problems
        ]
    return translated


async def _answer(
    scope: Scope,
    send: Send,
    status: int,
    content: dict[str, object],
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """A JSON error in the API's format (on console paths, a short page the console's script
    shows next to its form), with the security headers."""
    path: str = scope["path"]
    # This layer runs outside the language middleware: it reads the request's choice itself.
    names = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    language = request_language(names)
    content = _translated(content, language)
    if path == "/console" or path.startswith("/console/"):
        text = html.escape(str(content["detail"]))
        body = f'<main><div class="error" role="alert"><p>{text}</p></div></main>'.encode()
        media = b"text/html; charset=utf-8"
    else:
        body, media = json.dumps(content).encode(), b"application/json"
    raw = [
        (b"content-type", media),
        (b"content-length", str(len(body)).encode()),
        (b"content-language", language.encode()),
    ]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _with_headers(raw + list(headers), security_headers(scope)),
        }
    )
    await send({"type": "http.response.body", "body": body})
