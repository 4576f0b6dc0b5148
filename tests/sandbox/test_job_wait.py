"""``GET /v1/jobs/{id}?wait=S``: a long poll for a job's end, woken in this process, re-read
for other processes' ends, bounded per principal, and checked again before it answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keys import LocalKeyServer
from sandbox.api import job_waits
from sandbox.client import ApiError, VeilClient
from sandbox.jobs.outcomes import fail_running
from sandbox.jobs.runner import claim_next_job
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from sandbox.store.models import Job, JobStatus
from tests.sandbox.conftest import PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]


@pytest.fixture
def idle(tmp_path: Path, key_server: LocalKeyServer) -> Iterator[tuple[Veil, World]]:
    """A world whose jobs stay queued: no worker runs them unless the test does."""
    with (
        open_veil(settings_for(tmp_path, key_server), worker=False) as veil,
        ApiThread(veil.settings, veil) as url,
    ):
        yield veil, make_world(veil, url)


class Waiting:
    """A ``GET /v1/jobs/{id}?wait=`` in a thread of its own: its answer (or error), and how
    long it took."""

    def __init__(self, client: VeilClient, job_id: str, wait: float) -> None:
        self.answer: dict[str, Any] | None = None
        self.error: ApiError | None = None
        self.seconds = 0.0

        def ask() -> None:
            t0 = time.monotonic()
            try:
                self.answer = client.get_job(job_id, wait=wait)
            except ApiError as exc:
                self.error = exc
            self.seconds = time.monotonic() - t0

        self.thread = threading.Thread(target=ask, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 60.0) -> Waiting:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the waiting request did not answer"
        return self


def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


def waiting(veil: Veil, count: int) -> Callable[[], bool]:
    return lambda: veil.job_wakeups.count() == count


def queued_job(world: World) -> str:
    return str(world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, COUNT)["id"])


def end_elsewhere(veil: Veil, job_id: str) -> None:
    """End the job as another process would: in the database, with no wake-up here."""
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.error, job.finished_at = JobStatus.FAILED, "ended elsewhere", veil.clock()


def test_wait_is_bounded_and_answers_the_job_as_it_stands(idle: tuple[Veil, World]) -> None:
    veil, world = idle
    job_id = queued_job(world)
    for bad in ("31", "-1", "nan", "inf", "soon"):
        response = httpx.get(
            f"{world.url}/v1/jobs/{job_id}",
            params={"wait": bad},
            headers=world.provider._http.headers,
        )
        assert response.status_code == 422, bad
    t0 = time.monotonic()
    assert world.provider.get_job(job_id, wait=0.4)["status"] == "queued"
    assert 0.4 <= time.monotonic() - t0 < 10
    assert veil.job_wakeups.count() == 0  # the wait let go of its place
    # Another provider's job: 404 at once, as without wait (never confirms it exists).
    t0 = time.monotonic()
    with pytest.raises(ApiError) as other:
        world.other_provider.get_job(job_id, wait=20)
    assert other.value.status == 404 and time.monotonic() - t0 < 10


def test_a_job_ended_in_this_process_wakes_the_wait(
    idle: tuple[Veil, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No re-read in 60 s: only the wake-up from where the outcome is recorded can answer."""
    veil, world = idle
    monkeypatch.setattr(job_waits, "FIRST_LOOK_S", 60.0)
    job_id = queued_job(world)
    assert claim_next_job(veil) == job_id
    asked = Waiting(world.provider, job_id, wait=30)
    until(waiting(veil, 1))
    ended = time.monotonic()
    assert fail_running(veil, job_id, "stopped by the test")
    done = asked.result()
    assert done.answer is not None and done.answer["status"] == "failed"
    assert time.monotonic() - ended < 10  # woken, not the 30 s wait's end


def test_a_job_ended_by_another_process_is_seen_by_the_re_reads(
    idle: tuple[Veil, World],
) -> None:
    veil, world = idle
    job_id = queued_job(world)
    asked = Waiting(world.provider, job_id, wait=30)
    until(waiting(veil, 1))
    ended = time.monotonic()
    end_elsewhere(veil, job_id)
    done = asked.result()
    assert done.answer is not None and done.answer["status"] == "failed"
    assert time.monotonic() - ended < 10  # the re-reads (at most a second apart), not 30 s


def test_a_principal_may_have_only_so_many_waits(
    idle: tuple[Veil, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    veil, world = idle
    monkeypatch.setattr(veil.job_wakeups, "per_principal", 2)
    job_id = queued_job(world)
    held = [Waiting(world.provider, job_id, wait=30) for _ in range(2)]
    until(waiting(veil, 2))
    t0 = time.monotonic()  # a third: answered at once, as without wait
    assert world.provider.get_job(job_id, wait=30)["status"] == "queued"
    assert time.monotonic() - t0 < 10
    # Per principal: the enterprise whose data it is may still wait.
    theirs = Waiting(world.acme, job_id, wait=30)
    until(waiting(veil, 3))
    end_elsewhere(veil, job_id)
    for asked in [*held, theirs]:
        answer = asked.result().answer
        assert answer is not None and answer["status"] == "failed"
    assert veil.job_wakeups.count() == 0


def test_a_token_revoked_during_the_wait_gets_401_not_the_job(idle: tuple[Veil, World]) -> None:
    """Attack: a credential that was good when the wait began must not carry the answer."""
    veil, world = idle
    job_id = queued_job(world)
    assert claim_next_job(veil) == job_id
    second = world.operator.new_token(world.provider_id)
    asked = Waiting(world.client(second["token"]), job_id, wait=30)
    until(waiting(veil, 1))
    world.operator.revoke_token(second["id"], "leaked")
    assert fail_running(veil, job_id, "stopped by the test")  # the job ends: the wait answers
    done = asked.result()
    assert done.answer is None and done.error is not None
    assert done.error.status == 401
    failed = [e for e in world.operator.audit_events(limit=50) if e["action"] == "auth.failed"]
    assert any(e["resource"] == f"GET /v1/jobs/{job_id}" for e in failed)


def test_a_provider_suspended_during_the_wait_gets_401_not_the_job(
    idle: tuple[Veil, World],
) -> None:
    """Attack: suspending the provider cancels its queued job, which ends the wait; the
    answer is the refusal, not the job."""
    veil, world = idle
    job_id = queued_job(world)
    asked = Waiting(world.provider, job_id, wait=30)
    until(waiting(veil, 1))
    officer = world.operator.create_security_officer("Olivia", None)
    world.client(world.operator.issue_token(officer["id"])).suspend_provider(
        world.provider_id, "exfiltration suspected"
    )
    done = asked.result()
    assert done.answer is None and done.error is not None
    assert done.error.status == 401 and done.error.detail == "this account is suspended"
    assert world.acme.get_job(job_id)["status"] == "failed"  # ended: what woke the wait


def test_wait_for_job_is_one_request_woken_by_the_workers_release(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's wait: one long poll, not a poll every few milliseconds; with no re-read
    in 60 s, what answers it is the release's wake-up (the embedded worker's)."""
    monkeypatch.setattr(job_waits, "FIRST_LOOK_S", 60.0)
    asked: list[str] = []
    client = world.client(world.provider._http.headers["authorization"].split(" ", 1)[1])
    client._http.event_hooks["request"].append(lambda r: asked.append(str(r.url)))
    t0 = time.monotonic()
    final = client.wait_for_job(queued_job(world), timeout=120, poll=0.01, wait=30)
    assert final["status"] == "released"
    assert len(asked) == 1 and "wait=30" in asked[0], asked
    assert time.monotonic() - t0 < 28  # answered by the release, not the wait's end
