"""Which node of a key-server cluster the client talks to, and which failures mean "another".

Private to :mod:`keys.vault`, whose :class:`~keys.vault.KeyServerClient` retries a call
on the other nodes of a cluster (``docs/keys.md``, "A highly available key server").
"""

from __future__ import annotations

import threading
import time

import hvac.exceptions
import requests

#: Answers worth trying on another node: the node is down or hung, sealed or a standby
#: that cannot serve (503), or failing while the cluster elects a new leader (500, 502).
NODE_FAILURES: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
)
RETRY_PAUSE_S = 0.1  # between rounds over every node
_LEADER_CHECK_S = 5.0  # how often a client of a cluster asks which node is active
_FAILED_FOR_S = 2.0  # a node that failed is not taken for the active one this long


class Nodes:
    """The nodes of one key-server cluster, and the one requests go to now.

    Requests go to the active node when it is known: OpenBao standbys answer reads
    themselves, and a standby may not yet have applied a write just made on the
    active node (a fresh login or secret id), so a client that stays on a standby
    sees its own writes missing.  Which node is active is asked of the nodes
    (``sys/leader``, unauthenticated) after each failure, and every few seconds.
    """

    def __init__(self, addrs: tuple[str, ...], timeout_s: float) -> None:
        self.addrs = addrs
        self._timeout = min(timeout_s, 1.0)
        self._current = 0
        self._lock = threading.Lock()
        self._next_check = 0.0  # when to ask again which node is active
        self._failed: dict[str, float] = {}  # node -> when it last failed a request

    @property
    def current(self) -> str:
        return self.addrs[self._current]

    def move_on(self, failed: str) -> None:
        """Send later requests to the active node, else to the node after ``failed``."""
        with self._lock:
            self._failed[failed] = time.monotonic()
            if self.addrs[self._current] == failed:
                self._current = (self._current + 1) % len(self.addrs)
                self._next_check = 0.0
        self.follow_leader()

    def follow_leader(self) -> None:
        """If it is time to look, point requests at the node the cluster calls active."""
        if len(self.addrs) == 1:
            return
        with self._lock:
            now = time.monotonic()
            if now < self._next_check:
                return
            self._next_check = now + _LEADER_CHECK_S
        leader = self._find_leader()
        if leader is None:
            with self._lock:
                self._next_check = time.monotonic() + RETRY_PAUSE_S  # mid-election: soon again
            return
        with self._lock:
            self._current = self.addrs.index(leader)

    def _find_leader(self) -> str | None:
        for i in range(len(self.addrs)):
            addr = self.addrs[(self._current + i) % len(self.addrs)]
            try:
                answer = requests.get(f"{addr}/v1/sys/leader", timeout=self._timeout).json()
            except (requests.RequestException, ValueError):
                continue
            leader = str(answer.get("leader_address") or "").rstrip("/")
            # A standby names a dead leader until the next election: skip what just failed.
            just_failed = time.monotonic() - self._failed.get(leader, -1e9) < _FAILED_FOR_S
            if leader in self.addrs and not just_failed:
                return leader
        return None
