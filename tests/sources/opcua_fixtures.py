"""The OPC UA tests' simulated machines (real asyncua servers on free loopback ports)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

from keys.bao import free_port
from tests.conftest import require


@pytest.fixture(scope="module")
def opcua_machine() -> Iterator[Any]:
    """A simulated machine tool behind a real asyncua OPC UA server (anonymous login)."""
    yield from _machine(users=None)


@pytest.fixture(scope="module")
def opcua_machine_with_login() -> Iterator[Any]:
    """The same machine, which lets in only the user ``veil`` with password ``s3cret``."""
    yield from _machine(users={"veil": "s3cret"})


@pytest.fixture(scope="module")
def opcua_machine_secured() -> Iterator[Any]:
    """The same machine, which offers only Basic256Sha256 (signed and encrypted);
    ``machine.certificate`` is its certificate (PEM)."""
    yield from _machine(users=None, secured=True)


def _machine(users: dict[str, str] | None, *, secured: bool = False) -> Iterator[Any]:
    require(importlib.util.find_spec("asyncua") is not None, "the asyncua package")
    from tests.sources.opcua_machine import SERVER_URI, SimulatedMachine, self_signed

    certificate = self_signed(SERVER_URI) if secured else None
    machine = SimulatedMachine(free_port(), users=users, certificate=certificate)
    try:
        yield machine
    finally:
        machine.close()
