"""``make cluster-demo``: the demo's story across a cluster on this machine, then node losses.

Starts PostgreSQL, three OpenBao nodes (raft), two API processes behind one address
(``veil serve --processes 2``) and three ``veil worker`` processes; tells the demo's story
(``sandbox.demo.walkthrough.run_scenario``) through that address; then kills the key server's leader
and one worker (SIGKILL) and shows that queries submitted afterwards are all released;
verifies the audit chain; stops everything.  Exits non-zero if any step fails.

Run: ``make cluster-demo`` (or ``.venv/bin/python cluster/demo.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cluster.local import LocalCluster  # noqa: E402
from node.setup.demo import enrol_node, node_process  # noqa: E402
from sandbox.client import VeilClient  # noqa: E402
from sandbox.config.datadir import restrict_umask  # noqa: E402
from sandbox.demo.data import DECLARATION, production_log  # noqa: E402
from sandbox.demo.letters import ProviderLetters  # noqa: E402
from sandbox.demo.walkthrough import PURPOSE, run_scenario  # noqa: E402

API_PROCESSES, WORKERS, KEY_NODES = 2, 3, 3
LOSS_JOBS = 12


def main() -> int:
    restrict_umask()  # what this process and all it starts write is the user's alone
    console = Console(highlight=False, soft_wrap=True)  # lines whole, for logs and greps
    cluster = LocalCluster()
    try:
        console.rule("[bold]Veil cluster demo[/bold]: every part its own process")
        cluster.start_database()
        console.print(
            f"PostgreSQL on 127.0.0.1:{cluster.postgres.port if cluster.postgres else '?'}"
        )
        cluster.start_key_server(nodes=KEY_NODES)
        console.print(f"OpenBao: {KEY_NODES} raft nodes, {cluster.env['VEIL_VAULT_ADDR']}")
        token = cluster.init()
        cluster.start_api(processes=API_PROCESSES)
        cluster.start_workers(WORKERS)
        console.print(
            f"API: {API_PROCESSES} processes behind {cluster.url}; "
            f"{WORKERS} workers (procrastinate on the same PostgreSQL)\n"
        )
        run_scenario(cluster.url, token, cluster.data_dir, console)
        _show_workers(cluster, console)
        _lose_nodes(cluster, token, console)
        _show_workers(cluster, console)
        _verify(cluster, token, console)
        _nodes(cluster, token, console)
    except Exception as exc:
        cluster.stop(keep_home=True)
        console.print(f"[red]cluster demo failed[/red]: {exc}; logs under {cluster.logs}")
        return 1
    except BaseException:  # Ctrl-C: stop every process all the same
        cluster.stop()
        raise
    cluster.stop()
    console.print("\n[green]Cluster demo finished[/green]; every process was stopped.")
    return 0


def _show_workers(cluster: LocalCluster, console: Console) -> None:
    counts = cluster.jobs_by_worker()
    console.print(f"jobs per worker so far: {sorted(counts.values(), reverse=True)}")


def _lose_nodes(cluster: LocalCluster, operator_token: str, console: Console) -> None:
    console.rule("Losing the key server's leader and a worker in the middle of a job")
    with VeilClient(cluster.url, operator_token) as operator:
        provider = operator.create_provider("After-the-loss Analytics")
        provider_token = operator.issue_token(provider["id"])
        enterprise = next(e for e in operator.list_enterprises() if e["slug"] == "acme-metal")
        acme_token = operator.issue_token(enterprise["id"])
    with (  # the demo's dataset, a new grant, its commitment letter
        VeilClient(cluster.url, acme_token) as acme,
        VeilClient(cluster.url, provider_token) as analyst,
    ):
        dataset = acme.list_datasets()[0]
        grant = acme.create_grant(
            provider["id"], [dataset["id"]], ["machine", "temperature_c"], [3], [PURPOSE],
            datetime.now(UTC) + timedelta(days=1), epsilon=1.2,
        )  # fmt: skip
        ProviderLetters().commit(acme, analyst, str(grant["id"]))
    started = time.monotonic()
    with VeilClient(cluster.url, provider_token) as analyst:
        jobs = [
            analyst.submit_job(dataset["id"], PURPOSE, 0.1, [{"kind": "count"}], "machine")
            for _ in range(LOSS_JOBS)
        ]
        keys = cluster.key_server
        leader = keys.leader()
        keys.kill(leader)
        cut, victim_pid = _kill_a_worker_mid_job(cluster)
        console.print(
            f"submitted {LOSS_JOBS} queries; SIGKILLed OpenBao node {leader} (the leader) and "
            f"worker pid {victim_pid} while it ran job {cut}"
        )
        finals = [analyst.wait_for_job(job["id"], timeout=120) for job in jobs]
    released = sum(f["status"] == "released" for f in finals)
    console.print(f"{released} of {LOSS_JOBS} released in {time.monotonic() - started:.1f} s")
    if released != LOSS_JOBS:
        raise RuntimeError(f"jobs after the losses: {[f['status'] for f in finals]}")
    actions = cluster.job_actions(cut)
    console.print(f"job {cut}: {' -> '.join(actions)}")
    if actions.count("job.requeued") != 1 or actions.count("job.released") != 1:
        raise RuntimeError(f"the interrupted job was not run again once: {actions}")
    keys.restart(leader)
    console.print(f"OpenBao node {leader} restarted; it rejoined as node {keys.leader()} leads")


def _kill_a_worker_mid_job(cluster: LocalCluster, timeout_s: float = 60) -> tuple[str, int]:
    """SIGKILL a worker while it runs a job; the job's id and the worker's pid.  The worker is
    frozen (SIGSTOP) while the job is checked, so the job cannot end in between."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for job_id, pid in cluster.running_jobs():
            os.kill(pid, signal.SIGSTOP)
            if (job_id, pid) in cluster.running_jobs():
                os.kill(pid, signal.SIGKILL)
                return job_id, pid
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    raise RuntimeError("no job was seen running")


def _verify(cluster: LocalCluster, operator_token: str, console: Console) -> None:
    with VeilClient(cluster.url, operator_token) as operator:
        report = operator.verify_audit()
    if not report["ok"]:
        raise RuntimeError(f"the audit chain does not verify: {report['problem']}")
    console.print(
        f"audit chain intact across every process: {report['events']} events, "
        f"{report['checkpoints']} signed checkpoints"
    )


NODE_ENTERPRISES = (("Initech Castings", "initech-castings"), ("Umbrella Fasteners", "umbrella"))


def _nodes(cluster: LocalCluster, operator_token: str, console: Console) -> None:
    """Two enterprises on their own nodes (a process each, its own OpenBao and SQLite),
    alongside this PostgreSQL/procrastinate control plane: their jobs are the nodes' to
    run, never the workers'."""
    console.rule("Enterprise nodes alongside the cluster")
    with VeilClient(cluster.url, operator_token) as operator:
        provider = operator.create_provider("Node-side Analytics")
        provider_token = operator.issue_token(provider["id"])
        made = [operator.create_node_enterprise(n, s) for n, s in NODE_ENTERPRISES]
    letters = ProviderLetters()  # each node grant's commitment letter, signed by the provider
    with contextlib.ExitStack() as stack:
        analyst = stack.enter_context(VeilClient(cluster.url, provider_token))
        datasets = []
        for entry, (name, slug) in zip(made, NODE_ENTERPRISES, strict=True):
            node_dir = cluster.data_dir / "nodes" / slug
            enrolled = enrol_node(node_dir, entry["enrolment_code"], cluster.url)
            node_url = stack.enter_context(node_process(node_dir, console))
            with VeilClient(node_url, enrolled["enterprise_token"]) as owner:
                ds = owner.create_dataset(DECLARATION["name"], DECLARATION["columns"])
                owner.upload(ds["id"], production_log(5_000, seed=len(datasets) + 40))
                grant = owner.create_grant(
                    provider["id"], [ds["id"]], ["machine", "temperature_c"], [3], [PURPOSE],
                    datetime.now(UTC) + timedelta(days=1), epsilon=1.0,
                )  # fmt: skip
                letters.commit(owner, analyst, str(grant["id"]))
            datasets.append(ds["id"])
            console.print(f"{name}: node {enrolled['node_id']} at {node_url}, dataset {ds['id']}")
        deadline = time.monotonic() + 60
        while len(analyst.catalog()) < len(datasets):
            if time.monotonic() > deadline:
                raise RuntimeError("the nodes' catalogs did not reach the control plane")
            time.sleep(0.3)
        jobs = [
            analyst.submit_job(d, PURPOSE, 0.2, [{"kind": "mean", "column": "temperature_c"}])
            for d in datasets
            for _ in range(3)
        ]
        finals = [analyst.wait_for_job(j["id"], timeout=120) for j in jobs]
        released = sum(f["status"] == "released" for f in finals)
        console.print(f"{released} of {len(jobs)} queries on the nodes' data released")
        if released != len(jobs):
            raise RuntimeError(f"node jobs: {[f['status'] for f in finals]}")
        by_worker = cluster.jobs_by_worker()
        node_ids = {key for key in by_worker if key.startswith("node_")}
        console.print(f"jobs run per node: {[by_worker[k] for k in sorted(node_ids)]}; the "
                      "cluster's workers ran none of them (the data is not theirs)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
