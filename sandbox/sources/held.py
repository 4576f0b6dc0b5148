"""What a continuous source holds until the rows made of it are stored: at least once.

A continuous source (MQTT messages, OPC UA changes) receives items while no run reads it,
and must not forget one before the run that read it has stored it. Each item gets a
sequence number. A read returns the items held after its cursor, with a cursor that names
the last of them and how many items had been dropped by then:
``<opening>:<sequence>:<dropped>``, the opening random per :class:`Held`, so that a cursor
of another opening (a restarted node, a source opened afresh) names nothing here.

A read forgets the items at or before its cursor only when that cursor marks stored rows.
The framework's runs (``sandbox.sources.runs``) read from the stored cursor, then on from
the cursor each read returns, until a read brings nothing, and store that last cursor
with the rows. So a cursor marks stored rows in two cases only:

- it is **not the latest read's**: a run starts from its stored cursor; when the latest
  read was past it, the run that read past it failed, and this run reads those items again;
- it is the latest read's **again after that read brought nothing**: the previous run
  ended there and stored it.

Within a run each read is given the cursor the previous read returned, which is neither,
so nothing is forgotten before it is stored. A bounded number of items is held: when full,
new items are dropped and counted; every read says how many were dropped since the last
stored cursor, until a cursor from after the drop is stored.

Not thread-safe: the source calls it under its own lock, or from one thread.
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Taken(Generic[T]):
    """What one read took: the items after its cursor, oldest first; the items it forgot
    (their rows were stored); the cursor naming the last item; and how many items were
    dropped, the buffer full, since the last stored cursor."""

    items: list[T]
    forgotten: list[T]
    cursor: str
    dropped: int


class Held(Generic[T]):
    """At most ``capacity`` items, each with its sequence number (see the module)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._opening = secrets.token_hex(4)
        self._numbers = itertools.count(1)
        self._items: deque[tuple[int, T]] = deque()
        self._dropped = 0  # items dropped with the buffer full, since opening
        self._dropped_stored = 0  # of those, how many a stored cursor already counted
        self._issued: str | None = None  # the cursor of the latest read
        self._issued_empty = True  # whether that read brought nothing

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> bool:
        """Hold ``item``; ``False`` (and counted) when the buffer is full."""
        if len(self._items) >= self.capacity:
            self._dropped += 1
            return False
        self._items.append((next(self._numbers), item))
        return True

    def read(self, cursor: str | None) -> Taken[T]:
        """The items after ``cursor``; those at or before it are forgotten when ``cursor``
        marks stored rows (see the module)."""
        after, dropped_then = self._position(cursor)
        forgotten: list[T] = []
        if cursor != self._issued or self._issued_empty:
            while self._items and self._items[0][0] <= after:
                forgotten.append(self._items.popleft()[1])
            self._dropped_stored = max(self._dropped_stored, dropped_then)
        # The items after the cursor are the newest: taken from the right end.
        newer = list(itertools.takewhile(lambda held: held[0] > after, reversed(self._items)))
        newer.reverse()
        last = newer[-1][0] if newer else after
        self._issued = f"{self._opening}:{last}:{self._dropped}"
        self._issued_empty = not newer
        return Taken(
            [item for _, item in newer],
            forgotten,
            self._issued,
            self._dropped - self._dropped_stored,
        )

    def _position(self, cursor: str | None) -> tuple[int, int]:
        """The last item and the drop count a cursor of this opening names; (0, 0) for
        none, or another opening's (its items are gone)."""
        if cursor is None or not cursor.startswith(self._opening + ":"):
            return 0, 0
        try:
            _, number, dropped = cursor.split(":")
            return int(number), int(dropped)
        except ValueError:
            return 0, 0
