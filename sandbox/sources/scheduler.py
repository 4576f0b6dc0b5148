"""The scheduler: runs each due source, one at a time, in a thread of the process that runs
jobs (``veil node run``, ``veil serve`` with its embedded worker, ``veil worker``).

Several processes may run it on one database: each run takes the source's lease first
(``sandbox.sources.leases``), so a source is read by one of them at a time. A source is
kept open between its runs, so that a continuous one (subscriptions) keeps receiving; it is
opened again when its declaration changes. A continuous source has **one reader**: the
scheduler that runs it keeps its lease between runs, renewed at each poll, and gives it back
when it stops; and it reuses the copy it kept open only while it held the lease without a
break. A lease it lost (it ran out, and another reader took the source) closes that copy:
the next run opens the source afresh, so it never returns what another reader's runs
stored.

A failed run does not close a kept source: every kind connects again by itself at its next
read, and a continuous source's messages not yet stored (read, but their run failed) stay in
it to be read again (``docs/sources.md``). Only after ``REOPEN_AFTER`` failed runs in a row
is it closed and opened afresh, in case its client is stuck; a continuous source's unstored
messages are lost then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime

from sandbox.runtime.veil import Veil
from sandbox.sources import kinds, leases
from sandbox.sources.base import Batch, Source
from sandbox.sources.runs import open_declared, run_source
from sandbox.store.source_models import SourceDeclaration

log = logging.getLogger(__name__)

#: Failed runs in a row after which a kept source is closed and opened afresh.
REOPEN_AFTER = 5


class _Kept:
    """A source kept open across runs: ``close`` at the end of a run does not close it."""

    def __init__(
        self, source: Source, fingerprint: tuple[str, int, datetime], continuous: bool
    ) -> None:
        self.source, self.fingerprint, self.continuous = source, fingerprint, continuous

    def read(self, cursor: str | None) -> Batch:
        return self.source.read(cursor)

    def close(self) -> None:
        pass


class SourceScheduler(threading.Thread):
    """Runs due sources until ``stop`` (which waits for the run under way to end, closes the
    sources kept open and gives their leases back)."""

    def __init__(self, veil: Veil) -> None:
        super().__init__(name="veil-sources", daemon=True)
        self.veil = veil
        self.owner = leases.scheduler_owner()
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
        try:  # closed first: the next reader never overlaps this one
            leases.give_back(self.veil, self.owner)
        except Exception:  # the database away: the leases run out instead
            log.warning("the source scheduler could not give its leases back; they run out")

    def run(self) -> None:
        while not self._stopping.wait(self.veil.settings.source_poll_s):
            try:
                self.run_due()
            except Exception:  # the database away: looked at again at the next poll
                log.warning("the source scheduler could not look for due sources; retried")

    def run_due(self) -> int:
        """Run every source due now; how many ran."""
        ran = 0
        for source_id in leases.due_sources(self.veil, self.owner):
            if self._stopping.is_set():
                break
            self._renew()
            if leases.keep(self.veil, source_id, self.owner):
                pass  # held without a break: a copy kept open is still the one reader
            elif leases.claim(self.veil, source_id, self.owner):
                self._close_continuous(source_id)  # another reader may have read meanwhile
            else:
                continue
            outcome = run_source(self.veil, source_id, self.owner, self._opened, hold=True)
            failed = self._failed.pop(source_id, 0) + 1 if outcome.error is not None else 0
            if failed >= REOPEN_AFTER and source_id in self._open:
                self._open.pop(source_id).source.close()  # opened afresh next time
            elif failed:
                self._failed[source_id] = failed
            ran += 1
        self._renew()
        return ran

    def _renew(self) -> None:
        """Renew the leases held; close the continuous sources whose lease was lost."""
        held = leases.renew(self.veil, self.owner)
        for source_id in [s for s, kept in self._open.items() if kept.continuous]:
            if source_id not in held:
                log.warning("source %s: its lease was lost; opened afresh next time", source_id)
                self._close_continuous(source_id)

    def _close_continuous(self, source_id: str) -> None:
        kept = self._open.get(source_id)
        if kept is not None and kept.continuous:
            del self._open[source_id]
            kept.source.close()

    def _opened(self, source: SourceDeclaration, credentials: Mapping[str, str]) -> Source:
        fingerprint = (source.kind, source.secrets_version, source.updated_at)
        kept = self._open.get(source.id)
        if kept is not None and kept.fingerprint == fingerprint:
            return kept
        if kept is not None:
            kept.source.close()
        continuous = kinds.continuous(source.kind, source.config)
        kept = _Kept(open_declared(source, credentials), fingerprint, continuous)
        self._open[source.id] = kept
        return kept
