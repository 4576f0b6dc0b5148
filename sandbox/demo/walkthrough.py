"""`veil demo`: the main path end to end on the embedded defaults, through the real API.

It starts a complete Veil (embedded OpenBao, SQLite, job worker, API on a free
loopback port) under ``<data dir>/demo`` — wiped at each run, so every run is
the same — and plays the three roles through the Python client: the operator
sets up an enterprise and a provider; the enterprise uploads its production
log and grants; the provider runs private queries until its budget is spent;
refusals are shown; the audit chain is signed and verified; a security officer
exports the log and verifies it offline, checks the key server's own log, and
suspends and reinstates the provider; the enterprise takes a signed usage receipt.
"""

from __future__ import annotations

import io
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from keys import LocalKeyServer
from sandbox.client import ApiError, VeilClient
from sandbox.config.datadir import prepare_data_dir
from sandbox.config.settings import Settings
from sandbox.demo.data import DECLARATION, production_log, second_enterprise_log
from sandbox.demo.keep import prepare_exploration, print_logins, wait_for_stop
from sandbox.demo.letters import ProviderLetters
from sandbox.demo.oversight import run_oversight
from sandbox.demo.programme import commit_letter, run_programme
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil

PURPOSE = "predictive-maintenance"
GRANTED_COLUMNS = [
    "machine",
    "shift",
    "temperature_c",
    "cycle_time_s",
    "vibration_mm_s",
    "defects",
    "yield_pct",
]
QUERIES: list[tuple[str, list[dict[str, Any]], str | None]] = [
    ("rows per shift", [{"kind": "count"}], "shift"),
    ("mean temperature per machine", [{"kind": "mean", "column": "temperature_c"}], "machine"),
    ("defects per shift", [{"kind": "sum", "column": "defects"}], "shift"),
    (
        "mean cycle time and vibration",
        [{"kind": "mean", "column": "cycle_time_s"}, {"kind": "mean", "column": "vibration_mm_s"}],
        None,
    ),
]
EPSILON_PER_QUERY = 0.25


def _fresh_settings(settings: Settings) -> Settings:
    prepare_data_dir(settings.data_dir)  # the demo's own home below it is made anew
    home = settings.data_dir / "demo"
    LocalKeyServer(home / "keyserver").stop()  # a server left by an interrupted run
    shutil.rmtree(home, ignore_errors=True)
    return settings.model_copy(update={"data_dir": home, "vault_addr": None, "database_url": None})


def run_demo(settings: Settings, console: Console, keep: bool = False) -> None:
    """Play the demo; with ``keep``, leave its instance running until Ctrl-C (SIGINT) or
    SIGTERM, printing the console's address and a token per role (``sandbox.demo.keep``)."""
    settings = _fresh_settings(settings)
    console.rule("[bold]Veil demo[/bold]: data usable, not visible")
    console.print(f"state under {settings.data_dir} (embedded OpenBao, SQLite, in-process worker)")
    with open_veil(settings) as veil, ApiThread(settings, veil) as url:
        operator_token = bootstrap_operator(veil)
        assert operator_token is not None
        console.print(f"API on {url}; operator token issued once by `veil init`'s bootstrap\n")
        run_scenario(url, operator_token, settings.data_dir, console)
        if keep:
            logins = prepare_exploration(url, operator_token, GRANTED_COLUMNS, PURPOSE)
            print_logins(url, logins, console)
            wait_for_stop()
    console.print("\n[green]Demo finished[/green]; the API, worker and key server were stopped.")


def run_scenario(url: str, operator_token: str, data_dir: Path, console: Console) -> None:
    """The demo's story, told through the API at ``url`` (one process, or a cluster)."""
    with VeilClient(url, operator_token) as operator:
        _, acme_token, globex_token, provider, provider_token = _setup(operator, console)
    letters = ProviderLetters()  # the provider's letter key (its private half stays here)
    with VeilClient(url, acme_token) as enterprise, VeilClient(url, provider_token) as analyst:
        dataset_id, grant_id = _upload_and_grant(enterprise, provider["id"], console)
        commit_letter(letters, enterprise, analyst, grant_id, console)
    with VeilClient(url, globex_token) as globex:
        globex_dataset = _globex(globex, console)
    with VeilClient(url, provider_token) as analyst:
        _explore(analyst, dataset_id, console)
        _refusals(analyst, dataset_id, globex_dataset, console)
        _queries(analyst, dataset_id, console)
    with VeilClient(url, acme_token) as enterprise, VeilClient(url, provider_token) as analyst:
        training_grant = _grant_training(enterprise, provider["id"], dataset_id, console)
        commit_letter(letters, enterprise, analyst, training_grant, console)
    with VeilClient(url, provider_token) as analyst:
        _train(analyst, dataset_id, console)
    with VeilClient(url, acme_token) as enterprise:
        _cross_tenant(enterprise, globex_dataset, grant_id, console)
    with VeilClient(url, operator_token) as operator:
        _audit(operator, console)
    with VeilClient(url, operator_token) as operator, VeilClient(url, acme_token) as acme:
        run_oversight(url, operator, acme, provider_token, provider["id"], data_dir, console)
    with (
        VeilClient(url, operator_token) as operator,
        VeilClient(url, acme_token) as acme,
        VeilClient(url, provider_token) as analyst,
    ):
        run_programme(url, operator, acme, analyst, console, letters)


def _setup(
    operator: VeilClient, console: Console
) -> tuple[dict[str, Any], str, str, dict[str, Any], str]:
    console.rule("1. Operator: enterprises and a provider")
    acme = operator.create_enterprise("Acme Metal Works", "acme-metal")
    globex = operator.create_enterprise("Globex Parts", "globex-parts")
    provider = operator.create_provider("PredictaMaint Analytics")
    console.print(
        f"enterprise {acme['name']} ({acme['id']}): own key-server namespace "
        f"'{acme['slug']}' and key provisioned"
    )
    console.print(
        f"enterprise {globex['name']} ({globex['id']}), provider {provider['name']} "
        f"({provider['id']})"
    )
    tokens = [operator.issue_token(p["id"]) for p in (acme, globex, provider)]
    console.print("API tokens issued (shown once, stored hashed)")
    return acme, tokens[0], tokens[1], provider, tokens[2]


def _upload_and_grant(
    enterprise: VeilClient, provider_id: str, console: Console
) -> tuple[str, str]:
    console.rule("2. Enterprise: declare, upload (stored encrypted), grant")
    ds = enterprise.create_dataset(
        DECLARATION["name"], DECLARATION["columns"], DECLARATION["privacy_unit"]
    )
    table = Table(
        "column",
        "type",
        "class",
        "bounds / categories",
        title_justify="left",
        title=f"dataset {ds['name']} ({ds['id']})",
    )
    for c in ds["columns"]:
        if c.get("categories"):
            extra = ", ".join(c["categories"])
        elif c.get("lower") is not None:
            extra = f"{c['lower']:g} .. {c['upper']:g}"
        else:
            extra = "-"
        table.add_row(c["name"], c["type"], c["class"], extra)
    console.print(table)
    data = production_log()
    marks: list[int] = []
    version = enterprise.upload(
        ds["id"],
        data,
        filename="production.csv",
        progress=lambda done, total: marks.append(done * 100 // total),
    )
    console.print(
        f"uploaded {len(data) / 2**20:.1f} MiB ({version['row_count']:,} rows; "
        f"progress {' '.join(f'{m}%' for m in marks)}); stored encrypted as version "
        f"{version['version']}, {version['size_bytes']:,} bytes, sha256 "
        f"{version['ciphertext_sha256'][:16]}..."
    )
    grant = enterprise.create_grant(
        provider_id,
        [ds["id"]],
        GRANTED_COLUMNS,
        [0, 1, 2, 3],
        [PURPOSE],
        datetime.now(UTC) + timedelta(days=30),
        epsilon=1.0,
    )
    console.print(
        f"grant {grant['id']}: tiers 0-3, purpose '{PURPOSE}', 30 days, budget epsilon "
        f"{grant['budget']['epsilon']:g}; recipe_p1 (secret) is not grantable"
    )
    return ds["id"], grant["id"]


def _globex(globex: VeilClient, console: Console) -> str:
    ds = globex.create_dataset(DECLARATION["name"], DECLARATION["columns"])
    globex.upload(ds["id"], second_enterprise_log())
    console.print(f"Globex Parts uploaded its own log ({ds['id']}) and granted nothing")
    return str(ds["id"])


def _explore(analyst: VeilClient, dataset_id: str, console: Console) -> None:
    console.rule("3. Provider: catalog, mock data, a disclosure-checked table, a preview")
    (entry,) = analyst.catalog()
    console.print(
        f"tier 0 catalog: {entry['name']}, about {entry['row_count_rounded']:,} rows "
        f"(rounded), {len(entry['columns'])} columns, tiers {entry['tiers']}"
    )
    mock = analyst.mock(dataset_id, rows=3, seed=1).decode().strip().splitlines()
    console.print("tier 1 mock rows (from the declaration only, free):")
    for line in mock:
        console.print(f"  {line}", highlight=False)
    job = analyst.submit_table(
        dataset_id,
        PURPOSE,
        [{"kind": "count"}, {"kind": "mean", "column": "temperature_c"}],
        ["machine", "shift"],
    )
    analyst.wait_for_job(job["id"])
    cells = analyst.get_result(job["id"])["cells"]
    suppressed = [c for c in cells if c["status"] != "ok"]
    console.print(
        f"tier 2 table machine x shift: {len(cells)} cells, perturbed by the cell-key method, "
        f"{len(suppressed)} suppressed by disclosure control, no epsilon spent"
    )
    preview = analyst.preview(
        dataset_id,
        PURPOSE,
        {"aggregates": [{"kind": "count"}], "group_by": ["shift"]},
        epsilon=0.25,
    )
    (item,) = preview["aggregates"]
    console.print(
        f"tier 3 preview of 'count by shift' at epsilon 0.25: noise scale "
        f"{item['noise_scale']:.3g}, 95% of results within +/-"
        f"{item['ci95_half_width']:.3g}; nothing spent"
    )


def _queries(analyst: VeilClient, dataset_id: str, console: Console) -> None:
    console.rule("5. Provider: differentially private queries until the budget is spent")
    for title, aggregates, group_by in QUERIES:
        job = analyst.submit_job(dataset_id, PURPOSE, EPSILON_PER_QUERY, aggregates, group_by)
        final = analyst.wait_for_job(job["id"])
        if final["status"] != "released":
            raise RuntimeError(f"demo query failed: {final}")
        _print_result(title, analyst.get_result(job["id"]), console)
    _expect_denied(
        lambda: analyst.submit_job(dataset_id, PURPOSE, 0.1, [{"kind": "count"}]),
        console,
        "one more query after the budget is spent",
    )


def _print_result(title: str, result: dict[str, Any], console: Console) -> None:
    table = Table(
        "group",
        "statistic",
        "DP value",
        "95% interval",
        "noise scale",
        title=f"{title} (epsilon {result['epsilon']:g})",
        title_justify="left",
    )
    for row in result["rows"]:
        for v in row["values"]:
            lo, hi = v["ci95"]
            table.add_row(
                ", ".join(row["group"].values()) if row["group"] else "all",
                v["aggregate"],
                f"{v['value']:,.2f}",
                f"{lo:,.2f} .. {hi:,.2f}",
                f"{v['noise_scale']:.3g}",
            )
    console.print(table)
    left = result["remaining_budget"]["epsilon_remaining"]
    console.print(f"remaining budget: epsilon {left:g}")


def _expect_denied(action: Any, console: Console, label: str) -> None:
    try:
        action()
    except ApiError as exc:
        console.print(
            f"[yellow]{label}[/yellow] -> {exc.status}: {'; '.join(exc.reasons) or exc.detail}",
            highlight=False,
        )
        return
    raise RuntimeError(f"demo expected a refusal: {label}")


def _refusals(analyst: VeilClient, dataset_id: str, other: str, console: Console) -> None:
    console.rule("4. Provider: refused requests (each one audited, none costs budget)")
    count = [{"kind": "count"}]
    _expect_denied(
        lambda: analyst.submit_job(
            dataset_id, PURPOSE, 0.1, [{"kind": "mean", "column": "recipe_p1"}]
        ),
        console,
        "a query on the secret recipe parameter",
    )
    _expect_denied(
        lambda: analyst.submit_job(other, PURPOSE, 0.1, count),
        console,
        "a query on another enterprise's dataset",
    )
    _expect_denied(
        lambda: analyst.submit_job(dataset_id, "marketing", 0.1, count),
        console,
        "a query for a purpose that was not granted",
    )


TRAINING = {
    "family": "logistic_regression",
    "features": ["temperature_c", "vibration_mm_s", "machine"],
    "target": "failure_24h",
    "epochs": 4,
    "batch_size": 256,
    "learning_rate": 0.5,
    "max_grad_norm": 1.0,
}


def _grant_training(
    enterprise: VeilClient, provider_id: str, dataset_id: str, console: Console
) -> str:
    console.rule("6. Tier 4: a failure-prediction model trained with DP-SGD")
    grant = enterprise.create_grant(
        provider_id,
        [dataset_id],
        [*GRANTED_COLUMNS, "failure_24h"],
        [4],
        [PURPOSE],
        datetime.now(UTC) + timedelta(days=30),
        epsilon=1.0,
        delta=1e-5,
    )
    console.print(
        f"Acme grants tier 4 ({grant['id']}): epsilon 1, delta 1e-5, incl. the "
        "confidential target failure_24h"
    )
    return str(grant["id"])


def _train(analyst: VeilClient, dataset_id: str, console: Console) -> None:
    preview = analyst.preview_training(dataset_id, PURPOSE, TRAINING, epsilon=1.0, delta=1e-5)
    p = preview["training"]
    console.print(
        f"preview: noise multiplier {p['noise_multiplier']:.3f}, sampling rate "
        f"{p['sample_rate']:.4f}, {p['steps']} steps; nothing spent"
    )
    job = analyst.submit_training(dataset_id, PURPOSE, TRAINING, epsilon=1.0, delta=1e-5)
    seen: set[int] = set()

    def show(j: dict[str, Any]) -> None:
        progress = j.get("progress") or {}
        if progress.get("epoch") and progress["epoch"] not in seen:
            seen.add(progress["epoch"])
            console.print(f"  epoch {progress['epoch']} of {progress['epochs']}")

    final = analyst.wait_for_job(job["id"], timeout=600, wait=1.0, on_status=show)  # each epoch
    if final["status"] != "released":
        raise RuntimeError(f"demo training failed: {final}")
    result = analyst.get_result(job["id"])
    metrics = result["card"]["metrics"]
    weights, card = analyst.download_model(job["id"])
    from analytics.training import load_model, predict

    model = load_model(weights, card)
    mock = analyst.mock(dataset_id, rows=5, seed=3)
    import polars as pl

    predictions = predict(model, card, pl.read_csv(io.BytesIO(mock)))
    console.print(
        f"released: epsilon {result['epsilon']:.4f} (from the accountants), DP "
        f"held-out {metrics['name']} {metrics['value']:.3f}; weights "
        f"{len(weights):,} bytes of safetensors, loaded and run on mock rows: "
        f"{predictions}"
    )


def _cross_tenant(enterprise: VeilClient, other: str, grant_id: str, console: Console) -> None:
    console.rule("7. Enterprise: tenant isolation and revocation")
    _expect_denied(lambda: enterprise.get_dataset(other), console, "Acme reading Globex's dataset")
    enterprise.revoke_grant(grant_id, reason="pilot phase finished")
    console.print(f"Acme revoked grant {grant_id}: it takes effect at once")


def _audit(operator: VeilClient, console: Console) -> None:
    console.rule("8. Audit trail")
    events = operator.audit_events(limit=500)
    checkpoint = operator.checkpoint()
    report = operator.verify_audit()
    denied = sum(1 for e in events if e["outcome"] == "denied")
    console.print(
        f"{len(events)} events ({denied} denied attempts); checkpoint at event "
        f"{checkpoint['seq'] if checkpoint else '-'} signed with the key server's "
        "Ed25519 key"
    )
    table = Table(
        "seq", "actor", "action", "outcome", "resource", title="newest events", title_justify="left"
    )
    for e in events[:8]:
        table.add_row(
            str(e["seq"]), e["actor_role"] or "-", e["action"], e["outcome"], e["resource"] or "-"
        )
    console.print(table)
    status = "[green]intact[/green]" if report["ok"] else f"[red]BROKEN[/red]: {report['problem']}"
    console.print(
        f"chain verification: {status} ({report['events']} events, "
        f"{report['checkpoints']} checkpoints)"
    )
    if not report["ok"]:
        raise RuntimeError("the audit chain did not verify")
