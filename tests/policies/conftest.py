"""The authorization world of tests/security, one per module of these tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keys import LocalKeyServer
from tests.security.authz_world import AuthzWorld, build


@pytest.fixture(scope="module")
def authz(
    tmp_path_factory: pytest.TempPathFactory, key_server: LocalKeyServer
) -> Iterator[AuthzWorld]:
    yield from build(tmp_path_factory.mktemp("capabilities"), key_server)
