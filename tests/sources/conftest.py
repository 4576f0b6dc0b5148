"""Fixtures of the source kinds' tests: each kind's real server in its own module."""

from tests.sources.opcua_fixtures import (
    opcua_machine,
    opcua_machine_secured,
    opcua_machine_with_login,
)

__all__ = ["opcua_machine", "opcua_machine_secured", "opcua_machine_with_login"]
