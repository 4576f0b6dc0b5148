"""Key-server loss: SIGKILL OpenBao under load, check Veil fails closed, restart it, check it heals.

A real ``veil serve`` runs with a provider keeping private-query jobs in flight and reading their
results.  Then, one or more times, the script SIGKILLs the OpenBao process and, while it is down,
checks that the requests needing keys (health, an upload, audit verification) answer 503 saying
the key server is unavailable, that nothing is released whose job started after the loss, and
that the failures are in the audit log.  It then starts OpenBao again on the same storage (the
same keys) and checks that service resumes with no manual step: a job submitted afterwards is
released, the health check answers 200 and an upload works, within a bounded time.  At the end
the privacy ledger, the release events, the audit chain and the disk are checked as after crashes,
and no job that failed before reading its data may have kept its debit (it is refunded,
``job.refunded``: ``sandbox.jobs.refunds``).

Run alone: ``.venv/bin/python reliability/keyserver_loss.py [--quick]`` (quick: one outage;
full: three).
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from policies.audit import AuditEvent  # noqa: E402
from reliability._checks import (  # noqa: E402
    books,
    plaintext_on_disk,
    released_since,
    settle,
    snapshot,
    verify_audit,
)
from reliability._cluster import Cluster, Load, World, call_status, canary_csv  # noqa: E402
from reliability.report import Outcome, main  # noqa: E402
from sandbox.client import VeilClient  # noqa: E402
from sandbox.store.models import Job, JobStatus  # noqa: E402

AREA = "key-server loss"
RESUME_S = 60.0  # after OpenBao is back, a new job must be released within this
#: The key operations the probes need (health, upload, audit verify): each must be audited.
PROBED_OPERATIONS = {"check its health", "issue a data key", "read the signing key"}
UNAVAILABLE = re.compile(r"key server.*(unavailable|cannot reach|sealed)|cannot reach the key")


@dataclass
class Outage:
    """One loss of the key server and what was seen during and after it."""

    down_at: datetime
    up_at: datetime | None = None
    probes: dict[str, tuple[int, str]] = field(default_factory=dict)
    resumed_s: float | None = None
    result_status: int = 0  # reading a result released before the loss, while down
    after: dict[str, int] = field(default_factory=dict)  # probe -> status once it is back


def _probe(cluster: Cluster, world: World) -> dict[str, tuple[int, str]]:
    """The requests that need keys: (status, detail) of each."""
    health = httpx.get(f"{cluster.url}/v1/health", timeout=30)
    detail = health.json().get("detail", "") if health.status_code != 200 else ""
    found = {"health": (health.status_code, str(detail))}
    with VeilClient(cluster.url, world.enterprise_token, timeout=60) as enterprise:
        found["upload"] = call_status(enterprise.upload, world.dataset_id, canary_csv(300))
    with VeilClient(cluster.url, world.operator_token, timeout=60) as operator:
        found["audit verify"] = call_status(operator.verify_audit)
    return found


def lose_keyserver(cluster: Cluster, world: World, load: Load, down_s: float) -> Outage:
    """Kill OpenBao, probe while it is down, start it again, wait for service to resume."""
    outage = Outage(datetime.now(UTC))
    cluster.kill_keyserver()
    time.sleep(1.0)  # jobs in flight meet the loss
    outage.probes = _probe(cluster, world)
    with VeilClient(cluster.url, world.provider_token, timeout=60) as provider:
        outage.result_status, _ = call_status(provider.get_result, load.stats.released[0])
    time.sleep(max(0.0, down_s - (datetime.now(UTC) - outage.down_at).total_seconds()))
    outage.up_at = datetime.now(UTC)
    started = time.monotonic()
    cluster.start_keyserver()
    while time.monotonic() - started < RESUME_S:
        if released_since(cluster, outage.up_at):
            outage.resumed_s = time.monotonic() - started
            break
        time.sleep(0.1)
    outage.after = {name: status for name, (status, _) in _probe(cluster, world).items()}
    return outage


def _during(outage: Outage, at: datetime | None) -> bool:
    return at is not None and outage.up_at is not None and outage.down_at <= at < outage.up_at


def released_while_down(cluster: Cluster, outages: list[Outage]) -> list[str]:
    """Jobs that started after a loss and were released before the key server was back."""
    with snapshot(cluster) as session:
        released = list(session.scalars(select(Job).where(Job.status == JobStatus.RELEASED)))
    return [
        j.id
        for j in released
        for o in outages
        if _during(o, j.started_at) and _during(o, j.finished_at)
    ]


def audited_failures(cluster: Cluster, outages: list[Outage]) -> tuple[dict[str, int], set[str]]:
    """Failure events recorded while the server was down, counted per action; and the key
    operations that ``key_server.unavailable`` events name."""
    counts: dict[str, int] = {}
    operations: set[str] = set()
    with snapshot(cluster) as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.outcome != "ok"))
        for event in events:
            if any(_during(o, event.at) for o in outages):
                counts[event.action] = counts.get(event.action, 0) + 1
                if event.action == "key_server.unavailable":
                    operations.add(str(event.details.get("action")))
    return counts, operations


def _probe_outcomes(outages: list[Outage]) -> list[Outcome]:
    probes = [p for o in outages for p in o.probes.items()]
    bad = [f"{name}: {status} {detail[:80]}" for name, (status, detail) in probes
           if status != 503 or not UNAVAILABLE.search(detail)]  # fmt: skip
    names = sorted({name for name, _ in probes})
    sample = next((d for _, (s, d) in probes if s == 503), "")
    resumed = [o.resumed_s for o in outages if o.resumed_s is not None]
    not_back = [f"{n}: {s}" for o in outages for n, s in o.after.items() if s != 200]
    slowest = max(resumed) if resumed else 0.0
    return [
        Outcome(AREA, f"{len(outages)} SIGKILLs of OpenBao: {', '.join(names)} while down",
                not bad and bool(probes),
                "; ".join(bad[:3]) if bad else f"all 503: \"{sample[:90]}\""),
        Outcome(AREA, f"OpenBao restarted {len(outages)} times on its storage",
                len(resumed) == len(outages) and not not_back,
                f"a new job released {slowest:.1f} s after the restart at worst (bound "
                f"{RESUME_S:.0f} s); health, upload, audit verify then 200"
                if not not_back else "still failing after: " + ", ".join(not_back)),
    ]  # fmt: skip


def _outcomes(
    cluster: Cluster, world: World, outages: list[Outage], load: Load, stuck: list[str]
) -> list[Outcome]:
    early = released_while_down(cluster, outages)
    audited, operations = audited_failures(cluster, outages)
    counted = books(cluster, world)
    failed_jobs = audited.get("job.failed", 0)
    audit_ok, audit_what = verify_audit(cluster, world)
    plaintext = plaintext_on_disk(cluster.home)
    problems = [*counted.ledger, *counted.releases]
    named = ", ".join(f"{n} {a}" for a, n in sorted(audited.items())) or "none"
    return [
        *_probe_outcomes(outages),
        Outcome(AREA, f"releases while down ({len(load.stats.submitted)} jobs submitted)",
                not early and all(o.result_status == 200 for o in outages),
                f"{len(early)} jobs started after a loss were released before the server was "
                "back; results released before stayed readable (200, no key needed): "
                + ", ".join(str(o.result_status) for o in outages)),
        Outcome(AREA, "failures while down are audited",
                failed_jobs > 0 and operations >= PROBED_OPERATIONS,
                f"failure events while down: {named}; key operations that failed: "
                + ", ".join(sorted(operations))),
        Outcome(AREA, "jobs that failed before reading their data got their budget back",
                failed_jobs > 0 and not counted.lost,
                f"{counted.refunded} refunded (job.refunded); {len(counted.lost)} failed without "
                "reading their data and kept their debit" + (
                    " (budget lost): " + ", ".join(counted.lost[:3]) if counted.lost else "")),
        Outcome(AREA, "afterwards: no stuck job, ledger and releases consistent",
                not stuck and not problems,
                "; ".join(problems[:3]) or f"{len(stuck)} stuck; jobs: " + ", ".join(
                    f"{n} {s}" for s, n in sorted(counted.statuses.items()))),
        Outcome(AREA, "afterwards: audit chain verifies, no plaintext on disk",
                audit_ok and not plaintext,
                f"{audit_what}; plaintext found in: {', '.join(plaintext) or 'no file'}"),
    ]  # fmt: skip


def exercise(cluster: Cluster, outages: int, rows: int, down_s: float) -> list[Outcome]:
    cluster.start_keyserver()
    token = cluster.init()
    cluster.start_server()
    world = cluster.build_world(token, rows)
    load = Load(cluster.url, world)
    load.start()
    seen: list[Outage] = []
    try:
        for _ in range(outages):
            before = len(load.stats.released)
            deadline = time.monotonic() + 60
            while len(load.stats.released) < before + 3 and time.monotonic() < deadline:
                time.sleep(0.1)  # serving normally first
            seen.append(lose_keyserver(cluster, world, load, down_s))
    finally:
        load.stop()
    stuck = settle(cluster, None, 60.0)
    return _outcomes(cluster, world, seen, load, stuck)


def run(quick: bool = False) -> list[Outcome]:
    outages, rows, down_s = (1, 20_000, 6.0) if quick else (3, 50_000, 10.0)
    with tempfile.TemporaryDirectory(prefix="veil-keyloss-") as home:
        cluster = Cluster(Path(home))
        try:
            return exercise(cluster, outages, rows, down_s)
        finally:
            cluster.close()


if __name__ == "__main__":
    main(run)
