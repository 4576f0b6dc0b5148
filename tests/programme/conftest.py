"""The sandbox's fixtures, for the programme's tests on its world."""

from tests.sandbox.conftest import api, veil, world  # noqa: F401 - the sandbox's fixtures
