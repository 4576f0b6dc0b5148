"""The scheduler: runs each due source, one at a time, in a thread of the process that runs
jobs (``veil node run``, ``veil serve`` with its embedded worker, ``veil worker``).

Several processes may run it on one database: each run is claimed first (``runs.claim``,
an atomic update), so a source is read by one of them at a time. A source is kept open
between its runs, so that a continuous one (subscriptions) keeps receiving; it is opened
again when its declaration changes. A failed run does not close it: every kind connects
again by itself at its next read, and a continuous source's messages not yet stored
(read, but their run failed) stay in it to be read again (``docs/sources.md``). Only after
``REOPEN_AFTER`` failed runs in a row is it closed and opened afresh, in case its client is
stuck; a continuous source's unstored messages are lost then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime

from policies.db import new_id
from sandbox.runtime.veil import Veil
from sandbox.sources.base import Batch, Source
from sandbox.sources.runs import claim, due_sources, open_declared, run_source
from sandbox.store.source_models import SourceDeclaration

log = logging.getLogger(__name__)

#: Failed runs in a row after which a kept source is closed and opened afresh.
REOPEN_AFTER = 5


class _Kept:
    """A source kept open across runs: ``close`` at the end of a run does not close it."""

    def __init__(self, source: Source, fingerprint: tuple[str, int, datetime]) -> None:
        self.source, self.fingerprint = source, fingerprint

    def read(self, cursor: str | None) -> Batch:
        return self.source.read(cursor)

    def close(self) -> None:
        pass


class SourceScheduler(threading.Thread):
    """Runs due sources until ``stop`` (which waits for the run under way to end)."""

    def __init__(self, veil: Veil) -> None:
        super().__init__(name="veil-sources", daemon=True)
        self.veil = veil
        self.owner = new_id("sched")
        self._stopping = threading.Event()
        self._open: dict[str, _Kept] = {}
        self._failed: dict[str, int] = {}  # failed runs in a row, by source

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
        for kept in self._open.values():
            kept.source.close()
        self._open.clear()

    def run(self) -> None:
        while not self._stopping.wait(self.veil.settings.source_poll_s):
            try:
                self.run_due()
            except Exception:  # the database away: looked at again at the next poll
                log.warning("the source scheduler could not look for due sources; retried")

    def run_due(self) -> int:
        """Run every source due now; how many ran."""
        ran = 0
        for source_id in due_sources(self.veil):
            if self._stopping.is_set():
                break
            if not claim(self.veil, source_id, self.owner):
                continue
            outcome = run_source(self.veil, source_id, self.owner, self._opened)
            failed = self._failed.pop(source_id, 0) + 1 if outcome.error is not None else 0
            if failed >= REOPEN_AFTER and source_id in self._open:
                self._open.pop(source_id).source.close()  # opened afresh next time
            elif failed:
                self._failed[source_id] = failed
            ran += 1
        return ran

    def _opened(self, source: SourceDeclaration, credentials: Mapping[str, str]) -> Source:
        fingerprint = (source.kind, source.secrets_version, source.updated_at)
        kept = self._open.get(source.id)
        if kept is not None and kept.fingerprint == fingerprint:
            return kept
        if kept is not None:
            kept.source.close()
        kept = _Kept(open_declared(source, credentials), fingerprint)
        self._open[source.id] = kept
        return kept
