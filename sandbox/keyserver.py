"""Wiring the ``keys`` package to Veil's settings: embedded or external key server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from keys import KeyService, LocalKeyServer
from sandbox.settings import Settings


@contextmanager
def key_service(settings: Settings, *, stop_embedded: bool = True) -> Iterator[KeyService]:
    """Connect to the configured key server, starting the embedded one if needed.

    With the embedded server, it is stopped on exit unless ``stop_embedded`` is
    false or it was already running before (then it is left as it was).
    """
    if not settings.embedded_key_server:
        yield KeyService.connect(settings.external_key_server())
        return
    server = LocalKeyServer(settings.keyserver_home)
    already_running = server.is_running()
    config = server.start()
    try:
        yield KeyService.connect(config)
    finally:
        if stop_embedded and not already_running:
            server.stop()
