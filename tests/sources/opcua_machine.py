"""A simulated machine: a real ``asyncua`` OPC UA server on a free loopback port.

It runs its own asyncio loop in a thread, so a test drives it synchronously: ``set`` a
variable, ``tick`` the simulation, ``stop`` it (its connections are cut, as when the
machine is switched off) and ``start`` it again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from collections.abc import Coroutine, Mapping
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

NAMESPACE = "urn:veil:tests:machine"
SERVER_URI = "urn:veil:tests:machine-server"
#: The machine's variables: browse name -> (variant type, first value).
VARIABLES: dict[str, tuple[ua.VariantType, Any]] = {
    "Spindle.Temp": (ua.VariantType.Double, 21.5),
    "Spindle.Speed": (ua.VariantType.Int32, 1200),
    "Parts.Count": (ua.VariantType.UInt32, 0),
    "Running": (ua.VariantType.Boolean, True),
    "Program": (ua.VariantType.String, "O1234"),
    "Tool.Offsets": (ua.VariantType.Double, [0.125, -0.5]),  # an array: not a column's value
}


def self_signed(uri: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for an OPC UA application ``uri`` and its key, PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, uri)])
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=True, key_encipherment=True,
        data_encipherment=True, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class _Users(UserManager):
    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None,
        certificate: Any = None,
    ) -> User | None:  # fmt: skip
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class SimulatedMachine:
    """An OPC UA server with the variables of a machine tool (``VARIABLES``)."""

    def __init__(
        self,
        port: int,
        *,
        users: Mapping[str, str] | None = None,
        certificate: tuple[bytes, bytes] | None = None,
    ) -> None:
        """``certificate``: the server's (PEM) and its key; then only Basic256Sha256 with
        SignAndEncrypt is offered."""
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/veil/machine/"
        self._users = users
        self._certificate = certificate
        self.certificate = certificate[0].decode() if certificate is not None else None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opcua-machine")
        self._thread.start()
        self._server: Server | None = None
        self._nodes: dict[str, Any] = {}
        self.namespace = 0
        self._call(self._init())

    def node_id(self, name: str) -> str:
        """The node id of a variable, as a declaration writes it."""
        return f"ns={self.namespace};s={name}"

    def set(self, name: str, value: Any) -> dt.datetime:
        """Write a variable now; its source timestamp (UTC) is returned."""
        return self._call(self._write(name, value))

    def cut_off(self, name: str) -> None:
        """The variable's device stops answering: a gateway serves it with a Bad status."""
        self._call(self._write_status(name, ua.StatusCodes.BadCommunicationError))

    def get(self, name: str) -> Any:
        return self._call(self._nodes[name].read_value())

    def tick(self) -> None:
        """One step of the machine: warmer, one more part."""
        self.set("Spindle.Temp", self.get("Spindle.Temp") + 0.25)
        self.set("Parts.Count", self.get("Parts.Count") + 1)

    def stop(self) -> None:
        """Switch the server off: the listening socket and every connection are closed."""
        assert self._server is not None
        self._call(self._server.stop())

    def start(self) -> None:
        assert self._server is not None
        self._call(self._server.start())

    def close(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):  # stopped already
                self._call(self._server.stop())
        self._call(self._cancel_the_rest())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    @staticmethod
    async def _cancel_the_rest() -> None:
        """The server's sessions and subscriptions keep tasks that its stop leaves behind."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _init(self) -> None:
        server = Server(user_manager=_Users(self._users) if self._users else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        if self._certificate is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await server.set_application_uri(SERVER_URI)
            await server.load_certificate(self._certificate[0], "pem")
            await server.load_private_key(self._certificate[1], None, "pem")
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        if self._users:
            server.set_security_IDs(["Username"])
        self.namespace = await server.register_namespace(NAMESPACE)
        machine = await server.nodes.objects.add_object(self.namespace, "Machine")
        for name, (variant, value) in VARIABLES.items():
            node = await machine.add_variable(
                ua.NodeId(name, self.namespace), name, ua.Variant(value, variant)
            )
            await node.set_writable()
            self._nodes[name] = node
        await server.start()
        self._server = server

    async def _write(self, name: str, value: Any) -> dt.datetime:
        now = dt.datetime.now(dt.UTC)
        variant = ua.Variant(value, VARIABLES[name][0])
        await self._nodes[name].write_value(
            ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now)
        )
        return now

    async def _write_status(self, name: str, code: int) -> None:
        now = dt.datetime.now(dt.UTC)
        await self._nodes[name].write_value(
            ua.DataValue(StatusCode=ua.StatusCode(code), SourceTimestamp=now, ServerTimestamp=now)
        )
