"""Concurrency: parallel submissions against shared budgets never overspend, lose a job or hang.

A real Veil runs in this process as in ``veil demo`` (embedded OpenBao on loopback, SQLite
in a temporary directory, the job worker, the API served by ``ApiThread``); each client is
a thread with its own connection, and a barrier releases them together.  Two loads:

* **one budget**: 50 clients of one provider submit DP counts of mixed ε (0.03 to 0.07) at
  one grant, far more than it holds, while the enterprise narrows the grant's ε to 80 %
  (refused if already spent); full mode plays 3 such rounds on fresh grants;
* **many budgets**: 3 enterprises x 3 datasets x 4 providers, one grant per enterprise and
  provider (its 3 datasets share it) and per-dataset enterprise-wide caps below what the
  4 grants could spend together, so both kinds of budget bind.

Checked in the ledger (``grants``, ``budget_debits``: exact integer units) and the API:

* **no overspend**: every grant's and dataset's spent ε is within its (final) limit and
  equals its accepted jobs' ε (a grant's also its debit rows'); released results' ε sums
  within each limit; refusals only for budget, no other error (5xx, 429, timeout);
* **no lost job**: every accepted job ends released or failed, and the database holds one
  job per answered submission;
* **no deadlock**: all clients answer, and all jobs end, within fixed limits;
* **audit**: the hash chain verifies, with one job event per answered submission and one
  debit event per accepted job.

Quick: 100 + 108 submissions (20 to 45 s measured); full: 600 + 216 (about 2 minutes).
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keys import LocalKeyServer  # noqa: E402
from policies.audit import AuditEvent  # noqa: E402
from policies.grants import EPSILON_UNIT, BudgetDebit, Grant  # noqa: E402
from reliability.report import Outcome, main  # noqa: E402
from sandbox.client import ApiError, VeilClient  # noqa: E402
from sandbox.config.settings import Settings  # noqa: E402
from sandbox.runtime.veil import Veil  # noqa: E402
from sandbox.server.thread import ApiThread  # noqa: E402
from sandbox.service import bootstrap_operator, open_veil  # noqa: E402
from sandbox.store.models import Dataset, Job  # noqa: E402

AREA = "concurrency"
PURPOSE = "process-optimization"
COLUMNS: list[dict[str, Any]] = [
    {"name": "line", "type": "string", "class": "public", "categories": ["a", "b", "c"]},
    {"name": "temperature_c", "type": "float", "class": "internal", "lower": 0, "upper": 150},
]
CSV = ("line,temperature_c\n" + "".join(f"{'abc'[i % 3]},{i % 150}\n" for i in range(300))).encode()
QUERY = {"aggregates": [{"kind": "count"}], "group_by": ["line"]}
SUBMIT_DEADLINE_S = 120.0  # every client must have had all its answers by then
JOBS_DEADLINE_S = 240.0  # every accepted job must have ended by then
UNTIL = datetime.now(UTC) + timedelta(days=1)


@dataclass
class Answer:
    """One submission as the client saw it."""

    token: str  # the provider's
    grant_id: str
    dataset_id: str
    epsilon: int  # units of EPSILON_UNIT
    job_id: str | None = None
    accepted: bool = False
    problem: str | None = None  # an answer other than 202 or a budget refusal


@dataclass
class Load:
    """The submissions of one load and what came of them."""

    answers: list[Answer] = field(default_factory=list)
    clients_done: bool = True  # and no client of any round was still running at its deadline
    submit_s: float = 0.0
    jobs: dict[str, str] = field(default_factory=dict)  # accepted jobs' final status, by id
    jobs_done: bool = False
    jobs_s: float = 0.0
    released: dict[str, int] = field(default_factory=dict)  # ε of released results, by job
    what: str = ""
    note: str = ""
    problems: list[str] = field(default_factory=list)  # besides the submissions' answers
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def running_veil() -> Iterator[tuple[Veil, str, str]]:
    """A fresh Veil with its embedded OpenBao, job worker and API; yields (veil, url, token)."""
    with tempfile.TemporaryDirectory(prefix="veil-concurrency-") as home:
        settings = Settings(
            data_dir=Path(home) / "veil",
            vault_addr=None,
            database_url=None,
            job_poll_interval_s=0.05,
            commitment_letters=False,  # letters: once per grant, not measured
        )
        try:
            with open_veil(settings) as veil, ApiThread(settings, veil) as url:
                token = bootstrap_operator(veil)
                assert token is not None, "a fresh data directory has no operator yet"
                yield veil, url, token
        finally:
            LocalKeyServer(settings.keyserver_home).stop()  # already stopped unless it failed


# ---------------------------------------------------------------- the clients


def _submit(client: VeilClient, answer: Answer) -> None:
    try:
        job = client.submit_query(
            answer.dataset_id, PURPOSE, QUERY, epsilon=answer.epsilon / EPSILON_UNIT
        )
        answer.job_id, answer.accepted = job["id"], True
    except ApiError as error:
        answer.job_id = error.job_id
        budget = error.status == 403 and all(
            r.startswith("budget short") or "privacy cap" in r for r in error.reasons
        )
        if not budget or not error.reasons:
            answer.problem = f"HTTP {error.status}: {'; '.join(error.reasons) or error.detail}"
    except httpx.HTTPError as error:
        answer.problem = f"{type(error).__name__} (no answer)"


def _drive(url: str, plans: list[list[Answer]], load: Load, during: Callable[[], None]) -> None:
    """One client thread per plan (the answers it fills in turn), and one running ``during``,
    all released at once by a barrier."""
    barrier = threading.Barrier(len(plans) + 1)

    def other() -> None:
        barrier.wait()
        during()

    def client(answers: list[Answer]) -> None:
        with VeilClient(url, answers[0].token, timeout=SUBMIT_DEADLINE_S / 2) as c:
            barrier.wait()
            for answer in answers:
                _submit(c, answer)
                with load.lock:
                    load.answers.append(answer)

    threads = [threading.Thread(target=client, args=(plan,), daemon=True) for plan in plans]
    threads.append(threading.Thread(target=other, daemon=True))
    started = time.monotonic()
    for t in threads:
        t.start()
    deadline = started + SUBMIT_DEADLINE_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    load.submit_s += time.monotonic() - started
    load.clients_done &= not any(t.is_alive() for t in threads)


def _wait_for_jobs(veil: Veil, load: Load) -> None:
    """Poll the jobs table until every accepted job has ended, or the deadline.

    (The database, not ``GET /v1/jobs``: that lists a provider's newest 500 jobs only.)
    """
    wanted = [str(a.job_id) for a in load.answers if a.accepted]
    started = time.monotonic()
    while True:
        with veil.db.read() as session:
            rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(wanted)))
            load.jobs = {str(job_id): str(status) for job_id, status in rows}
        ended = [j for j, status in load.jobs.items() if status in ("released", "failed")]
        if len(ended) == len(wanted) or time.monotonic() - started > JOBS_DEADLINE_S:
            break
        time.sleep(0.25)
    load.jobs_s = time.monotonic() - started
    load.jobs_done = len(ended) == len(wanted)


def _released_epsilon(url: str, load: Load) -> None:
    """The ε each released result says OpenDP accounted, in units, by job id."""
    for token in {a.token for a in load.answers}:
        with VeilClient(url, token) as client:
            for a in load.answers:
                if a.token == token and load.jobs.get(str(a.job_id)) == "released":
                    result = client.get_result(str(a.job_id))
                    load.released[str(a.job_id)] = round(result["epsilon"] * EPSILON_UNIT)


# ---------------------------------------------------------------- the checks


def _budget(
    name: str, limit: int, spent: int, debits: int, mine: list[Answer], released: dict[str, int]
) -> tuple[str, int, int, bool]:
    """(name, limit, spent, held): spent within the limit and equal to the debit rows and to
    the accepted jobs' ε; the ε of the released results within the limit too."""
    accepted = sum(a.epsilon for a in mine)
    out = sum(released.get(str(a.job_id), 0) for a in mine)
    return name, limit, spent, spent <= limit and spent == debits == accepted and out <= limit


def _budgets(veil: Veil, load: Load) -> list[tuple[str, int, int, bool]]:
    """Every grant and dataset cap the load drew on, checked by :func:`_budget`."""
    accepted, checked = [a for a in load.answers if a.accepted], []
    with veil.db.read() as session:
        for grant_id in sorted({a.grant_id for a in load.answers}):
            grant = session.get_one(Grant, grant_id)
            total = func.coalesce(func.sum(BudgetDebit.epsilon), 0)
            debits = session.scalar(select(total).where(BudgetDebit.grant_id == grant_id)) or 0
            mine = [a for a in accepted if a.grant_id == grant_id]
            spent, limit = grant.epsilon_spent, grant.epsilon_budget
            checked.append(_budget(f"grant {grant_id}", limit, spent, debits, mine, load.released))
        for dataset_id in sorted({a.dataset_id for a in load.answers}):
            dataset = session.get_one(Dataset, dataset_id)
            mine = [a for a in accepted if a.dataset_id == dataset_id]
            spent, limit = dataset.epsilon_spent, dataset.epsilon_cap
            checked.append(
                _budget(f"dataset {dataset_id}", limit, spent, spent, mine, load.released)
            )
    return checked


def _stored_jobs(veil: Veil, load: Load) -> int:
    ids = [a.job_id for a in load.answers if a.job_id]
    with veil.db.read() as session:
        return session.query(Job).filter(Job.id.in_(ids)).count() if ids else 0


def _eps(units: int) -> str:
    return f"{units / EPSILON_UNIT:g}"


def _outcomes(veil: Veil, load: Load) -> list[Outcome]:
    budgets, what = _budgets(veil, load), load.what
    over = [name for name, _, _, held in budgets if not held]
    problems = [a.problem for a in load.answers if a.problem] + load.problems
    accepted = sum(a.accepted for a in load.answers)
    denied = sum(not a.accepted and a.problem is None for a in load.answers)
    _, limit, spent, _ = max(budgets, key=lambda b: b[2] / b[1])
    spend = Outcome(
        AREA,
        f"{what}: {len(load.answers)} submissions at {len(budgets)} budgets",
        not over and not problems,
        f"{accepted} accepted, {denied} refused for budget, {len(problems)} other answers"
        f"{' (' + problems[0] + ')' if problems else ''}; spent = debits = accepted ε and "
        f"released ε <= limit for {len(budgets) - len(over)} of {len(budgets)} budgets"
        f"{' (broken: ' + over[0] + ')' if over else ''}; fullest spent "
        f"{_eps(spent)} of {_eps(limit)}{load.note}",
    )
    statuses = list(load.jobs.values())
    answered = sum(a.job_id is not None for a in load.answers)
    stored = _stored_jobs(veil, load)
    lost = accepted - statuses.count("released") - statuses.count("failed")
    jobs = Outcome(
        AREA,
        f"{what}: every accepted job ends",
        lost == 0 and stored == answered,
        f"{statuses.count('released')} released, {statuses.count('failed')} failed, "
        f"{lost} never ended; {stored} jobs stored for {answered} answered submissions",
    )
    hang = Outcome(
        AREA,
        f"{what}: no deadlock",
        load.clients_done and load.jobs_done,
        f"all clients answered in {load.submit_s:.1f} s (limit {SUBMIT_DEADLINE_S:.0f}), "
        f"all jobs ended {load.jobs_s:.1f} s later (limit {JOBS_DEADLINE_S:.0f})"
        if load.clients_done and load.jobs_done
        else f"clients done: {load.clients_done}, jobs done: {load.jobs_done}",
    )
    return [spend, jobs, hang]


# ---------------------------------------------------------------- the two loads


def _one_budget(veil: Veil, url: str, operator: VeilClient, quick: bool) -> Load:
    """Rounds of 50 clients at a fresh grant each, while its enterprise narrows the grant."""
    rounds, clients, n, budget = (1, 50, 100, 1.0) if quick else (3, 50, 200, 2.0)
    narrowed: list[str] = []
    ent = operator.create_enterprise("Race Works", "race-works")
    prov = operator.create_provider("Race Analytics")
    ent_token, prov_token = operator.issue_token(ent["id"]), operator.issue_token(prov["id"])
    load, sizes = Load(), itertools.cycle([30_000, 50_000, 70_000])  # ε 0.03, 0.05, 0.07
    with VeilClient(url, ent_token) as enterprise:
        ds = enterprise.create_dataset("race", COLUMNS, epsilon_cap=100.0)
        enterprise.upload(ds["id"], CSV)
        for _ in range(rounds):
            grant = enterprise.create_grant(
                prov["id"], [ds["id"]], ["line", "temperature_c"], [3], [PURPOSE], UNTIL, budget
            )

            def narrow(grant_id: str = grant["id"]) -> None:
                try:  # amid the submissions; refused (422) if more was spent already
                    enterprise.change_grant(grant_id, "concurrency check", epsilon=budget * 0.8)
                    narrowed.append(grant_id)
                except ApiError as error:
                    if error.status != 422 or "not below what was spent" not in error.detail:
                        load.problems.append(f"narrowing: HTTP {error.status}")

            answers = [Answer(prov_token, grant["id"], ds["id"], next(sizes)) for _ in range(n)]
            plans = [answers[i::clients] for i in range(clients)]
            _drive(url, plans, load, narrow)
    _wait_for_jobs(veil, load)
    _released_epsilon(url, load)
    load.what = f"{rounds} x {clients} clients x {n // clients} at a grant of ε {budget:g}"
    load.note = f"; {len(narrowed)} of {rounds} grants narrowed to {budget * 0.8:g} amid the race"
    return load


def _many_budgets(veil: Veil, url: str, operator: VeilClient, quick: bool) -> Load:
    enterprises, datasets, providers = 3, 3, 4
    per_client, job_eps = (3, 100_000) if quick else (6, 50_000)
    grant_eps, cap = 0.5, 0.5  # 4 providers x 0.5 per enterprise > 3 datasets x 0.5 cap
    provs = [operator.create_provider(f"Analyst {p}") for p in range(providers)]
    prov_tokens = [operator.issue_token(p["id"]) for p in provs]
    plans = []
    for e in range(enterprises):
        ent = operator.create_enterprise(f"Plant {e}", f"plant-{e}")
        with VeilClient(url, operator.issue_token(ent["id"])) as enterprise:
            ids = []
            for d in range(datasets):
                ds = enterprise.create_dataset(f"log-{d}", COLUMNS, epsilon_cap=cap)
                enterprise.upload(ds["id"], CSV)
                ids.append(ds["id"])
            for prov, token in zip(provs, prov_tokens, strict=True):
                grant = enterprise.create_grant(
                    prov["id"], ids, ["line", "temperature_c"], [3], [PURPOSE], UNTIL, grant_eps
                )
                for dataset_id in ids:
                    answers = [Answer(token, grant["id"], dataset_id, job_eps)] * per_client
                    plans.append([replace(a) for a in answers])
    load = Load()
    _drive(url, plans, load, lambda: None)
    _wait_for_jobs(veil, load)
    _released_epsilon(url, load)
    load.what = (
        f"{enterprises} enterprises x {datasets} datasets x {providers} providers, "
        f"{len(plans)} clients x {per_client}"
    )
    return load


def _audit(veil: Veil, operator: VeilClient, loads: list[Load]) -> Outcome:
    """The audit chain verifies, with one event per answered submission and per debit."""
    answers = [a for load in loads for a in load.answers]
    answered, accepted = (
        sum(a.job_id is not None for a in answers),
        sum(a.accepted for a in answers),
    )
    verified = operator.verify_audit()
    actions = ("job.submitted", "job.denied", "budget.debited")
    with veil.db.read() as session:
        rows = session.execute(
            select(AuditEvent.action, func.count())
            .where(AuditEvent.action.in_(actions))
            .group_by(AuditEvent.action)
        )
        counts = {str(action): int(n) for action, n in rows}
    jobs = counts.get("job.submitted", 0) + counts.get("job.denied", 0)
    return Outcome(
        AREA,
        f"audit after {len(answers)} parallel submissions",
        bool(verified["ok"]) and jobs == answered and counts.get("budget.debited") == accepted,
        f"chain of {verified['events']} events verifies: {verified['ok']}; "
        f"{jobs} job events for {answered} submissions, "
        f"{counts.get('budget.debited', 0)} debit events for {accepted} accepted",
    )


def run(quick: bool = False) -> list[Outcome]:
    """Both loads on one fresh Veil: three outcomes each, and one for the audit log."""
    outcomes: list[Outcome] = []
    loads: list[Load] = []
    with running_veil() as (veil, url, token), VeilClient(url, token) as operator:
        for scenario in (_one_budget, _many_budgets):
            loads.append(scenario(veil, url, operator, quick))
            outcomes += _outcomes(veil, loads[-1])
            print(f"  {scenario.__name__.strip('_')}: done", flush=True)
        outcomes.append(_audit(veil, operator, loads))
    return outcomes


if __name__ == "__main__":
    main(run)
