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


def _machine(users: dict[str, str] | None) -> Iterator[Any]:
    require(importlib.util.find_spec("asyncua") is not None, "the asyncua package")
    from tests.sources.opcua_machine import SimulatedMachine

    machine = SimulatedMachine(free_port(), users=users)
    try:
        yield machine
    finally:
        machine.close()
