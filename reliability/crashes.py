"""Crashes: SIGKILL the server, or a job's sandbox, in the middle of private-query jobs.

A real ``veil serve`` (its own data directory, the OpenBao the script started) serves a provider
that keeps private-query jobs in flight over HTTP.  Then, many times, at a random point while a
job runs, the script SIGKILLs the server process and starts it again; afterwards, separately,
it SIGKILLs the isolated runner of a running job (the bubblewrap process, or the job's own
process under it), found through ``/proc/<pid>/task/*/children``.  After each kill it checks:
every job open at the kill ends released or failed (none stuck), each release has its debit in
the privacy ledger and happened once, the audit chain verifies, no plaintext of the dataset is
on disk, and a killed server leaves no sandbox process behind.

Run alone: ``.venv/bin/python reliability/crashes.py [--quick]`` (quick: 5 server kills and
3 runner kills; full: 25 and 12).
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reliability._checks import (  # noqa: E402
    books,
    open_jobs,
    plaintext_on_disk,
    released_since,
    settle,
    snapshot,
    verify_audit,
)
from reliability._cluster import Cluster, Load, Process, World, descendants  # noqa: E402
from reliability.report import Outcome, main  # noqa: E402
from sandbox.store.models import Job, JobStatus  # noqa: E402

AREA = "crashes"
SETTLE_S = 60.0  # a job open at a kill must end within this after the restart
RESUME_S = 60.0  # after a runner kill, a new job must be released within this


@dataclass
class Tally:
    """What the kills did and every property violation seen after them."""

    server_kills: int = 0
    runner_kills: dict[str, int] = field(default_factory=dict)
    open_at_kill: int = 0
    stuck: set[str] = field(default_factory=set)
    not_resumed: int = 0
    restarts_s: list[float] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    ledger: set[str] = field(default_factory=set)
    releases: set[str] = field(default_factory=set)
    audit: list[str] = field(default_factory=list)
    audit_checks: int = 0
    audit_last: str = ""
    plaintext: set[str] = field(default_factory=set)
    scans: int = 0


def _wait_for_running_job(cluster: Cluster, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _running(cluster):
            return True
        time.sleep(0.03)
    return False


def _running(cluster: Cluster) -> bool:
    with snapshot(cluster) as session:
        return session.query(Job.id).filter(Job.status == JobStatus.RUNNING).first() is not None


def _at_random_point(cluster: Cluster, rng: random.Random) -> None:
    """Mostly while a job runs (then a random delay into it); sometimes at any moment."""
    if rng.random() < 0.8:
        _wait_for_running_job(cluster)
    time.sleep(rng.uniform(0.0, 0.4))


def _check(cluster: Cluster, world: World, tally: Tally, opened: set[str]) -> None:
    """Everything that must hold once the jobs open at the kill have ended."""
    tally.open_at_kill += len(opened)
    tally.stuck |= set(settle(cluster, opened, SETTLE_S))
    counted = books(cluster, world)
    tally.ledger |= set(counted.ledger)
    tally.releases |= set(counted.releases)
    ok, what = verify_audit(cluster, world)
    tally.audit_checks += 1
    tally.audit_last = what
    if not ok:
        tally.audit.append(what)
    tally.plaintext |= set(plaintext_on_disk(cluster.home))
    tally.scans += 1


def _gone(processes: list[Process], timeout_s: float = 10.0) -> list[str]:
    """Those of ``processes`` still alive after ``timeout_s`` (as "name pid")."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [f"{p.name} {p.pid}" for p in processes if _alive(p.pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_server_once(cluster: Cluster, world: World, tally: Tally, rng: random.Random) -> None:
    _at_random_point(cluster, rng)
    assert cluster.proc is not None
    sandboxes = descendants(cluster.proc.pid)
    opened = set(open_jobs(cluster))
    cluster.kill_server()
    tally.server_kills += 1
    tally.orphans += _gone(sandboxes)
    tally.restarts_s.append(cluster.start_server())
    _check(cluster, world, tally, opened)


#: What a runner kill hits, in turn: the bubblewrap process the server started, the warm
#: sandboxed worker inside it (it forks the job processes), and the running job's own process.
RUNNER_TARGETS = ("bwrap", "warm worker", "job process")


def _runner_target(cluster: Cluster, turn: int) -> tuple[int, str] | None:
    assert cluster.proc is not None
    tree = descendants(cluster.proc.pid)
    python = sorted((p for p in tree if p.name.startswith("python")), key=lambda p: p.depth)
    what = RUNNER_TARGETS[turn % len(RUNNER_TARGETS)]
    if what == "bwrap":
        target = next((p for p in tree if p.name == "bwrap" and p.depth == 1), None)
    elif what == "warm worker":
        target = python[0] if python else None
    else:
        target = python[-1] if len(python) > 1 else None
    return (target.pid, what) if target is not None else None


def kill_runner_once(
    cluster: Cluster, world: World, tally: Tally, rng: random.Random, turn: int
) -> None:
    target = None
    for _ in range(20):  # a job that runs, and its sandbox found while it does
        _wait_for_running_job(cluster)
        time.sleep(rng.uniform(0.0, 0.15))
        target = _runner_target(cluster, turn)
        if target is not None and _running(cluster):
            break
    if target is None:
        return
    opened = set(open_jobs(cluster))
    killed_at = datetime.now(UTC)
    os.kill(target[0], signal.SIGKILL)
    tally.runner_kills[target[1]] = tally.runner_kills.get(target[1], 0) + 1
    deadline = time.monotonic() + RESUME_S
    while not (resumed := released_since(cluster, killed_at)) and time.monotonic() < deadline:
        time.sleep(0.1)
    tally.not_resumed += not resumed
    _check(cluster, world, tally, opened)


def _outcomes(tally: Tally, final_stuck: list[str], statuses: dict[str, int]) -> list[Outcome]:
    kills = f"{tally.server_kills} SIGKILLs of the server"
    runners = sum(tally.runner_kills.values())
    how = ", ".join(f"{n} {what}" for what, n in sorted(tally.runner_kills.items()))
    ended = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    median = statistics.median(tally.restarts_s) if tally.restarts_s else 0.0
    stuck = tally.stuck | set(final_stuck)
    return [
        Outcome(AREA, f"{kills} during jobs, each restarted",
                not stuck and tally.server_kills > 0,
                f"{len(stuck)} stuck of {tally.open_at_kill} jobs open at the kills; all jobs: "
                f"{ended}; restart to healthy: median {median:.1f} s"),
        Outcome(AREA, f"{runners} SIGKILLs of a running job's sandbox ({how})",
                not stuck and tally.not_resumed == 0 and runners > 0,
                f"{tally.not_resumed} times no job was released within {RESUME_S:.0f} s after"),
        Outcome(AREA, f"{kills}: its job sandboxes die with it", not tally.orphans,
                f"{len(tally.orphans)} sandbox processes outlived the server "
                + " ".join(tally.orphans[:5])),
        Outcome(AREA, f"privacy ledger after each of {tally.audit_checks} kills", not tally.ledger,
                "every release has its debit; spend >= released" if not tally.ledger
                else "; ".join(sorted(tally.ledger)[:3])),
        Outcome(AREA, f"no result released twice ({tally.audit_checks} checks)",
                not tally.releases, "one job.released event per released job" if not tally.releases
                else "; ".join(sorted(tally.releases)[:3])),
        Outcome(AREA, f"audit chain verified after each of {tally.audit_checks} kills",
                not tally.audit and tally.audit_checks > 0,
                tally.audit_last if not tally.audit else "; ".join(tally.audit[:3])),
        Outcome(AREA, f"plaintext scan of data dir, TMPDIR, logs ({tally.scans} scans)",
                not tally.plaintext and tally.scans > 0,
                "no canary value, CSV header or Parquet file on disk" if not tally.plaintext
                else "found in " + ", ".join(sorted(tally.plaintext)[:5])),
    ]  # fmt: skip


def exercise(cluster: Cluster, server_kills: int, runner_kills: int, rows: int) -> list[Outcome]:
    rng = random.Random(1234)  # when to kill: not security
    cluster.start_keyserver()
    token = cluster.init()
    cluster.start_server()
    world = cluster.build_world(token, rows)
    tally = Tally()
    load = Load(cluster.url, world)
    load.start()
    try:
        for _ in range(server_kills):
            kill_server_once(cluster, world, tally, rng)
        for turn in range(runner_kills):
            kill_runner_once(cluster, world, tally, rng, turn)
    finally:
        load.stop()
    final_stuck = settle(cluster, None, SETTLE_S)
    final = books(cluster, world)
    tally.ledger |= set(final.ledger)
    tally.releases |= set(final.releases)
    return _outcomes(tally, final_stuck, final.statuses)


def run(quick: bool = False) -> list[Outcome]:
    server_kills, runner_kills, rows = (5, 3, 20_000) if quick else (25, 12, 50_000)
    with tempfile.TemporaryDirectory(prefix="veil-crashes-") as home:
        cluster = Cluster(Path(home))
        try:
            return exercise(cluster, server_kills, runner_kills, rows)
        finally:
            cluster.close()


if __name__ == "__main__":
    main(run)
