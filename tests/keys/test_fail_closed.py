"""Key server stopped or sealed: every operation that needs a key fails closed, specifically."""

from __future__ import annotations

import threading

import pytest

from keys import (
    DecryptionError,
    KeyServerConfig,
    KeyServerUnavailable,
    KeyService,
    LocalKeyServer,
)
from tests.conftest import DevServer

pytestmark = pytest.mark.integration


def test_stopping_the_server_in_the_middle_of_use_fails_closed(
    own_key_server: LocalKeyServer,
) -> None:
    keys = KeyService.connect(own_key_server.config())
    keys.create_tenant("acme")
    wrapped, blob = keys.encrypt_bytes("acme", "ds", 1, b"secret rows")
    outcomes: list[object] = []
    enough = threading.Event()
    stopped = threading.Event()

    def worker() -> None:
        while len(outcomes) < 2000 and not (stopped.is_set() and len(outcomes) > 50):
            try:
                outcomes.append(keys.decrypt_bytes("acme", "ds", 1, wrapped, blob))
            except Exception as exc:
                outcomes.append(exc)
            if len(outcomes) >= 20:
                enough.set()

    thread = threading.Thread(target=worker)
    thread.start()
    assert enough.wait(30)
    own_key_server.stop()
    stopped.set()
    thread.join(60)
    assert not thread.is_alive()

    successes = [o for o in outcomes if o == b"secret rows"]
    failures = [o for o in outcomes if o != b"secret rows"]
    assert len(successes) >= 20
    assert failures, "no operation ran after the stop"
    assert all(isinstance(f, KeyServerUnavailable) for f in failures), {type(f) for f in failures}
    # Once failed, it never silently succeeded again while the server was down.
    first_failure = outcomes.index(failures[0])
    assert all(isinstance(o, KeyServerUnavailable) for o in outcomes[first_failure:])
    with pytest.raises(KeyServerUnavailable, match="cannot reach the key server"):
        keys.encrypt_bytes("acme", "ds2", 1, b"new data")
    with pytest.raises(KeyServerUnavailable):
        keys.sign(b"checkpoint")

    own_key_server.start()  # back: the same KeyService resumes with no manual step
    assert keys.decrypt_bytes("acme", "ds", 1, wrapped, blob) == b"secret rows"


def test_a_sealed_server_fails_closed(dev_server: DevServer) -> None:
    keys = KeyService.connect(KeyServerConfig(addr=dev_server.addr, token=dev_server.root_token))
    keys.create_tenant("acme")
    wrapped, blob = keys.encrypt_bytes("acme", "ds", 1, b"rows")
    dev_server.root().sys.seal()
    with pytest.raises(KeyServerUnavailable, match="sealed"):
        keys.decrypt_bytes("acme", "ds", 1, wrapped, blob)
    with pytest.raises(KeyServerUnavailable, match="sealed"):
        keys.encrypt_bytes("acme", "ds", 2, b"rows")
    with pytest.raises(KeyServerUnavailable, match="sealed"):
        KeyService.connect(KeyServerConfig(addr=dev_server.addr, token=dev_server.root_token))


def test_a_damaged_wrapped_key_is_refused_without_asking_the_server(keys: KeyService) -> None:
    keys.create_tenant("acme")
    _, blob = keys.encrypt_bytes("acme", "ds", 1, b"rows")
    for wrapped in ["", "not-a-key", "vault:v0:AAAA", "vault:v1:" + "!" * 40]:
        with pytest.raises(DecryptionError):
            keys.decrypt_bytes("acme", "ds", 1, wrapped, blob)
