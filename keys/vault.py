"""The one module that talks to the key server (OpenBao or Vault) through hvac.

It turns transport and server failures into ``keys`` errors, keeps Veil's
platform login and each tenant's short-lived service login, and performs the
raw transit calls.  Nothing here handles bulk data.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from i18n import Msg
from keys._nodes import NODE_FAILURES, RETRY_PAUSE_S, Nodes
from keys.errors import (
    KeyServerMisconfigured,
    KeyServerUnavailable,
    UnknownTenant,
)
from keys.profile import CryptoProfile
from keys.tenancy import (
    APPROLE_MOUNT,
    DATA_KEY,
    PLATFORM_MOUNT,
    SIGNING_KEY,
    Tenancy,
    TenantLocation,
    gm_signing_capabilities,
    locate,
    required_capabilities,
)

T = TypeVar("T")

#: Re-login this many seconds before a token's lease runs out.
_RENEW_MARGIN_S = 60.0

#: The request header naming the object a key-server request is for.  The key server
#: must audit it un-HMAC'd (``sys/config/auditing/request-headers/X-Veil-Object``,
#: ``hmac=false``) for ``veil audit keys`` to tie its entries to Veil's reasons.
OBJECT_HEADER = "X-Veil-Object"
_LABEL = re.compile(r"^[A-Za-z0-9:_./@%+-]{1,200}$")
_operation: ContextVar[str | None] = ContextVar("veil_key_operation", default=None)


@contextmanager
def key_operation(label: str) -> Iterator[None]:
    """Tag every key-server request made inside the block with ``label``.

    The label travels in the :data:`OBJECT_HEADER` request header, so the key
    server's own audit log says which object (or task) each request served.  It
    is a context variable: each thread and each task has its own.  Labels are
    1-200 characters of letters, digits and ``:_./@%+-`` (no secrets: the key
    server logs them in clear).
    """
    if not _LABEL.fullmatch(label):
        raise ValueError(
            "a key-operation label must be 1-200 characters of letters, digits and ':_./@%+-'"
        )
    token = _operation.set(label)
    try:
        yield
    finally:
        _operation.reset(token)


class _TaggingSession(requests.Session):
    """A requests session that sends each request to the current node and adds the
    current :func:`key_operation` label to it."""

    def __init__(self, nodes: Nodes) -> None:
        super().__init__()
        self._nodes = nodes

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        label = _operation.get()
        if label is not None:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), OBJECT_HEADER: label}
        first = self._nodes.addrs[0]
        if isinstance(url, str) and url.startswith(first) and self._nodes.current != first:
            url = self._nodes.current + url[len(first) :]
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class KeyServerConfig:
    """How to reach and authenticate to a key server.

    Give either ``token`` or both ``role_id`` and ``secret_id`` (AppRole).
    ``namespace`` is Veil's base namespace ("" for the root namespace); tenant
    namespaces are created beneath it.

    A cluster (OpenBao with raft storage) is named by ``addrs``, every node's
    address; ``addr`` is then the first of them.  When a node cannot serve a
    call (down, sealed, or the cluster is electing a leader), the call is tried
    on the other nodes for up to ``failover_s`` seconds before
    :class:`~keys.errors.KeyServerUnavailable` is raised.  With one address
    there is nothing to fail over to: the first failure is raised at once.
    """

    addr: str
    addrs: tuple[str, ...] = ()
    namespace: str = ""
    token: str | None = field(default=None, repr=False)
    role_id: str | None = None
    secret_id: str | None = field(default=None, repr=False)
    approle_mount: str = APPROLE_MOUNT
    tenancy: Tenancy = Tenancy.AUTO
    timeout_s: float = 5.0
    failover_s: float = 15.0

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node's address, ``addr`` first."""
        return (self.addr, *(a for a in self.addrs if a != self.addr))

    @property
    def where(self) -> str:
        """The server's address(es), as error messages name them."""
        return ", ".join(self.nodes)


@contextmanager
def translate_errors(addr: str, action: str) -> Iterator[None]:
    """Turn "the key server is not usable right now" into :class:`KeyServerUnavailable`."""
    try:
        yield
    except (requests.ConnectionError, requests.Timeout):
        raise KeyServerUnavailable(
            Msg(
                "cannot reach the key server at {addr} to {action}; check that it "
                "is running and that the address is right",
                addr=addr,
                action=action,
            )
        ) from None
    except hvac.exceptions.VaultDown:
        raise KeyServerUnavailable(
            Msg(
                "the key server at {addr} is sealed or in standby and cannot "
                "{action}; unseal it (or wait for a leader) and retry",
                addr=addr,
                action=action,
            )
        ) from None
    except (hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway):
        raise KeyServerUnavailable(
            Msg(
                "the key server at {addr} failed while trying to {action}; check "
                "its log (a full disk or an unwritable audit device makes it "
                "refuse every request)",
                addr=addr,
                action=action,
            )
        ) from None
    except hvac.exceptions.RateLimitExceeded:
        raise KeyServerUnavailable(
            Msg(
                "the key server at {addr} is rate-limiting Veil; retry later",
                addr=addr,
            )
        ) from None


class _Login:
    """One authenticated hvac client and when its token must be renewed."""

    def __init__(self, client: hvac.Client, expires_at: float) -> None:
        self.client = client
        self.expires_at = expires_at

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - _RENEW_MARGIN_S


class KeyServerClient:
    """Veil's connection to the key server: platform login plus per-tenant logins."""

    def __init__(self, config: KeyServerConfig, *, clock: Callable[[], float] = time.monotonic):
        if not config.token and not (config.role_id and config.secret_id):
            raise KeyServerMisconfigured(
                Msg(
                    "no credentials for the key server: set VEIL_VAULT_TOKEN, or both "
                    "VEIL_VAULT_ROLE_ID and VEIL_VAULT_SECRET_ID"
                )
            )
        self.config = config
        self._clock = clock
        self._nodes = Nodes(config.nodes, config.timeout_s)
        self._lock = threading.Lock()
        self._platform: _Login | None = None
        self._tenants: dict[str, _Login] = {}
        self._role_ids: dict[str, str] = {}
        self.tenancy = config.tenancy
        #: Called with the action each time the server is found unavailable (Veil audits it).
        self.on_unavailable: Callable[[str], None] | None = None

    # -- plumbing -----------------------------------------------------------------
    def _new_client(self, namespace: str, token: str | None = None) -> hvac.Client:
        # url= and token= always explicit: hvac otherwise reads VAULT_TOKEN or ~/.vault-token.
        # The session sends each request to the current node of a cluster.
        return hvac.Client(
            url=self.config.addr,
            token=token,
            namespace=namespace or None,
            timeout=self.config.timeout_s,
            session=_TaggingSession(self._nodes),
        )

    def call(self, action: str, fn: Callable[[], T]) -> T:
        """Run one key-server call, translating outages into :class:`KeyServerUnavailable`.

        With several nodes, a call a node cannot serve is retried on the others
        (see :class:`KeyServerConfig`).  Retrying repeats the whole call: reads,
        data keys, unwrapping and signing are safe to repeat; an administrative
        write whose answer was lost may be done twice (e.g. a key rotated twice).
        """
        try:
            with translate_errors(self.config.where, action):
                return self._with_failover(fn)
        except KeyServerUnavailable:
            if self.on_unavailable is not None:
                self.on_unavailable(action)
            raise

    def _with_failover(self, fn: Callable[[], T]) -> T:
        nodes = self._nodes
        if len(nodes.addrs) == 1:
            return fn()
        nodes.follow_leader()
        deadline = time.monotonic() + self.config.failover_s
        attempts = 0
        while True:
            node = nodes.current
            try:
                return fn()
            except NODE_FAILURES:
                if time.monotonic() >= deadline:
                    raise
            nodes.move_on(node)
            attempts += 1
            if attempts % len(nodes.addrs) == 0:
                time.sleep(RETRY_PAUSE_S)

    # -- start-up checks ------------------------------------------------------------
    def check_ready(self, profile: CryptoProfile = CryptoProfile.STANDARD) -> None:
        """Raise a clear error unless the server is reachable, unsealed, and lets Veil in
        with what ``profile`` needs."""
        probe = self._new_client("")

        def read_seal_status() -> bool:
            sealed = bool(probe.sys.read_seal_status().get("sealed"))
            if sealed and len(self._nodes.addrs) > 1:
                raise hvac.exceptions.VaultDown("sealed")  # another node may be unsealed
            return sealed

        if self.call(Msg("read its seal status"), read_seal_status):
            raise KeyServerUnavailable(
                Msg(
                    "the key server at {addr} is sealed; unseal it and retry",
                    addr=self.config.addr,
                )
            )
        self.platform()  # authenticates, or raises KeyServerMisconfigured
        if self.tenancy is Tenancy.AUTO:
            self.tenancy = self._detect_tenancy()
        self._check_capabilities(profile)

    def _detect_tenancy(self) -> Tenancy:
        client = self.platform()
        try:
            self.call(Msg("list namespaces"), lambda: client.sys.list_namespaces())
        except hvac.exceptions.InvalidPath as exc:
            # OpenBao answers 404 with no errors for "no namespaces yet";
            # a server without namespaces says "unsupported path".
            if "unsupported path" in str(exc):
                return Tenancy.MOUNT
        except hvac.exceptions.Forbidden:
            return Tenancy.NAMESPACE  # the call exists; the policy decides later checks
        return Tenancy.NAMESPACE

    def _check_capabilities(self, profile: CryptoProfile) -> None:
        client = self.platform()
        needed = required_capabilities(self.tenancy, self.config.namespace, profile)
        response = self.call(
            Msg("check Veil's capabilities"),
            lambda: client.adapter.post(
                "/v1/sys/capabilities-self", json={"paths": sorted(needed)}
            ),
        )
        granted: dict[str, list[str]] = response.get("data", response)
        lacking = [
            path
            for path, how in sorted(needed.items())
            if how not in granted.get(path, []) and "root" not in granted.get(path, [])
        ]
        missing = [f"'{needed[path]}' on '{path}'" for path in lacking]
        if missing and all(path in gm_signing_capabilities() for path in lacking):
            raise KeyServerMisconfigured(
                Msg(
                    "Veil's key-server token lacks {capabilities}, which the gm crypto profile "
                    "needs for its SM2 signing key; grant it the policy printed by `veil keys "
                    "policy --tenancy {tenancy}`. An embedded key server first started before "
                    "the gm profile existed cannot be granted it (its policy is root-only): "
                    "run it with VEIL_CRYPTO_PROFILE=standard (see docs/keys.md)",
                    capabilities=", ".join(missing),
                    tenancy=self.tenancy,
                )
            )
        if missing:
            raise KeyServerMisconfigured(
                Msg(
                    "Veil's key-server token lacks {capabilities}; grant it the policy "
                    "printed by `veil keys policy --tenancy {tenancy}`",
                    capabilities=", ".join(missing),
                    tenancy=self.tenancy,
                )
            )

    # -- logins -------------------------------------------------------------------------
    def platform(self) -> hvac.Client:
        """The client authenticated as Veil itself (never the root token)."""
        with self._lock:
            now = self._clock()
            if self._platform is None or not self._platform.fresh(now):
                self._platform = self._platform_login(now)
            return self._platform.client

    def _platform_login(self, now: float) -> _Login:
        cfg = self.config
        client = self._new_client(cfg.namespace, cfg.token)
        try:
            if cfg.token:
                info = self.call(
                    Msg("look up Veil's token"), lambda: client.auth.token.lookup_self()
                )
                ttl = float(info["data"].get("ttl") or 0)
                return _Login(client, now + ttl if ttl > 0 else float("inf"))
            auth = self.call(
                Msg("log Veil in"),
                lambda: client.auth.approle.login(
                    role_id=cfg.role_id, secret_id=cfg.secret_id, mount_point=cfg.approle_mount
                ),
            )
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
            raise KeyServerMisconfigured(
                Msg(
                    "the key server at {where} refused Veil's credentials; check "
                    "VEIL_VAULT_TOKEN (or the AppRole role and secret id) and "
                    "VEIL_VAULT_NAMESPACE",
                    where=cfg.where,
                )
            ) from None
        return _Login(client, now + float(auth["auth"]["lease_duration"]))

    def location(self, tenant: str) -> TenantLocation:
        return locate(tenant, self._resolved_tenancy(), self.config.namespace)

    def _resolved_tenancy(self) -> Tenancy:
        if self.tenancy is Tenancy.AUTO:
            self.tenancy = self._detect_tenancy()
        return self.tenancy

    def platform_in(self, namespace: str) -> hvac.Client:
        """A client with Veil's platform token, aimed at ``namespace``."""
        return self._new_client(namespace, self.platform().token)

    def tenant(self, tenant: str) -> hvac.Client:
        """A client logged in with ``tenant``'s own least-privilege service token."""
        with self._lock:
            login = self._tenants.get(tenant)
            now = self._clock()
            if login is not None and login.fresh(now):
                return login.client
        login = self._tenant_login(tenant, now)
        with self._lock:
            self._tenants[tenant] = login
        return login.client

    def forget_tenant(self, tenant: str) -> None:
        with self._lock:
            self._tenants.pop(tenant, None)
            self._role_ids.pop(tenant, None)

    def _tenant_login(self, tenant: str, now: float) -> _Login:
        loc = self.location(tenant)
        admin = self.platform_in(loc.namespace)
        role_path = f"/v1/auth/{loc.approle_mount}/role/{loc.role}"
        client = self._new_client(loc.namespace)

        def log_in(role_id: str) -> dict[str, Any]:
            secret_id = admin.adapter.post(f"{role_path}/secret-id")["data"]["secret_id"]
            try:
                return dict(
                    client.auth.approle.login(
                        role_id=role_id, secret_id=secret_id, mount_point=loc.approle_mount
                    )
                )
            except hvac.exceptions.InvalidRequest:
                if len(self._nodes.addrs) == 1:
                    raise
                # A secret id made a moment ago, unknown to the node that answered: it
                # lags behind a new active node.  Try again (another node, a new id).
                raise hvac.exceptions.VaultDown("a node behind the active node") from None

        try:
            role_id = (
                self._role_ids.get(tenant)
                or self.call(
                    Msg("read the tenant's role"), lambda: admin.adapter.get(f"{role_path}/role-id")
                )["data"]["role_id"]
            )
            auth = self.call(Msg("log the tenant in"), lambda: log_in(role_id))
        except (hvac.exceptions.InvalidPath, hvac.exceptions.Forbidden):
            if not self.tenant_exists(tenant):
                raise UnknownTenant(
                    Msg(
                        "tenant '{tenant}' has no keys in the key server; create it first",
                        tenant=tenant,
                    )
                ) from None
            raise KeyServerMisconfigured(
                Msg(
                    "Veil's token may not issue logins for tenant '{tenant}'; check its policy",
                    tenant=tenant,
                )
            ) from None
        self._role_ids[tenant] = role_id
        return _Login(client, now + float(auth["auth"]["lease_duration"]))

    def tenant_exists(self, tenant: str) -> bool:
        loc = self.location(tenant)
        admin = self.platform_in(loc.namespace)
        try:
            self.call(
                Msg("read the tenant's key"),
                lambda: admin.adapter.get(f"/v1/{loc.transit_mount}/keys/{DATA_KEY}"),
            )
        except (hvac.exceptions.InvalidPath, hvac.exceptions.Forbidden):
            return False
        except hvac.exceptions.InvalidRequest:
            return False
        return True

    def with_tenant(self, tenant: str, action: str, fn: Callable[[hvac.Client], T]) -> T:
        """Run ``fn`` with the tenant's client; on a refused token, log in again once."""
        client = self.tenant(tenant)
        try:
            return self.call(action, lambda: fn(client))
        except hvac.exceptions.Forbidden:
            self.forget_tenant(tenant)  # expired or revoked early: a fresh login decides
        client = self.tenant(tenant)
        try:
            return self.call(action, lambda: fn(client))
        except hvac.exceptions.Forbidden:
            raise KeyServerMisconfigured(
                Msg(
                    "the key server refused tenant '{tenant}' its own key to "
                    "{action}; check the tenant's policy in the key server",
                    tenant=tenant,
                    action=action,
                )
            ) from None

    # -- platform keys ------------------------------------------------------------------------
    def ensure_platform_keys(self) -> None:
        """Create Veil's own transit mount and signing key if they do not exist yet."""
        client = self.platform()
        try:
            self.call(
                Msg("read the signing key"),
                lambda: client.secrets.transit.read_key(SIGNING_KEY, mount_point=PLATFORM_MOUNT),
            )
            return
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
            pass
        mounts: dict[str, Any] = {}
        try:
            mounts = self.call(
                Msg("read Veil's mount"),
                lambda: client.adapter.get(f"/v1/sys/mounts/{PLATFORM_MOUNT}"),
            )
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
            mounts = {}
        if not mounts:
            # "path is already in use": another Veil process, starting at the same time,
            # mounted it just now.
            with contextlib.suppress(hvac.exceptions.InvalidRequest):
                self.call(
                    Msg("mount Veil's transit engine"),
                    lambda: client.sys.enable_secrets_engine("transit", path=PLATFORM_MOUNT),
                )
        self.call(
            Msg("create the signing key"),
            lambda: client.secrets.transit.create_key(
                SIGNING_KEY, key_type="ed25519", mount_point=PLATFORM_MOUNT
            ),
        )
