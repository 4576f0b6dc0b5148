"""An OPC UA source: a machine's (or a gateway's) variables, read with ``asyncua``.

The declaration's settings (``config``):

- ``endpoint``: ``opc.tcp://host:port[/path]``;
- ``fields``: field name -> node id (``"ns=2;s=Spindle.Temp"``), or -> ``{"node": ...,
  "device": ...}`` to name the field's device;
- ``device``: the device of the fields that name none (default: the endpoint's host:port).
  A device answered a read when one of its fields came back without a Bad status: the
  equipment online rate (设备联网率) is counted from it;
- ``mode``: ``"sampled"`` (each read reads the current values once: one row, stamped with
  the time of the read; the cursor is that time) or ``"subscribed"`` (a subscription
  holds every change with its source timestamp: the first row is the machine's state when
  the subscription began, each later row its state after one change; a read returns the
  rows after its cursor, and a row is forgotten only once a run has stored it, so a run
  whose storage failed is read again: ``sandbox.sources.held``);
- ``timestamp`` (default ``ts``): the name of the timestamp column (UTC);
- ``sample_interval_s`` (sampled, default 1): a read whose cursor is a sample taken less
  than this long ago returns no row, so a run reads one sample, not one per loop;
- ``publishing_interval_ms`` (subscribed, default 500), ``buffer_rows`` (subscribed,
  default 100000: the rows held, read or not, until stored; beyond it new changes are
  dropped, and counted in the batches' ``problems``);
- ``read_timeout_s`` (default 10): a read not answered by then fails;
- ``username``: to log in with the credential ``password`` (anonymous without it);
- ``security``: ``none`` (default) or ``Basic256Sha256`` (signed and encrypted), with
  ``server_certificate`` (the server's certificate, PEM: pinned, never trusted on first
  use) and the credentials ``certificate`` and ``private_key`` (the node's, PEM).

Values come typed as the server gives them: numbers, flags, text, times; a Bad status is
null. A read that fails raises :class:`SourceError` and returns nothing; the next read
connects again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import polars as pl
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.crypto.uacrypto import CertProperties
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509

from sandbox.sources.base import Batch, SourceError
from sandbox.sources.opcua_rows import (
    Changes,
    Field,
    dtype_of_datatype,
    dtype_of_value,
    frame,
    python_value,
    status,
    utcnow,
)

_log = logging.getLogger(__name__)

MODES = ("sampled", "subscribed")
DEFAULT_TIMESTAMP = "ts"
DEFAULT_READ_TIMEOUT_S = 10.0
DEFAULT_SAMPLE_INTERVAL_S = 1.0
DEFAULT_PUBLISHING_INTERVAL_MS = 500
DEFAULT_BUFFER_ROWS = 100_000
_SETTINGS = frozenset(
    {"endpoint", "fields", "device", "mode", "timestamp", "sample_interval_s",
     "publishing_interval_ms", "buffer_rows", "read_timeout_s", "username", "security",
     "server_certificate"}
)  # fmt: skip
_SECRETS = frozenset({"password", "certificate", "private_key"})
SECURITY = ("none", "Basic256Sha256")
_SERVER_TIME = ObjectIds.Server_ServerStatus_CurrentTime
#: Status codes that say the node id itself is wrong (a setting), not the machine.
_NO_SUCH_NODE = frozenset(
    {StatusCodes.BadNodeIdUnknown, StatusCodes.BadNodeIdInvalid,
     StatusCodes.BadAttributeIdInvalid}
)  # fmt: skip
_REFUSED_LOGIN = frozenset(
    {"BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"}
)


def check_config(config: Mapping[str, Any]) -> list[str]:
    """The settings' problems, each naming the setting (never its value)."""
    problems = [f"unknown setting {name!r}" for name in sorted(set(config) - _SETTINGS)]
    if _endpoint(config.get("endpoint")) is None:
        problems.append("endpoint: opc.tcp://host:port, optionally followed by a path")
    fields = config.get("fields")
    if not isinstance(fields, Mapping) or not fields:
        problems.append("fields: a map of field names to OPC UA node ids (ns=2;s=Spindle.Temp)")
    else:
        for name, spec in fields.items():
            problems += _field_problems(name, spec)
    timestamp = config.get("timestamp", DEFAULT_TIMESTAMP)
    if not isinstance(timestamp, str) or not timestamp.strip():
        problems.append("timestamp: the name of the timestamp column")
    elif isinstance(fields, Mapping) and timestamp in fields:
        problems.append("timestamp: a name that no field has")
    device = config.get("device")
    if device is not None and not (isinstance(device, str) and device.strip()):
        problems.append("device: a device name")
    if config.get("mode") not in MODES:
        problems.append("mode: sampled or subscribed")
    for name, low, high in (
        ("sample_interval_s", 0.0, 86_400.0),
        ("publishing_interval_ms", 10.0, 3_600_000.0),
        ("read_timeout_s", 0.1, 600.0),
        ("buffer_rows", 1.0, 10_000_000.0),
    ):
        if name in config and not _number_within(config[name], low, high):
            problems.append(f"{name}: a number from {low:g} to {high:g}")
    username = config.get("username")
    if username is not None and not (isinstance(username, str) and username):
        problems.append("username: a user name (give the password as a credential)")
    return problems + _security_problems(config)


def _security_problems(config: Mapping[str, Any]) -> list[str]:
    security, pinned = config.get("security", "none"), config.get("server_certificate")
    if security not in SECURITY:
        return ["security: none or Basic256Sha256 (signed and encrypted)"]
    if security == "none":
        return ["server_certificate: only with security Basic256Sha256"] if pinned else []
    if not isinstance(pinned, str) or _certificate(pinned) is None:
        return ["server_certificate: the server's certificate, PEM (-----BEGIN CERTIFICATE-----)"]
    return []


def check_secrets(secrets: Mapping[str, str]) -> list[str]:
    """The credentials' problems: ``password``, ``certificate`` and ``private_key``, as text."""
    problems = [f"unknown credential {name!r}" for name in sorted(set(secrets) - _SECRETS)]
    if not all(isinstance(v, str) for v in secrets.values()):
        problems.append("credentials: text values")
    elif ("certificate" in secrets) != ("private_key" in secrets):
        problems.append("certificate, private_key: both of them (PEM), or neither")
    elif "certificate" in secrets and _certificate(secrets["certificate"]) is None:
        problems.append("certificate: the node's certificate, PEM (-----BEGIN CERTIFICATE-----)")
    return problems


def _certificate(text: str) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(text.encode())
    except ValueError:
        return None


def _field_problems(name: object, spec: object) -> list[str]:
    if not isinstance(name, str) or not name.strip():
        return ["fields: each field needs a name"]
    if isinstance(spec, Mapping):
        if set(spec) - {"node", "device"}:
            return [f"fields.{name}: only node and device"]
        device = spec.get("device")
        if device is not None and not (isinstance(device, str) and device.strip()):
            return [f"fields.{name}.device: a device name"]
        spec = spec.get("node")
    if _node_id(spec) is None:
        return [f"fields.{name}: an OPC UA node id, e.g. ns=2;s=Spindle.Temp or ns=3;i=1001"]
    return []


def _endpoint(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "opc.tcp" or not parts.hostname or port is None or parts.username:
        return None
    return text


def _node_id(text: object) -> ua.NodeId | None:
    if not isinstance(text, str):
        return None
    try:
        return ua.NodeId.from_string(text)
    except (ValueError, TypeError, UaError):
        return None


def _number_within(value: object, low: float, high: float) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )


@dataclass(frozen=True)
class Settings:
    """Checked settings of one OPC UA source."""

    endpoint: str
    fields: tuple[Field, ...]
    mode: str
    timestamp: str = DEFAULT_TIMESTAMP
    sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S
    publishing_interval_ms: float = DEFAULT_PUBLISHING_INTERVAL_MS
    buffer_rows: int = DEFAULT_BUFFER_ROWS
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    username: str | None = None
    server_certificate: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        default_device = config.get("device") or urlsplit(config["endpoint"]).netloc
        fields = []
        for name, spec in config["fields"].items():
            node, device = (
                (spec, None) if isinstance(spec, str) else (spec["node"], spec.get("device"))
            )
            fields.append(Field(name, ua.NodeId.from_string(node), device or default_device))
        return cls(
            endpoint=config["endpoint"],
            fields=tuple(fields),
            mode=config["mode"],
            timestamp=config.get("timestamp", DEFAULT_TIMESTAMP),
            sample_interval_s=float(config.get("sample_interval_s", DEFAULT_SAMPLE_INTERVAL_S)),
            publishing_interval_ms=float(
                config.get("publishing_interval_ms", DEFAULT_PUBLISHING_INTERVAL_MS)
            ),
            buffer_rows=int(config.get("buffer_rows", DEFAULT_BUFFER_ROWS)),
            read_timeout_s=float(config.get("read_timeout_s", DEFAULT_READ_TIMEOUT_S)),
            username=config.get("username"),
            server_certificate=(
                config["server_certificate"] if config.get("security") == "Basic256Sha256" else None
            ),
        )


def continuous(config: Mapping[str, Any]) -> bool:
    """Subscribed: the changes are held by the opening that received them (one reader)."""
    return config.get("mode") == "subscribed"


def open_source(config: Mapping[str, Any], secrets: Mapping[str, str]) -> OpcUaSource:
    """An OPC UA source on checked settings; connects on its first read."""
    settings = Settings.from_config(config)
    identity = None
    if settings.server_certificate is not None:
        if "certificate" not in secrets or "private_key" not in secrets:
            raise SourceError(
                "certificate, private_key: Basic256Sha256 needs the node's certificate and "
                "private key (PEM) as credentials"
            )
        identity = (secrets["certificate"], secrets["private_key"])
    return OpcUaSource(settings, password=secrets.get("password"), identity=identity)


class OpcUaSource:
    """Reads one server's variables; its asyncio loop runs in a thread of its own.

    ``read`` is synchronous for the caller and bounded by ``read_timeout_s``; one read at a
    time. In subscribed mode the subscription keeps buffering between reads while the
    source is open.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        password: str | None = None,
        identity: tuple[str, str] | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        """``identity``: the node's certificate and private key (PEM), for Basic256Sha256."""
        self._settings = settings
        self._password = password
        self._identity = identity
        self._clock = clock
        self._dtypes: dict[str, pl.DataType] = {}
        self._client: Client | None = None
        self._changes = Changes(settings)
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="veil-opcua-source", daemon=True
        )
        self._thread.start()

    def read(self, cursor: str | None) -> Batch:
        with self._lock:
            if self._closed:
                raise SourceError("the source was closed")
            future = asyncio.run_coroutine_threadsafe(self._read(cursor), self._loop)
            try:
                return future.result(self._settings.read_timeout_s)
            except concurrent.futures.TimeoutError:
                future.cancel()
                self._run(self._drop(), timeout=5)
                raise SourceError(
                    "read_timeout_s: the server did not answer in time; it is asked again "
                    "at the next read"
                ) from None

    @property
    def held(self) -> int:
        """Subscribed: how many changes are held (read or not, not yet stored)."""
        return self._changes.held

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._run(self._drop(), timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

    def _run(self, coroutine: Any, *, timeout: float) -> None:
        try:
            asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)
        except Exception:  # closing is best effort: the connection may already be gone
            _log.debug("closing the OPC UA connection failed", exc_info=True)

    # -- on the source's loop -------------------------------------------------------------
    async def _read(self, cursor: str | None) -> Batch:
        if self._client is None:
            return await self._attempt(cursor)
        try:
            return await self._attempt(cursor)
        except SourceError:
            # The connection kept since the last read may have died in between (the
            # server restarted, a firewall forgot it): one more try on a new one.
            return await self._attempt(cursor)

    async def _attempt(self, cursor: str | None) -> Batch:
        try:
            fresh = self._client is None
            client = await self._connected()
            if self._settings.mode == "sampled":
                return await self._sample(client, cursor)
            if fresh:
                # A new subscription's first row (the state it began with) is part of this
                # read, so a source opened for one run reads at least that.
                with contextlib.suppress(TimeoutError):
                    heard = self._changes.heard.wait()
                    await asyncio.wait_for(heard, self._settings.read_timeout_s / 2)
            # A subscription does not notice a server that is gone: ask the server's time.
            await client.read_attributes([client.get_node(_SERVER_TIME)])
            return self._changes.read(cursor, self._dtypes)
        except SourceError:
            await self._drop()
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # asyncua raises many kinds: all mean unreadable
            await self._drop()
            raise SourceError(_describe(exc)) from None

    async def _connected(self) -> Client:
        if self._client is not None:
            return self._client
        settings = self._settings
        client = Client(settings.endpoint, timeout=settings.read_timeout_s)
        if settings.username is not None:
            client.set_user(settings.username)
            if self._password is not None:
                client.set_password(self._password)
        self._client = client
        if settings.server_certificate is not None:
            await self._secure(client, settings.server_certificate)
        await client.connect()
        values = await client.read_attributes(self._nodes(client))
        types = await client.read_attributes(self._nodes(client), AttributeIds.DataType)
        for field, value, datatype in zip(settings.fields, values, types, strict=True):
            if status(value).value in _NO_SUCH_NODE:
                raise SourceError(
                    f"fields.{field.name}: the server has no such node; check its node id"
                )
            if not status(value).is_bad():
                python_value(field, value)  # a value Veil cannot store names its field now
            dtype = dtype_of_datatype(datatype) or dtype_of_value(value)
            if dtype is not None:
                self._dtypes[field.name] = dtype
        if settings.mode == "subscribed":
            await self._subscribe(client)
        return client

    async def _secure(self, client: Client, server_certificate: str) -> None:
        """Basic256Sha256, signed and encrypted, with the server's certificate pinned: a
        server with another certificate cannot read the requests (no trust on first use)."""
        assert self._identity is not None
        certificate, key = self._identity
        parsed = _certificate(certificate)
        uris = _application_uris(parsed) if parsed is not None else []
        if uris:  # servers check that the client's application URI is its certificate's
            client.application_uri = uris[0]
        try:
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                CertProperties(certificate.encode(), "pem"),
                CertProperties(key.encode(), "pem"),
                server_certificate=CertProperties(server_certificate.encode(), "pem"),
                mode=ua.MessageSecurityMode.SignAndEncrypt,
            )
        except (ValueError, TypeError):
            raise SourceError(
                "certificate, private_key: a PEM certificate and its private key, unencrypted"
            ) from None

    def _nodes(self, client: Client) -> list[Node]:
        return [client.get_node(f.node) for f in self._settings.fields]

    async def _subscribe(self, client: Client) -> None:
        self._changes.restart()
        subscription: Subscription = await client.create_subscription(
            self._settings.publishing_interval_ms, self._changes
        )
        nodes: list[Node] = self._nodes(client)
        results: list[int | ua.StatusCode] = await subscription.subscribe_data_change(
            nodes,
            queuesize=1000,
            sampling_interval=ua.Double(min(self._settings.publishing_interval_ms, 100.0)),
        )
        for field, result in zip(self._settings.fields, results, strict=True):
            if isinstance(result, ua.StatusCode):
                raise SourceError(
                    f"fields.{field.name}: the server would not watch this node "
                    f"({result.name}); check its node id"
                )

    async def _sample(self, client: Client, cursor: str | None) -> Batch:
        now = self._clock()
        if cursor is not None and self._sampled_lately(cursor, now):
            return Batch(self._frame([]), cursor)
        values = await client.read_attributes(self._nodes(client))
        now = self._clock()
        row: dict[str, Any] = {self._settings.timestamp: now}
        answered: dict[str, bool] = {}
        for field, value in zip(self._settings.fields, values, strict=True):
            good = not status(value).is_bad()
            row[field.name] = python_value(field, value) if good else None
            answered[field.device] = answered.get(field.device, False) or good
        return Batch(self._frame([row]), now.isoformat(), answered)

    def _sampled_lately(self, cursor: str, now: dt.datetime) -> bool:
        try:
            last = dt.datetime.fromisoformat(cursor)
        except ValueError:
            return False
        if last.tzinfo is None:
            last = last.replace(tzinfo=dt.UTC)
        interval = dt.timedelta(seconds=self._settings.sample_interval_s)
        return dt.timedelta(0) <= now - last < interval

    def _frame(self, rows: list[dict[str, Any]]) -> pl.DataFrame:
        return frame(self._settings, self._dtypes, rows)

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.disconnect(), 2)
        except Exception:  # a server that is gone cannot be told goodbye
            client.disconnect_socket()


def _application_uris(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(names.value.get_values_for_type(x509.UniformResourceIdentifier))


def _describe(exc: BaseException) -> str:
    """What went wrong, by the error's class (asyncua's texts may quote a reply)."""
    name = type(exc).__name__
    if name in _REFUSED_LOGIN:
        return f"username, password: the server refused the login ({name}); check them"
    if isinstance(exc, UaStatusCodeError):
        return f"the server refused the request ({name})"
    if isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError | ConnectionError):
        return f"endpoint: the server could not be reached ({name}); it is tried again later"
    return f"the server could not be read ({name})"
