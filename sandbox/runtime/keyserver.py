"""Wiring the ``keys`` package to Veil's settings: embedded or external key server; and
auditing the key server's unavailability."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from keys import KeyService, LocalKeyServer
from policies import audit
from sandbox.config.datadir import prepare_data_dir
from sandbox.config.settings import Settings
from sandbox.store.database import Database

log = logging.getLogger(__name__)


@contextmanager
def key_service(settings: Settings, *, stop_embedded: bool = True) -> Iterator[KeyService]:
    """Connect to the configured key server, starting the embedded one if needed.

    With the embedded server, it is stopped on exit unless ``stop_embedded`` is
    false or it was already running before (then it is left as it was).
    """
    if not settings.embedded_key_server:
        yield KeyService.connect(settings.external_key_server(), profile=settings.crypto_profile)
        return
    prepare_data_dir(settings.data_dir)
    server = LocalKeyServer(settings.keyserver_home)
    already_running = server.is_running()
    config = server.start()
    try:
        yield KeyService.connect(config, profile=settings.crypto_profile)
    finally:
        if stop_embedded and not already_running:
            server.stop()


class KeyOutageAudit:
    """Audits every key-server call that failed because the server was unavailable.

    ``seen`` (the key service's hook) only queues the failure: the failing call may run
    inside a write transaction, which an audit write from the same thread would wait for.
    A thread of its own writes the queued failures every ``interval_s``, one
    ``key_server.unavailable`` event per action with how often and when it failed, so an
    outage under load adds a few events a second, not one per request.
    """

    def __init__(
        self, db: Database, clock: Callable[[], datetime], interval_s: float = 0.5
    ) -> None:
        self._db, self._clock, self._interval = db, clock, interval_s
        self._queue: queue.SimpleQueue[tuple[str, datetime]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="veil-key-outage-audit", daemon=True)

    def seen(self, action: str) -> None:
        self._queue.put((action, self._clock()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is still queued (a failure there is logged)."""
        self._stopping.set()
        self._thread.join(30)
        try:
            self.flush()
        except Exception:
            log.exception("could not audit the key server's unavailability")

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.flush()
            except Exception:  # the database is busy or gone: the next round retries
                log.exception("could not audit the key server's unavailability")

    def flush(self) -> int:
        """Write the failures queued so far; return how many events were written."""
        seen: dict[str, list[datetime]] = {}
        while True:
            try:
                action, at = self._queue.get_nowait()
            except queue.Empty:
                break
            seen.setdefault(action, []).append(at)
        if not seen:
            return 0
        try:
            with self._db.transaction() as session:
                for action, times in seen.items():
                    audit.record(
                        session,
                        "key_server.unavailable",
                        outcome=audit.Outcome.FAILED,
                        details={
                            "action": action,
                            "failures": len(times),
                            "first_at": min(times).isoformat(),
                            "last_at": max(times).isoformat(),
                        },
                    )
        except Exception:
            for action, times in seen.items():  # not lost: the next flush writes them
                for at in times:
                    self._queue.put((action, at))
            raise
        return len(seen)
