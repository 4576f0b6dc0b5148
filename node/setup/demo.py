"""`veil demo`: a control plane and one node per enterprise, and what stays where.

The control plane runs in this process (embedded OpenBao, SQLite, API on a free loopback
port).  Each demo enterprise's node is a process of its own (``veil node run``), in its own
directory, with its own OpenBao, database and job worker, enrolled with the operator's
one-time code (``veil node init``).  The enterprises upload and grant on their nodes, and
issue each grant's commitment letter there (the nodes require letters: their key server
signs for the enterprise, the provider signs on the control plane, the node checks that
signature itself); the provider works through the control plane's API exactly as before
(tiers 0-4); the story ends by showing where each thing is, and a compromised control plane
being refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from keys import CryptoProfile, LocalKeyServer
from keys.bao import free_port
from policies.grants import EPSILON_UNIT
from sandbox.client import VeilClient
from sandbox.config.datadir import prepare_data_dir
from sandbox.config.settings import Settings
from sandbox.data.datasets import latest_version
from sandbox.demo import supply
from sandbox.demo.data import DECLARATION, production_log, second_enterprise_log
from sandbox.demo.in_place import read_in_place
from sandbox.demo.letters import ProviderLetters
from sandbox.demo.plant import SimulatedMachine
from sandbox.demo.programme import (
    bureau_tables,
    city_bureau,
    oee_grant,
    open_period,
    scorecard,
    verdict,
)
from sandbox.demo.walkthrough import (
    GRANTED_COLUMNS,
    PURPOSE,
    _audit,
    _explore,
    _grant_training,
    _queries,
    _refusals,
    _train,
)
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from sandbox.store.models import Dataset, Job, JobStatus

ENTERPRISES = (("Acme Metal Works", "acme-metal"), ("Globex Parts", "globex-parts"))
#: Four more machining SMEs of the pilot city, for the benchmark across enterprises.
SUPPLIERS = (("Hangzhou Precision", "hz-precision"), ("Ningbo Castings", "nb-castings"),
             ("Suzhou Fasteners", "sz-fasteners"), ("Wuxi Gears", "wx-gears"))  # fmt: skip
#: The benchmark a provider proposes: how many take part, their mean cycle time and its
#: median across the enterprises.  Six enterprises are few for enterprise-level DP: ε 10
#: keeps the count's noise near one enterprise (docs/collaborations.md).
BENCHMARK: dict[str, Any] = {
    "title": "机加工周期基准 machining cycle-time benchmark",
    "purpose": "industry benchmark",
    "columns": [{"name": "cycle_time", "type": "float"}],
    "benchmark": {
        "statistics": [
            {"kind": "count"},
            {"kind": "mean", "column": "cycle_time", "lower": 10, "upper": 90},
            {"kind": "quantile", "column": "cycle_time", "lower": 10, "upper": 90,
             "q": [0.5], "bins": 16},
        ],
        "epsilon": 10.0,
        "delta": 1e-6,
        "min_participants": 3,
    },
}  # fmt: skip


def _veil(*args: str) -> list[str]:
    return [sys.executable, "-m", "sandbox.cli", *args]


def _fresh(settings: Settings) -> tuple[Settings, Path]:
    prepare_data_dir(settings.data_dir)
    home = settings.data_dir / "demo"
    for server in [home / "control-plane" / "keyserver",
                   *home.glob("node-*/veil/keyserver")]:  # fmt: skip
        LocalKeyServer(server).stop()  # servers left by an interrupted run
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    cp = settings.model_copy(
        update={"data_dir": home / "control-plane", "vault_addr": None, "database_url": None}
    )
    return cp, home


def _answers(process: subprocess.Popen[bytes], url: str, node_dir: Path) -> bool:
    """Whether the node at ``url`` answers; False when its process ended first."""
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node did not start; see {node_dir / 'node.log'}")
        time.sleep(0.3)


@contextmanager
def node_process(node_dir: Path, console: Console) -> Iterator[str]:
    """``veil node run`` for ``node_dir`` on a free port; its URL once it answers.  A port
    taken by another program between our choice and the node's bind: tried again on
    another (a busy machine opens and closes ports all the time)."""
    env = {**os.environ, "VEIL_NODE_POLL_S": "0.2", "VEIL_API_HOST": "127.0.0.1",
           "VEIL_VAULT_ADDR": "", "VEIL_DATABASE_URL": "",
           "VEIL_COMMITMENT_LETTERS": "true", "VEIL_SOURCE_POLL_S": "0.2"}  # fmt: skip
    env = {k: v for k, v in env.items() if v != ""}
    log_path = node_dir / "node.log"
    for _ in range(3):
        port, said = free_port(), log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own CLI, arguments we made
                _veil("node", "run", "--dir", str(node_dir), "--port", str(port)),
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            up = _answers(process, url, node_dir)
        except BaseException:  # it did not start in time, or the demo was interrupted
            process.kill()
            process.wait()
            raise
        if up:
            break
        if b"address already in use" not in log_path.read_bytes()[said:]:
            break
    if process.poll() is not None:
        raise RuntimeError(f"the node stopped; see {log_path}")
    try:
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def enrol_node(node_dir: Path, code: str, cp_url: str) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - our own CLI, arguments we made
        _veil("node", "init", "--enrol", code, "--control-plane", cp_url,
              "--dir", str(node_dir), "--json"),
        capture_output=True, text=True, check=False,
        env={k: v for k, v in os.environ.items() if k not in ("VEIL_VAULT_ADDR",
                                                              "VEIL_DATABASE_URL")},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"veil node init failed: {done.stderr.strip()[-500:]}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _wait_published(analyst: VeilClient, count: int, tier: int = 0) -> None:
    deadline = time.monotonic() + 60
    while len([e for e in analyst.catalog() if tier in e["tiers"]]) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the node's catalog did not reach the control plane")
        time.sleep(0.2)


_ALGORITHMS = {
    CryptoProfile.STANDARD: "AES-256-GCM, SHA-256 audit chain, Ed25519",
    CryptoProfile.GM: "国密: SM4-GCM, SM3 audit chain, SM2",
}


def run_node_demo(settings: Settings, console: Console) -> None:
    cp_settings, home = _fresh(settings)
    console.rule(
        "[bold]Veil demo[/bold]: data usable, not visible — each enterprise on its own node"
    )
    console.print(f"state under {home}: control-plane/ (this process) and one node-*/ per "
                  "enterprise (a process each, its own OpenBao and database)")  # fmt: skip
    profile = settings.crypto_profile
    console.print(f"crypto profile: {profile} ({_ALGORITHMS[profile]}; VEIL_CRYPTO_PROFILE, "
                  "docs/keys.md)")  # fmt: skip
    with ExitStack() as stack:
        cp = stack.enter_context(open_veil(cp_settings))
        # Acme's machine tool starts now, in the background (its server takes a few seconds),
        # and stops after the nodes (which read it until they stop).
        machine = stack.enter_context(SimulatedMachine())
        url = stack.enter_context(ApiThread(cp_settings, cp))
        token = bootstrap_operator(cp)
        assert token is not None
        console.rule("1. Operator (control plane): enterprises on their own nodes, a provider")
        operator = stack.enter_context(VeilClient(url, token))
        made = [operator.create_node_enterprise(name, slug) for name, slug in ENTERPRISES]
        suppliers = [operator.create_node_enterprise(name, slug) for name, slug in SUPPLIERS]
        provider = operator.create_provider("PredictaMaint Analytics")
        analyst = stack.enter_context(VeilClient(url, operator.issue_token(provider["id"])))
        letters = ProviderLetters()  # the provider's letter key (its private half stays here)
        registered = letters.register(analyst)
        console.print(f"the provider registered its key for commitment letters "
                      f"({registered['fingerprint'][:16]}…); the nodes mirror it")  # fmt: skip
        for entry in made:
            node_id = entry["node"]["id"]
            console.print(
                f"{entry['enterprise']['name']}: no key and no data on the control plane; "
                f"one-time enrolment code issued for node {node_id}"
            )

        console.rule("2. Enterprises: enrol their nodes, upload and grant there")
        clients: list[VeilClient] = []
        for entry, (_, slug) in zip(made, ENTERPRISES, strict=True):
            node_dir = home / f"node-{slug}"
            enrolled = enrol_node(node_dir, entry["enrolment_code"], url)
            node_url = stack.enter_context(node_process(node_dir, console))
            clients.append(stack.enter_context(VeilClient(node_url, enrolled["enterprise_token"])))
            console.print(f"node {enrolled['node_id']} of {enrolled['enterprise']} runs at "
                          f"{node_url} (outbound only to the control plane)")  # fmt: skip
        acme, globex = clients
        dataset_id, data, grant_id = _acme_uploads(acme, provider["id"], console)
        _letter(acme, analyst, letters, grant_id, console, story=True)
        gds = globex.create_dataset(DECLARATION["name"], DECLARATION["columns"])
        globex.upload(gds["id"], second_enterprise_log())
        console.print(
            f"Globex Parts uploaded its own log on its node ({gds['id']}), granted nothing"
        )
        _wait_published(analyst, 1)

        _explore(analyst, dataset_id, console)
        _refusals(analyst, dataset_id, gds["id"], console)
        _queries(analyst, dataset_id, console)
        _grant_training(acme, provider["id"], dataset_id, console)
        [training] = [g for g in acme.list_grants() if 4 in g["tiers"]]
        _letter(acme, analyst, letters, training["id"], console)
        _wait_published(analyst, 1, tier=4)  # the node publishes the new grant within a poll
        _train(analyst, dataset_id, console)
        _where_things_are(cp, home, data, console)
        _compromised_control_plane(cp, provider["id"], dataset_id, console)
        members = [(home / f"node-{slug}", ds) for (_, slug), ds in
                   zip(ENTERPRISES, (dataset_id, gds["id"]), strict=True)]  # fmt: skip
        members += _supplier_nodes(stack, suppliers, home, url, console)
        _benchmark(analyst, members, console)
        _supply_chain(analyst, acme, made[0], suppliers[0], (members[0][0], members[2][0]),
                      console)  # fmt: skip
        read_in_place(acme, analyst, lambda g: _letter(acme, analyst, letters, g, console),
                      machine, home / "acme-plant", lambda d: published_version(cp, d),
                      [cp_settings.data_dir, home / "node-acme-metal"], console)  # fmt: skip
        _programme(url, operator, analyst, acme, made[0]["enterprise"]["id"], letters,
                   console)  # fmt: skip
        _audit(operator, console)
    console.print("\n[green]Demo finished[/green]; the control plane and the nodes were stopped.")


def published_version(cp: Veil, dataset_id: str) -> int | None:
    """The newest version of a node's dataset that the control plane knows: what a job
    submitted there now would read."""
    with cp.db.read() as session:
        version = latest_version(session, dataset_id)
        return version.version if version is not None else None


def _programme(
    url: str,
    operator: VeilClient,
    analyst: VeilClient,
    acme: VeilClient,
    acme_id: str,
    letters: ProviderLetters,
    console: Console,
) -> None:
    """The city programme (``sandbox.demo.programme``): a KPI verdict computed on Acme's
    node, the provider's scorecard, and the bureau's tables over the seven enterprises."""
    console.rule("The city programme: a KPI verdict on Acme's node, a scorecard, the bureau")
    provider_id = str(analyst.me()["id"])
    # Acme agrees the contract and rates on the control plane (a token the operator issues
    # it there); the evaluation runs on its node like any tier-3 job.
    with (
        city_bureau(url, operator) as bureau,
        VeilClient(url, operator.issue_token(acme_id)) as acme_cp,
    ):
        period = open_period(bureau, console)
        grant_id, dataset_id = oee_grant(acme, provider_id, console)
        _letter(acme, analyst, letters, grant_id, console)
        deadline = time.monotonic() + 60
        while not any(e["dataset_id"] == dataset_id and 3 in e["tiers"]
                      for e in analyst.catalog()):  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("the node's OEE grant did not reach the control plane")
            time.sleep(0.2)
        verdict(acme_cp, analyst, dataset_id, console)
        scorecard(bureau, acme_cp, provider_id, period, console)
        bureau_tables(bureau, console)


def _letter(
    enterprise: VeilClient,
    analyst: VeilClient,
    letters: ProviderLetters,
    grant_id: str,
    console: Console,
    *,
    story: bool = False,
) -> None:
    """The grant's commitment letter: issued on the enterprise's node (signed there for it
    by the node's key server), published, signed by the provider on the control plane; the
    node checks that signature itself before the grant is in force there."""
    signed = letters.commit(enterprise, analyst, grant_id)
    if story:
        console.print(
            f"commitment letter (安全承诺函) for {grant_id}: issued by Acme on its node "
            "(signed for it by the node's key server), signed by the provider on the control "
            f"plane: {signed['status']}; the node checks the provider's signature itself "
            "before the grant is in force there (docs/commitments.md)"
        )
    else:
        console.print(f"commitment letter for {grant_id}: issued on the node, signed by "
                      f"the provider: {signed['status']}")  # fmt: skip


def _acme_uploads(acme: VeilClient, provider_id: str, console: Console) -> tuple[str, bytes, str]:
    ds = acme.create_dataset(DECLARATION["name"], DECLARATION["columns"],
                             DECLARATION["privacy_unit"])  # fmt: skip
    data = production_log()
    version = acme.upload(ds["id"], data, filename="production.csv")
    console.print(
        f"Acme declared {ds['name']} and uploaded {len(data) / 2**20:.1f} MiB "
        f"({version['row_count']:,} rows) to its node: stored encrypted there under a key in "
        "the node's own OpenBao"
    )
    grant = acme.create_grant(provider_id, [ds["id"]], GRANTED_COLUMNS, [0, 1, 2, 3], [PURPOSE],
                              datetime.now(UTC) + timedelta(days=30), epsilon=1.0)  # fmt: skip
    console.print(f"grant {grant['id']} made on the node: tiers 0-3, epsilon 1; the node signs "
                  "it and publishes it with the declaration (never the data)")  # fmt: skip
    return str(ds["id"]), data, str(grant["id"])


def _supplier_nodes(
    stack: ExitStack, made: list[dict[str, Any]], home: Path, url: str, console: Console
) -> list[tuple[Path, str]]:
    """Four more enterprises, each on its own node with its own production log."""
    console.rule("Four more machining SMEs enrol their nodes (for a benchmark)")
    members = []
    for i, (entry, (name, slug)) in enumerate(zip(made, SUPPLIERS, strict=True)):
        node_dir = home / f"node-{slug}"
        enrolled = enrol_node(node_dir, entry["enrolment_code"], url)
        node_url = stack.enter_context(node_process(node_dir, console))
        with VeilClient(node_url, enrolled["enterprise_token"]) as owner:
            ds = owner.create_dataset(DECLARATION["name"], DECLARATION["columns"])
            owner.upload(ds["id"], production_log(600 + 150 * i, seed=300 + i))
            if i == 0:  # Acme's supplier: its stock, for the supply-chain analysis
                stock = owner.create_dataset(supply.SUPPLIER_STOCK["name"],
                                             supply.SUPPLIER_STOCK["columns"])  # fmt: skip
                owner.upload(stock["id"], supply.supplier_stock(SUPPLY_PARTS, SUPPLY_OVERLAP))
                entry["stock_dataset"] = stock["id"]
        console.print(f"{name}: node {enrolled['node_id']}, its log uploaded there")
        members.append((node_dir, str(ds["id"])))
    return members


def _node_cli(node_dir: Path, *args: str) -> Any:
    """``veil node …`` against a running node's directory; its JSON answer."""
    done = subprocess.run(  # noqa: S603 - our own CLI, arguments we made
        _veil("node", *args, "--dir", str(node_dir), "--json"),
        capture_output=True, text=True, check=False,
        env={k: v for k, v in os.environ.items() if k not in ("VEIL_VAULT_ADDR",
                                                              "VEIL_DATABASE_URL")},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"veil node {args[0]} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def _benchmark(analyst: VeilClient, members: list[tuple[Path, str]], console: Console) -> None:
    """A provider's benchmark over the six enterprises: each joins on its node, the run is
    secure aggregation through the control plane, each node keeps where it stands."""
    console.rule("A benchmark across six enterprises (secure aggregation, DP)")
    made = analyst.propose_collaboration(
        BENCHMARK["title"], BENCHMARK["purpose"], BENCHMARK["columns"], BENCHMARK["benchmark"]
    )
    console.print(f"the provider proposes {made['id']}: count, mean and median cycle time "
                  f"across enterprises, ε {BENCHMARK['benchmark']['epsilon']:g} per run, "
                  f"at least {made['min_participants']} enterprises")  # fmt: skip
    for node_dir, dataset in members:
        _node_cli(node_dir, "collaborations", "join", made["id"], "--dataset", dataset,
                  "--map", "cycle_time=cycle_time_s", "--category", "machining",
                  "--epsilon", "30")  # fmt: skip
    console.print("each enterprise joins on its own node: its dataset, its mapping, a budget "
                  "of ε 30 for this collaboration, signed by the node")  # fmt: skip
    run = analyst.start_collaboration_run(made["id"])
    run = analyst.wait_for_collaboration_run(made["id"], run["id"], timeout=180)
    if run["status"] != "released":
        raise RuntimeError(f"the benchmark run did not release: {run['reason']}")
    table = Table("statistic", "value", "95% interval", title_justify="left",
                  title=f"released to the provider ({run['survivors']} enterprises; "
                  "no enterprise's figure was seen by anyone)")  # fmt: skip
    for cell in run["release"]["cells"]:
        for stat in cell["statistics"]:
            table.add_row(*_released(cell, stat))
    console.print(table)
    standing = None
    for _ in range(5):  # the node takes the release on its next round
        receipts = _node_cli(members[0][0], "collaborations", "receipts")
        runs = [r for r in receipts["runs"] if r["run_id"] == run["id"]]
        if runs and runs[0]["state"] == "released":
            standing = runs[0]["standing"]
            break
        time.sleep(1)
    where = ", ".join(f"{label}: percentile {value:.0f}"
                      for label, value in (standing or {}).items())  # fmt: skip
    console.print(f"Acme's node keeps its receipt (ε spent, the release) and where Acme "
                  f"stands, seen only there: {where or 'not yet taken'}")  # fmt: skip


#: The OEM plans this many parts; its supplier stocks as many, this many of them the OEM's.
SUPPLY_PARTS, SUPPLY_OVERLAP = 2000, 1000


def _supply_chain(
    analyst: VeilClient,
    acme: VeilClient,
    oem: dict[str, Any],
    supplier: dict[str, Any],
    node_dirs: tuple[Path, Path],
    console: Console,
) -> None:
    """An OEM and its supplier: inventory cover of the OEM's plan per part family, by PSI on
    part numbers and a join in the OEM node's sandbox (docs/collaborations.md)."""
    console.rule("A supply-chain analysis between Acme (OEM) and its supplier (PSI, join, DP)")
    plan = acme.create_dataset(supply.OEM_PLAN["name"], supply.OEM_PLAN["columns"])
    acme.upload(plan["id"], supply.oem_plan(SUPPLY_PARTS))
    console.print(f"Acme uploads its weekly production plan ({SUPPLY_PARTS} parts) on its node; "
                  f"the supplier its stock ({SUPPLY_PARTS} parts, {SUPPLY_OVERLAP} of them "
                  "Acme's) on its own")  # fmt: skip
    template = supply.template(oem["enterprise"]["id"], supplier["enterprise"]["id"])
    made = analyst.propose_collaboration("库存覆盖 inventory cover", "supply chain",
                                         analysis=template)  # fmt: skip
    console.print(f"the provider proposes template {made['id']} (SHA-256 "
                  f"{made['spec_sha256'][:12]}…): {template['sql']}")  # fmt: skip
    sides = ((node_dirs[0], plan["id"], supply.OEM_MAPPING),
             (node_dirs[1], supplier["stock_dataset"], supply.SUPPLIER_MAPPING))  # fmt: skip
    for node_dir, dataset, mapping in sides:
        maps = [arg for k, v in mapping.items() for arg in ("--map", f"{k}={v}")]
        _node_cli(node_dir, "collaborations", "join", made["id"], "--dataset", dataset, *maps,
                  "--epsilon", "5")  # fmt: skip
    console.print("both enterprises approve that exact template on their nodes, each with a "
                  "budget of ε 5 (the stricter minimum of joined parts applies)")  # fmt: skip
    run = analyst.start_collaboration_run(made["id"])
    run = analyst.wait_for_collaboration_run(made["id"], run["id"], timeout=300)
    if run["status"] != "released":
        raise RuntimeError(f"the supply-chain run did not release: {run['reason']}")
    table = Table("family", "parts in common", "planned demand", "stock on hand", "cover",
                  title_justify="left",
                  title=f"released to the provider (ε {template['epsilon']:g}, signed by the "
                  "OEM's node; no part number or row left either node)")  # fmt: skip
    for row in run["release"]["rows"]:
        count, planned, stock = (v["value"] for v in row["values"])
        cover = f"{stock / planned:.2f}" if planned else "-"
        table.add_row(row["group"]["family"], f"{count:.0f}", f"{planned:,.0f}",
                      f"{stock:,.0f}", cover)  # fmt: skip
    console.print(table)


def _released(cell: dict[str, Any], stat: dict[str, Any]) -> tuple[str, str, str]:
    reason = stat["suppressed"] or cell["suppressed"]
    if reason:
        return stat["label"], "-", reason
    if stat["quantiles"]:
        q, (value, low, high) = stat["quantiles"][0]
        return f"{stat['label']} q{q:g}", f"{value:.1f}", f"{low:.1f} .. {high:.1f}"
    value, low, high = stat["estimate"]
    return stat["label"], f"{value:.1f}", f"{low:.1f} .. {high:.1f}"


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _where_things_are(cp: Veil, home: Path, data: bytes, console: Console) -> None:
    console.rule("7. What stays where")
    rows = [line.encode() for line in data.decode().splitlines()[1:6]]  # 5 whole records
    cp_dir = cp.settings.data_dir
    found = [p for p in cp_dir.rglob("*") if p.is_file() and any(r in p.read_bytes() for r in rows)]
    table = Table("where", "holds", "bytes", title_justify="left",
                  title="every file of each party, and what it holds")  # fmt: skip
    table.add_row("control plane", "declarations, signed grants, jobs, releases, audit log; "
                  f"no data object, no enterprise key (records found in it: {len(found)})",
                  f"{_size(cp_dir):,}")  # fmt: skip
    for node_dir in sorted(home.glob("node-*")):
        objects = node_dir / "veil" / "objects"
        holds = "encrypted data, its own OpenBao (keys), grants, budget ledger, audit chain"
        sizes = f"{_size(node_dir):,} ({_size(objects):,} data)"
        table.add_row(node_dir.name, holds, sizes)
    console.print(table)
    tenants = [slug for _, slug in ENTERPRISES if cp.keys.tenant_exists(slug)]
    console.print(f"the control plane's key server holds keys of: {tenants or 'no enterprise'}")
    if found or tenants:
        raise RuntimeError("the control plane holds an enterprise's data or keys")


def _compromised_control_plane(
    cp: Veil, provider_id: str, dataset_id: str, console: Console
) -> None:
    """Write a job no grant allows straight into the control plane's database: the node
    decides with its own grants and refuses it."""
    console.print("\n[bold]A compromised control plane[/bold]")
    job_id = f"job_{uuid.uuid4().hex}"
    with cp.db.transaction() as session:
        enterprise_id = session.scalar(
            select(Dataset.enterprise_id).where(Dataset.id == dataset_id)
        )
        session.add(Job(
            id=job_id, provider_id=provider_id, dataset_id=dataset_id,
            enterprise_id=enterprise_id, dataset_version=1, grant_id=None, purpose=PURPOSE,
            tier=3, query={"aggregates": [{"kind": "mean", "column": "recipe_p1"}]},
            epsilon=5 * EPSILON_UNIT, delta=0, status=JobStatus.QUEUED, reasons=[],
            created_at=cp.clock(),
        ))  # fmt: skip
    cp.job_queued(job_id)
    deadline = time.monotonic() + 60
    while True:
        with cp.db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                break
        if time.monotonic() > deadline:
            raise RuntimeError("the node did not answer the forged job")
        time.sleep(0.2)
    console.print("the control plane queues a job on the secret recipe column at epsilon 5, "
                  f"no grant behind it -> Acme's node: [yellow]{job.status}[/yellow]: "
                  f"{job.error}", highlight=False)  # fmt: skip
    if job.status == JobStatus.RELEASED:
        raise RuntimeError("the node released a forged job")
