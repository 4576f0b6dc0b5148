"""Group commit: what many threads ask for at once, written in one transaction.

Each write transaction holds the database's write lock (``Database.transaction``), so
writes that arrive together would take turns at it, one commit each.  A
:class:`GroupCommit` lets them share a turn instead: the first thread to arrive *leads*
the turn; it calls ``work``, which takes the requests waiting then (:meth:`Turn.items`,
up to ``limit``) and does them together, while the requests arriving later wait for the
next turn.  When it is done it hands the lead to the oldest request still waiting, and
that thread does the next turn.  No thread is added: a request is done by a thread that
asked, and a request alone is done at once, as if there were no group.

``work`` should take the items once it holds the write lock: the requests that arrive
while it waits for the lock join its turn.  It returns one outcome per item taken, in
their order: a value, or the exception to raise in that item's thread.  Whatever it
raises itself is the outcome of every item of the turn.  ``then`` (optional) gets the
items and outcomes once the lead has been handed on, before the requests are told: what
must follow the commit but need not hold up the next turn (its errors are logged: the
turn is done).  One :class:`GroupCommit` serves one kind of work: every call of
:meth:`GroupCommit.run` passes the same ``work`` and ``then``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: The most requests one turn does: a longer turn would hold the write lock longer.
LIMIT = 64


@dataclass(eq=False)
class _Request(Generic[T, R]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    outcome: R | BaseException | None = None
    finished: bool = False  # else, if woken: it leads the next turn

    def result(self) -> R:
        assert self.finished
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome  # type: ignore[return-value]  # R, when not an exception


class Turn(Generic[T]):
    """One turn of a :class:`GroupCommit`: the requests its ``work`` takes."""

    def __init__(self, group: GroupCommit[T, Any]) -> None:
        self._group = group
        self._taken: list[_Request[T, Any]] | None = None

    def items(self) -> list[T]:
        """The items of the requests waiting now (the first call takes them), oldest first;
        the leader's own among them."""
        if self._taken is None:
            self._taken = self._group._take()
        return [request.item for request in self._taken]


Work = Callable[[Turn[T]], Sequence[R | BaseException]]
Then = Callable[[Sequence[T], Sequence[R | BaseException]], None]


class GroupCommit(Generic[T, R]):
    """Requests made at once by many threads, done in turns of up to ``limit``."""

    def __init__(self, limit: int = LIMIT) -> None:
        if limit < 1:
            raise ValueError("a turn does at least one request")
        self.limit = limit
        self._lock = threading.Lock()
        self._waiting: list[_Request[T, R]] = []
        self._leading = False  # a thread is doing a turn, or has been woken to

    @property
    def waiting(self) -> int:
        """How many requests wait for a turn (the one being led not counted)."""
        with self._lock:
            return len(self._waiting)

    def run(self, item: T, work: Work[T, R], then: Then[T, R] | None = None) -> R:
        """``item``'s outcome, done alone or in a turn with the items waiting with it."""
        request: _Request[T, R] = _Request(item)
        with self._lock:
            self._waiting.append(request)
            lead = not self._leading
            self._leading = True
        if not lead:
            request.done.wait()
        if not request.finished:  # it leads (it is the oldest waiting: in the turn)
            self._turn(work, then)
        return request.result()

    def _take(self) -> list[_Request[T, R]]:
        with self._lock:
            taken = self._waiting[: self.limit]
            del self._waiting[: self.limit]
        return taken

    def _turn(self, work: Work[T, R], then: Then[T, R] | None) -> None:
        turn: Turn[T] = Turn(self)
        try:
            outcomes: Sequence[Any] = work(turn)
            turn.items()  # taken, if work did not
            assert turn._taken is not None
            if len(outcomes) != len(turn._taken):
                raise RuntimeError(f"{len(turn._taken)} requests, {len(outcomes)} outcomes")
        except BaseException as exc:  # each request's thread raises it
            turn.items()
            assert turn._taken is not None
            outcomes = [exc] * len(turn._taken)
        finally:
            with self._lock:
                following = self._waiting[0] if self._waiting else None
                self._leading = following is not None
            if following is not None:
                following.done.set()
        taken = turn._taken
        try:
            if then is not None:
                then([request.item for request in taken], outcomes)
        except Exception:  # the turn is done: its requests get their outcomes all the same
            log.exception("what follows a turn of %d requests failed", len(taken))
        finally:
            for request, outcome in zip(taken, outcomes, strict=True):
                request.outcome, request.finished = outcome, True
                request.done.set()
