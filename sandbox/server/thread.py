"""Serving the API from a background thread on a free loopback port (demo and tests)."""

from __future__ import annotations

import threading
import time

import uvicorn

from keys.bao import free_port
from sandbox.api.transport import tls_options
from sandbox.config.settings import Settings
from sandbox.runtime.veil import Veil
from sandbox.server.app import create_app


class ApiThread:
    """``with ApiThread(settings, veil) as url:`` serves the API until the block ends.

    Over TLS (``https://``) when the settings name a certificate and key
    (:func:`~sandbox.api.transport.tls_options` checks them here, before anything starts).
    """

    def __init__(self, settings: Settings, veil: Veil) -> None:
        self.port = free_port()
        tls = tls_options(settings)
        self.scheme = "https" if tls else "http"
        config = uvicorn.Config(
            create_app(settings, veil),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            **tls,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="veil-api", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
