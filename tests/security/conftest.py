"""Hardening tests: authorization, hostile input, limits and privacy attacks, on a real Veil."""

from __future__ import annotations

from tests.sandbox.conftest import api, crypto_profile, veil, world  # noqa: F401 - the sandbox's fixtures
