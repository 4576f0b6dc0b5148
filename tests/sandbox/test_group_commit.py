"""Group commit (``sandbox.store.group_commit``): requests made at once are done in turns,
each request's outcome reaches its own thread, and no request waits forever."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox.store.group_commit import GroupCommit, Turn

DEADLINE_S = 30.0


def _until(condition: object, what: str) -> None:
    """Wait (polling, bounded) until ``condition()``: no timing is assumed."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class _Gated:
    """A ``work`` whose first turn waits for ``release`` after taking nothing yet: the
    requests made meanwhile queue up behind it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.turns: list[list[int]] = []
        self.first = True

    def __call__(self, turn: Turn[int]) -> list[int | BaseException]:
        if self.first:
            self.first = False
            self.release.wait(DEADLINE_S)
        items = turn.items()
        self.turns.append(items)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


def test_requests_made_while_a_turn_waits_are_done_together_each_its_own_outcome() -> None:
    group: GroupCommit[int, int] = GroupCommit()
    work = _Gated()
    requests = 12

    def ask(i: int) -> int | str:
        try:
            return group.run(i, work)
        except ValueError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=requests) as pool:
        futures = [pool.submit(ask, 0)]
        _until(lambda: not work.first, "the first turn to start")
        futures += [pool.submit(ask, i) for i in range(1, requests)]
        # All of them, the leader's own too: its turn has not taken its items yet.
        _until(lambda: group.waiting == requests, "the requests to queue")
        work.release.set()
        outcomes = [f.result(timeout=DEADLINE_S) for f in futures]
    # The leader took its items after the gate: the queued requests joined its turn.
    assert work.turns == [list(range(requests))]
    assert outcomes == [f"odd {i}" if i % 2 else i * 10 for i in range(requests)]
    assert group.waiting == 0


def test_a_turn_that_raises_fails_its_requests_and_the_next_turn_goes_on() -> None:
    group: GroupCommit[int, int] = GroupCommit()
    entered, release = threading.Event(), threading.Event()
    calls: list[list[int]] = []

    def work(turn: Turn[int]) -> list[int | BaseException]:
        items = turn.items()
        calls.append(items)
        if len(calls) == 1:
            entered.set()
            release.wait(DEADLINE_S)
            raise RuntimeError("the database went away")
        return list(items)

    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(group.run, 1, work)
        assert entered.wait(DEADLINE_S)
        later = [pool.submit(group.run, i, work) for i in (2, 3, 4)]
        _until(lambda: group.waiting == 3, "the later requests to queue")
        release.set()
        with pytest.raises(RuntimeError, match="went away"):
            first.result(timeout=DEADLINE_S)
        assert [f.result(timeout=DEADLINE_S) for f in later] == [2, 3, 4]
    assert calls == [[1], [2, 3, 4]]  # the oldest waiting led the second turn


def test_outcomes_that_do_not_match_the_items_fail_the_turn() -> None:
    group: GroupCommit[int, int] = GroupCommit()
    with pytest.raises(RuntimeError, match="1 requests, 0 outcomes"):
        group.run(1, lambda turn: turn.items()[1:])  # one item taken, no outcome


def test_then_follows_the_hand_over_and_its_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    group: GroupCommit[int, int] = GroupCommit()
    seen: list[tuple[Sequence[int], Sequence[int | BaseException]]] = []

    def then(items: Sequence[int], outcomes: Sequence[int | BaseException]) -> None:
        seen.append((items, outcomes))
        raise OSError("the queue is down")

    with caplog.at_level(logging.ERROR, logger="sandbox.store.group_commit"):
        assert group.run(7, lambda turn: [i + 1 for i in turn.items()], then) == 8
    assert seen == [([7], [8])]
    assert "what follows a turn of 1 requests failed" in caplog.text


def test_a_turn_takes_at_most_its_limit() -> None:
    group: GroupCommit[int, int] = GroupCommit(limit=3)
    work = _Gated()
    with ThreadPoolExecutor(max_workers=7) as pool:
        futures = [pool.submit(group.run, 0, work)]
        _until(lambda: not work.first, "the first turn to start")
        futures += [pool.submit(group.run, i, work) for i in (2, 4, 6, 8, 10, 12)]
        _until(lambda: group.waiting == 7, "the requests to queue")
        work.release.set()
        assert [f.result(timeout=DEADLINE_S) for f in futures] == [0, 20, 40, 60, 80, 100, 120]
    assert [len(t) for t in work.turns] == [3, 3, 1]
    with pytest.raises(ValueError, match="at least one"):
        GroupCommit(limit=0)
