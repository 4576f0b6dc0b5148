"""Enterprise nodes: kill and partition a node, kill the control plane; partitions lose nothing.

A real control plane (``veil serve``, its own data directory and OpenBao) and a real node
(``veil node run`` in its own process, its own directory and OpenBao), enrolled with
``veil enterprises create --on-node`` and ``veil node init``.  The enterprise uploads a
dataset and makes its grants on the node's own API; a provider submits DP queries on the
control plane.  Scenarios (issue 20, property 5), each checked from both databases:

1. the node SIGKILLed while it runs a job, restarted: the job completes once, is released
   once, and the node's ledger is debited once;
2. the node SIGSTOPped for several polls: jobs submitted meanwhile wait queued on the
   control plane (but the one its claim in flight may have been handed) and nothing is
   debited on the node; after SIGCONT they run;
3. the control plane SIGKILLed while the node holds a finished answer: the node's own API
   keeps serving the enterprise, the answer is delivered once the control plane is back;
4. a job whose grant expires while the node is stopped ends failed ("the grant expired");
   the node never runs it (taking the stale answer of its claim in flight after SIGCONT,
   it refuses it with its own expired grant).

Throughout: one ``job.released`` event per released job on the control plane.

Run alone: ``.venv/bin/python reliability/nodes.py [--quick]`` (quick: a smaller dataset).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from node.work.models import NodeJob, NodeJobState  # noqa: E402
from policies.audit import AuditEvent  # noqa: E402
from policies.grants import EPSILON_UNIT, BudgetDebit, Grant  # noqa: E402
from reliability._cluster import PURPOSE, Cluster  # noqa: E402
from reliability._nodes import (  # noqa: E402
    SHORT_PURPOSE,
    NodeProcess,
    NodeWorld,
    build_world,
    read_db,
    short_grant,
)
from reliability.report import Outcome, main  # noqa: E402
from sandbox.client import VeilClient  # noqa: E402
from sandbox.store.models import Job, JobStatus  # noqa: E402

AREA = "nodes"
EPSILON = 0.05
QUERY = ([{"kind": "mean", "column": "temperature_c"}, {"kind": "count"}], "machine")
SETTLE_S = 90.0


def wait_for(what: Callable[[], Any], timeout_s: float, every_s: float = 0.02) -> Any:
    """``what()`` once it is truthy, or its last (falsy) value after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def submit(cluster: Cluster, world: NodeWorld, purpose: str = PURPOSE) -> str:
    with VeilClient(cluster.url, world.provider_token) as provider:
        return str(provider.submit_job(world.dataset_id, purpose, EPSILON, *QUERY)["id"])


def cp_job(cluster: Cluster, job_id: str) -> Job:
    with read_db(cluster.db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def ended(cluster: Cluster, job_ids: list[str]) -> bool:
    with read_db(cluster.db_url) as session:
        statuses = session.scalars(select(Job.status).where(Job.id.in_(job_ids))).all()
    return len(statuses) == len(job_ids) and all(
        s not in (JobStatus.QUEUED, JobStatus.RUNNING) for s in statuses
    )


def node_side(node: NodeProcess, control_id: str) -> tuple[NodeJob | None, Job | None]:
    """What the node keeps about a control-plane job: its row, and its local job."""
    with read_db(node.db_url) as session:
        row = session.get(NodeJob, control_id)
        local = session.get(Job, row.local_job_id) if row and row.local_job_id else None
        return row, local


def node_ledger(node: NodeProcess, grant_id: str) -> tuple[int, dict[str, int]]:
    """The node's grant spend (ε units) and the net debit per local job."""
    with read_db(node.db_url) as session:
        grant = session.get(Grant, grant_id)
        debits: Counter[str] = Counter()
        for entry in session.scalars(select(BudgetDebit).where(BudgetDebit.grant_id == grant_id)):
            debits[entry.job_id] += entry.epsilon
        return (grant.epsilon_spent if grant else -1), dict(debits)


def releases(cluster: Cluster) -> Counter[str]:
    """``job.released`` events per job on the control plane."""
    with read_db(cluster.db_url) as session:
        query = select(AuditEvent.resource).where(AuditEvent.action == "job.released")
        return Counter(r.removeprefix("job:") for r in session.scalars(query))


def node_killed_mid_job(cluster: Cluster, node: NodeProcess, world: NodeWorld) -> Outcome:
    spent_before, _ = node_ledger(node, world.grant_id)
    job_id = submit(cluster, world)

    def running_on_node() -> bool:
        _, local = node_side(node, job_id)
        return local is not None and local.status == JobStatus.RUNNING

    caught = bool(wait_for(running_on_node, 60.0))
    _, at_kill = node_side(node, job_id)
    node.kill()
    killed = time.monotonic()
    restart_s = node.start()
    done = wait_for(lambda: ended(cluster, [job_id]), SETTLE_S, 0.1)
    after_s = time.monotonic() - killed
    job = cp_job(cluster, job_id)
    row, local = node_side(node, job_id)
    spent_after, debits = node_ledger(node, world.grant_id)
    once = releases(cluster).get(job_id, 0)
    debit = debits.get(local.id, 0) if local else 0
    want = int(EPSILON * EPSILON_UNIT)
    held = (caught and done and job.status == JobStatus.RELEASED and once == 1
            and debit == want and spent_after - spent_before == want)  # fmt: skip
    return Outcome(
        AREA, "SIGKILL of the node while its job ran, node restarted", held,
        f"killed with the node's job {at_kill.status if at_kill else 'not seen running'}; "
        f"node back in {restart_s:.1f} s; job {job.status} {after_s:.1f} s after the kill, "
        f"{once} job.released; node ran it {local.attempts if local else 0} times "
        f"(control plane: {job.attempts} claim), debited {debit / EPSILON_UNIT:g} ε once "
        f"(grant spend +{(spent_after - spent_before) / EPSILON_UNIT:g} ε)"
        + ("" if row is None else f"; node_jobs: {row.state}"),
    )  # fmt: skip


def node_killed_after_claim(cluster: Cluster, node: NodeProcess, world: NodeWorld) -> Outcome:
    """SIGKILL the moment the control plane shows the job claimed by the node."""
    job_id = submit(cluster, world)
    claimed = bool(wait_for(lambda: cp_job(cluster, job_id).status != JobStatus.QUEUED, 60.0,
                            0.005))  # fmt: skip
    node.kill()
    row, _ = node_side(node, job_id)
    at_kill = row.state if row else "not recorded by the node yet"
    killed = time.monotonic()
    node.start()
    done = wait_for(lambda: ended(cluster, [job_id]), SETTLE_S, 0.1)
    job = cp_job(cluster, job_id)
    once = releases(cluster).get(job_id, 0)
    with read_db(node.db_url) as session:
        resumed = session.scalars(
            select(AuditEvent.details).where(
                AuditEvent.action == "node.job_resumed", AuditEvent.resource == f"job:{job_id}"
            )
        ).all()
    how = resumed[0].get("how") if resumed else "not needed"
    held = claimed and done and job.status == JobStatus.RELEASED and once == 1
    return Outcome(
        AREA, "SIGKILL of the node right after it claimed a job, restarted", held,
        f"node state at the kill: {at_kill}; on restart the node took it again: {how}; "
        f"job {job.status} "
        f"{time.monotonic() - killed:.1f} s after the kill, {once} job.released"
        + ("" if done else f" (still {job.status} after {SETTLE_S:.0f} s)"),
    )  # fmt: skip


def node_partitioned(cluster: Cluster, node: NodeProcess, world: NodeWorld,
                     away_s: float) -> Outcome:  # fmt: skip
    node.pause()
    paused = time.monotonic()
    spent_before, _ = node_ledger(node, world.grant_id)
    jobs = [submit(cluster, world) for _ in range(3)]
    time.sleep(max(0.0, away_s - (time.monotonic() - paused)))
    with read_db(cluster.db_url) as session:
        waiting = session.scalars(select(Job.status).where(Job.id.in_(jobs))).all()
    spent_away, _ = node_ledger(node, world.grant_id)
    taken_away = [j for j in jobs if node_side(node, j)[0] is not None]
    node.resume()
    resumed = time.monotonic()
    done = wait_for(lambda: ended(cluster, jobs), SETTLE_S, 0.1)
    ran_s = time.monotonic() - resumed
    final = [cp_job(cluster, j) for j in jobs]
    waited = [(j.started_at - j.created_at).total_seconds() for j in final if j.started_at]
    spent_after, _ = node_ledger(node, world.grant_id)
    counted = releases(cluster)
    # A claim the node sent just before it stopped may be answered while it is stopped
    # (a long poll): that one job is running under its claim, untouched by the node, and
    # is taken when it comes back (or from ``/node/v1/jobs/running`` after a restart).
    handed = Counter(waiting)[JobStatus.RUNNING]
    held = (all(s in (JobStatus.QUEUED, JobStatus.RUNNING) for s in waiting) and handed <= 1
            and spent_away == spent_before
            and not taken_away and done
            and all(j.status == JobStatus.RELEASED and counted[j.id] == 1 for j in final)
            and spent_after - spent_before == 3 * int(EPSILON * EPSILON_UNIT))  # fmt: skip
    return Outcome(
        AREA, f"node SIGSTOPped {away_s:.0f} s (about {away_s:.0f} polls), 3 jobs submitted",
        held,
        f"while away: {Counter(waiting)[JobStatus.QUEUED]} of 3 queued on the control plane "
        f"({handed} handed to the claim in flight when it stopped), "
        f"node ledger +{(spent_away - spent_before) / EPSILON_UNIT:g} ε; after SIGCONT all "
        f"ended in {ran_s:.1f} s: {dict(Counter(j.status for j in final))}; waited "
        f"{min(waited, default=0):.1f}-{max(waited, default=0):.1f} s queued; claims "
        f"{[j.attempts for j in final]}; node ledger +"
        f"{(spent_after - spent_before) / EPSILON_UNIT:g} ε",
    )  # fmt: skip


def control_plane_killed(cluster: Cluster, node: NodeProcess, world: NodeWorld,
                         down_s: float) -> Outcome:  # fmt: skip
    job_id = submit(cluster, world)
    taken = bool(wait_for(lambda: node_side(node, job_id)[0] is not None, 60.0, 0.005))
    cluster.kill_server()
    down = time.monotonic()

    def answered() -> bool:
        row, _ = node_side(node, job_id)
        return row is not None and row.state == NodeJobState.ANSWERED

    held_answer = bool(wait_for(answered, 60.0, 0.1))
    row, _ = node_side(node, job_id)
    undelivered = row is not None and row.delivered_at is None
    with VeilClient(node.url, world.enterprise_token, timeout=10) as enterprise:
        serving = [len(enterprise.list_datasets()), len(enterprise.list_grants())]
    health = httpx.get(f"{node.url}/v1/health", timeout=5).status_code
    time.sleep(max(0.0, down_s - (time.monotonic() - down)))
    restart_s = cluster.start_server()
    back = time.monotonic()
    done = wait_for(lambda: ended(cluster, [job_id]), SETTLE_S, 0.1)
    delivered_s = time.monotonic() - back  # the node's retry waits double up to 30 s
    job = cp_job(cluster, job_id)
    counted = releases(cluster)
    twice = [j for j, n in counted.items() if n > 1]
    held = (taken and held_answer and undelivered and health == 200 and all(serving)
            and done and job.status == JobStatus.RELEASED and not twice)  # fmt: skip
    return Outcome(
        AREA, f"SIGKILL of the control plane ({down_s:.0f} s down) with an answer on the node",
        held,
        f"node answered the job while it was down (undelivered: {undelivered}); node API "
        f"health {health}, enterprise listed {serving[0]} dataset(s), {serving[1]} grant(s); "
        f"control plane back in {restart_s:.1f} s, the answer delivered {delivered_s:.1f} s "
        f"later (the node's retry backoff): job {job.status}; "
        f"{len(twice)} jobs with two job.released",
    )  # fmt: skip


def refused_here(row: NodeJob | None) -> bool:
    """The node never took the job, or took the stale claim's answer after SIGCONT and
    refused it with its own (expired) grant: nothing read, nothing debited."""
    if row is None:
        return True
    document = (row.outcome or {}).get("document") or {}
    return row.local_job_id is None and bool(document.get("refused"))


def grant_expires_while_away(cluster: Cluster, node: NodeProcess, world: NodeWorld) -> Outcome:
    grant_id, until = short_grant(cluster, node, world, 20.0)  # outlasts a loaded publish
    node.pause()
    job_id = submit(cluster, world, SHORT_PURPOSE)
    wait_for(lambda: time.time() > until.timestamp(), 60.0, 0.2)
    done = wait_for(lambda: ended(cluster, [job_id]), 30.0, 0.1)
    node.resume()
    time.sleep(3.0)  # a few of the node's rounds
    job = cp_job(cluster, job_id)
    row, _ = node_side(node, job_id)
    spent, _ = node_ledger(node, grant_id)
    waited = (job.finished_at - job.created_at).total_seconds() if job.finished_at else 0.0
    reason = str(((row.outcome or {}).get("document") or {}).get("reason")) if row else ""
    taken = "no" if row is None else f"after SIGCONT, and refused it itself: {reason[:50]}"
    held = (done and job.status == JobStatus.FAILED and "the grant expired" in (job.error or "")
            and refused_here(row) and spent == 0 and job.attempts <= 1)  # fmt: skip
    return Outcome(
        AREA, "grant expired while the node was SIGSTOPped, one job queued on it", held,
        f"job {job.status} after {waited:.1f} s queued: \"{(job.error or '')[:60]}\"; "
        f"node took it: {taken}; node spent "
        f"{spent / EPSILON_UNIT:g} ε on that grant; claims {job.attempts}"
        + (" (answered into the stopped node's claim in flight, never acknowledged, queued "
           "again)" if job.attempts else ""),
    )  # fmt: skip


def final_books(cluster: Cluster, node: NodeProcess, world: NodeWorld) -> Outcome:
    """Across all scenarios: releases once, every control-plane release debited on the node."""
    with read_db(cluster.db_url) as session:
        jobs = list(session.scalars(select(Job)))
    with read_db(node.db_url) as session:
        rows = {r.control_job_id: r for r in session.scalars(select(NodeJob))}
    counted = releases(cluster)
    released = [j for j in jobs if j.status == JobStatus.RELEASED]
    problems = [f"job {j} released {n} times" for j, n in counted.items() if n > 1]
    problems += [f"job {j.id} released, unknown to the node" for j in released
                 if j.id not in rows]  # fmt: skip
    problems += [f"job {j.id} still {j.status}" for j in jobs
                 if j.status in (JobStatus.QUEUED, JobStatus.RUNNING)]  # fmt: skip
    spent, debits = node_ledger(node, world.grant_id)
    if spent != sum(debits.values()):
        problems.append(f"the node's grant spend {spent} != its debits {sum(debits.values())}")
    statuses = dict(Counter(j.status for j in jobs))
    return Outcome(
        AREA, f"afterwards: {len(jobs)} jobs, releases and the node's ledger", not problems,
        "; ".join(problems[:3]) or f"jobs {statuses}; one job.released each; node ledger "
        f"{spent / EPSILON_UNIT:g} ε = its debits",
    )  # fmt: skip


def exercise(home: Path, rows: int, away_s: float) -> list[Outcome]:
    cluster = Cluster(home)
    node = NodeProcess(home)
    try:
        cluster.start_keyserver()
        token = cluster.init()
        cluster.start_server()
        world = build_world(cluster, node, token, rows)
        steps: list[Callable[[], Outcome]] = [
            lambda: node_killed_mid_job(cluster, node, world),
            lambda: node_killed_after_claim(cluster, node, world),
            lambda: node_partitioned(cluster, node, world, away_s),
            lambda: control_plane_killed(cluster, node, world, 6.0),
            lambda: grant_expires_while_away(cluster, node, world),
            lambda: final_books(cluster, node, world),
        ]
        outcomes = []
        for step in steps:
            outcomes.append(step())
            last = outcomes[-1]
            print(f"  {last.tried}: {'held' if last.held else 'NOT HELD: ' + last.detail}",
                  flush=True)  # fmt: skip
        return outcomes
    finally:
        try:
            node.close()
        finally:
            cluster.close()


def run(quick: bool = False) -> list[Outcome]:
    rows, away_s = (20_000, 6.0) if quick else (50_000, 10.0)
    with tempfile.TemporaryDirectory(prefix="veil-nodes-") as home:
        return exercise(Path(home), rows, away_s)


if __name__ == "__main__":
    main(run)
