"""The demo's city-programme story (issue 22): a commitment letter signed by both parties,
a KPI contract and its signed DP verdict, and the bureau's protected tables.

Acme declares a second dataset, its line's daily OEE components (``oee_log``: the
evaluation half is about 10% better than the baseline half), grants it to the provider for
tier 3 under the city's purpose vocabulary, and issues the grant's commitment letter; the
provider signs it with a key made here (its private half never leaves this process).  They
agree a KPI contract (OEE up 5%), the provider has it evaluated (a tier-3 job: ε debited,
the DP statistics released, the verdict signed), and the city's bureau reads its tables,
where every cell of fewer than five enterprises is suppressed.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from sandbox.client import VeilClient
from sandbox.demo.letters import INSURANCE, RETENTION_DAYS, ProviderLetters

PURPOSE = "process-optimization"  # from the city's vocabulary (docs/commitments.md)
DAYS, RUNS_PER_DAY = 180, 100
GRANT_EPSILON = 4.0
OEE_COLUMNS: list[dict[str, Any]] = [
    {"name": "day", "type": "integer", "class": "public", "lower": 0, "upper": DAYS},
    {"name": "availability", "type": "float", "class": "internal", "lower": 0, "upper": 1},
    {"name": "performance", "type": "float", "class": "internal", "lower": 0, "upper": 1},
    {"name": "quality", "type": "float", "class": "internal", "lower": 0, "upper": 1},
]
CONTRACT: dict[str, Any] = {
    "kpi": {
        "kpi": "oee",
        "columns": {"availability": "availability", "performance": "performance",
                    "quality": "quality"},
        "time_column": "day",
        "baseline": {"from": 0, "to": DAYS // 2},
        "evaluation": {"from": DAYS // 2, "to": DAYS},
    },
    "target": 0.05,
    "confidence": 0.95,
    "epsilon": 2.0,
}  # fmt: skip


def oee_log(seed: int = 11) -> bytes:
    """Runs of one line over ``DAYS`` days; after the provider's change (the second half)
    availability is up about 10%, performance and quality as before."""
    rng = random.Random(seed)  # noqa: S311 - synthetic sample data, not security or DP noise
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([c["name"] for c in OEE_COLUMNS])
    for day in range(DAYS):
        availability = 0.70 if day < DAYS // 2 else 0.77
        for _ in range(RUNS_PER_DAY):
            writer.writerow([
                day,
                round(min(1.0, max(0.0, rng.gauss(availability, 0.05))), 4),
                round(min(1.0, max(0.0, rng.gauss(0.85, 0.04))), 4),
                round(min(1.0, max(0.0, rng.gauss(0.97, 0.01))), 4),
            ])  # fmt: skip
    return out.getvalue().encode()


def run_programme(
    url: str,
    operator: VeilClient,
    enterprise: VeilClient,
    provider: VeilClient,
    console: Console,
    letters: ProviderLetters,
) -> None:
    """The story on one control plane that holds the enterprise's data (``--hosted``);
    ``letters``: the provider's letter key."""
    provider_id = str(provider.me()["id"])
    console.rule("11. The city programme: a letter, a KPI verdict, a scorecard, the bureau")
    with city_bureau(url, operator) as bureau:
        period = open_period(bureau, console)
        grant_id, dataset_id = oee_grant(enterprise, provider_id, console)
        commit_letter(letters, enterprise, provider, grant_id, console)
        verdict(enterprise, provider, dataset_id, console)
        third_party_assessment(url, operator, bureau, provider_id, console)
        scorecard(bureau, enterprise, provider_id, period, console)
        bureau_tables(bureau, console)


@contextmanager
def city_bureau(url: str, operator: VeilClient) -> Iterator[VeilClient]:
    """The city's bureau (工信局), created by the operator, with a token of its own."""
    made = operator.create_bureau("City industry bureau (工信局)")
    with VeilClient(url, operator.issue_token(made["id"])) as bureau:
        yield bureau


def open_period(bureau: VeilClient, console: Console) -> str:
    """The bureau opens this quarter's evaluation period (default weights and pass mark)."""
    period = bureau.open_period("2026-Q4")
    console.print(
        f"the bureau opened evaluation period {period['name']}: weights {period['weights']}, "
        f"pass mark {period['pass_mark']:g}"
    )
    return str(period["id"])


def third_party_assessment(
    url: str, operator: VeilClient, bureau: VeilClient, provider_id: str, console: Console
) -> None:
    """The bureau registers a third-party assessor, the operator issues its token, and the
    assessor records its own assessment of the provider (docs/programme.md, "Assessors")."""
    made = bureau.register_assessor("Quality Institute (质量研究院)")
    with VeilClient(url, operator.issue_token(made["id"])) as assessor:
        assessor.record_assessment(provider_id, 70, "deliveries audited on site")
    console.print(
        f"the bureau registered a third-party assessor ({made['id']}); with its own token, "
        "issued by the operator, it scored the provider 70 of 100 itself"
    )


def scorecard(
    bureau: VeilClient, enterprise: VeilClient, provider_id: str, period: str, console: Console
) -> None:
    """The enterprise rates the provider, the bureau assesses it and closes the period: the
    provider's signed scorecard."""
    enterprise.rate_provider(provider_id, 5)
    bureau.assess_provider(provider_id, 80, "reports delivered on time")
    cards = bureau.close_period(period)["scorecards"]
    card = next(c for c in cards if c["provider_id"] == provider_id)
    parts = card["document"]["components"]
    ratings, assessors = parts["ratings"], len(parts["assessors"]["assessments"])
    console.print(
        f"period closed: the provider's signed scorecard {card['id']}: "
        f"[bold]{card['result']}[/bold], score {card['score']:g} (its KPI verdicts, "
        f"assessments by the bureau and by {assessors} registered assessor(s); "
        f"{ratings.get('raters', 0)} enterprise rating, too few to show or count below five "
        "raters). Two failed periods in a row would propose its exit."
    )


def oee_grant(enterprise: VeilClient, provider_id: str, console: Console) -> tuple[str, str]:
    """The OEE log uploaded and granted through ``enterprise`` (the control plane's API, or
    the enterprise's node's): the grant's id and the dataset's."""
    ds = enterprise.create_dataset("line-oee-2026", OEE_COLUMNS)
    version = enterprise.upload(ds["id"], oee_log(), filename="oee.csv")
    grant = enterprise.create_grant(
        provider_id,
        [ds["id"]],
        [c["name"] for c in OEE_COLUMNS],
        [0, 3],
        [PURPOSE],
        datetime.now(UTC) + timedelta(days=365),
        epsilon=GRANT_EPSILON,
    )
    console.print(
        f"Acme uploaded its line's OEE log ({version['row_count']:,} runs, {ds['id']}) and "
        f"granted it for tier 3, purpose '{PURPOSE}' (the city's vocabulary), ε {GRANT_EPSILON:g}"
    )
    return str(grant["id"]), str(ds["id"])


def commit_letter(
    letters: ProviderLetters,
    enterprise: VeilClient,
    provider: VeilClient,
    grant_id: str,
    console: Console,
) -> None:
    """Acme issues ``grant_id``'s commitment letter on the control plane, the provider
    checks and signs it: only then is the grant in force."""
    signed = letters.commit(enterprise, provider, grant_id)
    console.print(
        f"commitment letter (安全承诺函) for {grant_id}: issued by Acme (signed by Veil for "
        f"it), checked and signed by the provider with its own key: {signed['status']}; "
        f"retention {RETENTION_DAYS} days, insurance {INSURANCE}, no third-party sharing; "
        "only now is the grant in force (docs/commitments.md)"
    )


def verdict(
    enterprise: VeilClient, provider: VeilClient, dataset_id: str, console: Console
) -> None:
    """A KPI contract the provider proposes and the enterprise accepts (on the control
    plane), then evaluated: its signed verdict."""
    contract = provider.propose_kpi_contract(
        {"dataset_id": dataset_id, "purpose": PURPOSE, **CONTRACT}
    )
    enterprise.accept_kpi_contract(contract["id"], contract["terms_sha256"])
    started = provider.evaluate_kpi_contract(contract["id"])
    done = provider.wait_for_kpi_verdict(contract["id"], started["id"])
    if done["status"] != "released":
        raise RuntimeError(f"the KPI evaluation ended {done['status']}")
    document = done["document"]
    low, high = document["interval"]
    console.print(
        f"KPI contract {contract['id']}: OEE up {CONTRACT['target']:.0%} from days 0-89 to "
        f"90-179, ε {CONTRACT['epsilon']:g} per evaluation; agreed by both (SHA-256 "
        f"{contract['terms_sha256'][:12]}...)"
    )
    console.print(
        f"signed verdict: [bold]{document['verdict']}[/bold], change {document['change']:+.1%}"
        f" (95% interval {low:+.1%} .. {high:+.1%}, DP noise accounted for): what billing "
        "and the provider's evaluation use (docs/verdicts.md)"
    )


def bureau_tables(bureau: VeilClient, console: Console) -> None:
    """The bureau reads its participation table."""
    table = bureau.programme_table("participation")
    figures = sum(len(row["values"]) for row in table["rows"])
    hidden = sum(len(row["suppressed"]) for row in table["rows"])
    console.print(
        f"the bureau's participation table: {figures} figures, {hidden} suppressed (fewer "
        "than five enterprises behind them); the others are perturbed so that no table "
        "isolates an enterprise (docs/programme.md)"
    )
