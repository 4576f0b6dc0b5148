"""A node's waiting claim and collaboration phases: the claim says what woke it, a round
woken for a phase answers only the phase, and a phase opened after the node last read its
tasks returns the claim however long the node's round took (a wake it missed is not a
claim waited out).  Three real nodes, as in ``test_collaborations``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from keys.node_auth import TASKS_AT_HEADER, WAKE_HEADER
from node.protocol.client import Reply
from sandbox.collaborations.runs import CLAIM_GRACE_S
from sandbox.config.settings import Settings
from tests.nodes.test_collaborations import LOCAL, Member, World, build_world, propose

NODES = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("collab-wake")
    with contextlib.ExitStack() as stack:
        yield build_world(stack, home, Settings(data_dir=home / "cp", **LOCAL), nodes=NODES)


def _claim(member: Member, wait: float, since: str | None = None) -> tuple[Reply, float]:
    path = f"/node/v1/jobs/claim?wait={wait:g}" + (f"&since={since}" if since else "")
    started = time.monotonic()
    reply = member.link.control.send("POST", path)
    return reply, time.monotonic() - started


def _started(world: World) -> tuple[str, str]:
    collaboration = propose(world, minimum=NODES)
    world.join(world.members, collaboration)
    run = world.provider.start_collaboration_run(collaboration)
    return collaboration, str(run["id"])


def test_a_claim_says_a_phase_woke_it_and_waits_for_what_the_node_read(world: World) -> None:
    collaboration, run_id = _started(world)
    first = world.members[0]
    woken, took = _claim(first, 5)  # the advertise phase opened just before the claim
    assert woken.body is None and woken.headers.get(WAKE_HEADER) == "collaboration"
    assert took < 4
    # The node read its tasks (and did not answer): a claim since that read waits it out.
    read = first.link.control.send("GET", "/node/v1/collaborations/tasks")
    assert [t["phase"] for t in read.body] == ["advertise"]
    since = read.headers[TASKS_AT_HEADER]
    waited, took = _claim(first, 1, since)
    assert waited.body is None and WAKE_HEADER not in waited.headers and took >= 1
    # Read before the phase opened: the claim returns at once.
    early, took = _claim(first, 5, f"{float(since) - 10:.6f}")
    assert early.headers.get(WAKE_HEADER) == "collaboration" and took < 4
    world.rounds(collaboration, run_id)


def test_a_phase_opened_after_the_read_returns_the_claim_past_the_grace(world: World) -> None:
    """The node read its tasks and answered; the phase moved on while its round went on
    longer than the grace: its claim with ``since`` returns at once."""
    collaboration, run_id = _started(world)
    first, others = world.members[0], world.members[1:]
    first.link.collab_desk.sync()  # its advert
    since = first.link.collab_desk.read_at
    for member in others:
        member.link.collab_desk.sync()  # theirs: the share phase opens
    time.sleep(CLAIM_GRACE_S + 0.5)
    woken, took = _claim(first, 8, since)
    assert woken.headers.get(WAKE_HEADER) == "collaboration" and took < 5
    world.rounds(collaboration, run_id)


def test_a_round_woken_for_a_phase_reads_only_the_phase(world: World) -> None:
    collaboration, run_id = _started(world)
    first, others = world.members[0], world.members[1:]

    def answer_later() -> None:
        time.sleep(0.5)
        for member in others:
            member.link.collab_desk.sync()  # the share phase opens while the claim waits

    later = threading.Thread(target=answer_later)
    later.start()
    first.link.run_round(claim_wait_s=8)  # a full round (its advert); a claim woken
    later.join()
    assert first.link._woke == "collaboration"
    sent: list[str] = []
    real = first.link.control.send

    def send(method: str, path: str, body: Any = None) -> Reply:
        sent.append(path.split("?")[0])
        return real(method, path, body)

    first.link.control.send = send  # type: ignore[method-assign]
    # The catalog and the code requests were read at the start of the round above; on a busy
    # machine that round alone can outlast CODE_EVERY_S, making them due again.  The claim
    # here is about a round in which they are not due: say so, rather than rely on speed.
    first.link._code_at = time.monotonic()
    try:
        first.link.run_round(claim_wait_s=0.5)
    finally:
        first.link.control.send = real  # type: ignore[method-assign]
    assert "/node/v1/collaborations/tasks" in sent
    assert [p for p in sent if p.startswith(f"/node/v1/collaborations/runs/{run_id}/")], sent
    assert not [p for p in sent if p.endswith(("code-requests", "providers"))], sent
    world.rounds(collaboration, run_id)
