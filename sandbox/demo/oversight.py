"""The demo's last part: a security officer's tools, and the enterprise's usage receipt.

The officer looks at what needs attention, exports the audit log and verifies it
offline with the public key alone (and sees a tampered copy fail), checks the key
server's own log against Veil's events, and suspends and reinstates the provider.
The enterprise takes a signed usage receipt (JSON and HTML) and verifies it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from keys.signing import public_keys_from_pem
from policies.audit_export import verify_export
from sandbox.client import ApiError, VeilClient
from sandbox.oversight.receipt_format import render_html, verify_receipt


def run_oversight(
    url: str,
    operator: VeilClient,
    enterprise: VeilClient,
    provider_token: str,
    provider_id: str,
    out_dir: Path,
    console: Console,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    created = operator.create_security_officer("City security office")
    with VeilClient(url, operator.issue_token(created["id"])) as officer:
        console.rule("9. Security officer: attention, export and offline verification")
        _attention(officer, console)
        _export(officer, out_dir, console)
        _key_server(officer, console)
        _suspension(officer, url, provider_token, provider_id, console)
    console.rule("10. Enterprise: a signed usage receipt to hand on")
    _receipt(enterprise, provider_id, out_dir, console)


def _attention(officer: VeilClient, console: Console) -> None:
    view = officer.audit_attention()
    for row in view["denied_by_provider"]:
        top = row["reasons"][0]["reason"] if row["reasons"] else "-"
        console.print(
            f"denied attempts by {row['provider_name']}: {row['count']} (most often: {top})",
            highlight=False,
        )
    for grant in view["budget_burn"][:3]:
        console.print(
            f"grant {grant['grant_id']}: epsilon {grant['epsilon_spent']:.2f} of "
            f"{grant['epsilon_budget']:.2f} spent ({grant['fraction_used']:.0%})",
            highlight=False,
        )
    console.print(
        f"held outputs: {len(view['held_outputs'])}; failed logins from "
        f"{len(view['failed_logins'])} addresses"
    )


def _export(officer: VeilClient, out_dir: Path, console: Console) -> None:
    officer.checkpoint()
    export, key = out_dir / "audit.jsonl", out_dir / "audit-key.pem"
    with export.open("wb") as out:
        officer.audit_export(out)
    key.write_text(officer.audit_public_key())
    keys = public_keys_from_pem(key.read_text())
    report = verify_export(export.read_bytes().splitlines(), keys)
    console.print(
        f"exported events {report.from_seq}-{report.to_seq} to {export}; verified offline "
        f"with {key.name} alone: {'[green]intact[/green]' if report.ok else report.problem} "
        f"({report.events} events, {report.checkpoints} signed checkpoints)"
    )
    if not report.ok:
        raise RuntimeError("the audit export did not verify")
    lines = export.read_text().splitlines()
    edited = json.loads(lines[3])
    edited["outcome"] = "denied" if edited["outcome"] == "ok" else "ok"
    lines[3] = json.dumps(edited)
    tampered = verify_export(lines, keys)
    console.print(
        f"a copy with one outcome edited: [red]BROKEN[/red] at event {tampered.first_bad_seq} "
        f"({tampered.problem})",
        highlight=False,
    )
    if tampered.ok:
        raise RuntimeError("a tampered export verified")


def _key_server(officer: VeilClient, console: Console) -> None:
    report = officer.key_audit()
    for tenant in report["tenants"]:
        console.print(
            f"key server, tenant {tenant['slug']}: "
            + ", ".join(f"{n} {op}" for op, n in sorted(tenant["counts"].items()))
            + f"; {tenant['explained']} explained by Veil's events, "
            f"{tenant['unexplained']} unexplained",
            highlight=False,
        )
    if report["unexplained"]:
        raise RuntimeError(
            "an operation on keys, policies or logins has no reason in Veil's audit log"
        )


def _suspension(
    officer: VeilClient, url: str, provider_token: str, provider_id: str, console: Console
) -> None:
    officer.suspend_provider(provider_id, "demo: a suspicious pattern of refused queries")
    with VeilClient(url, provider_token) as provider:
        try:
            provider.me()
            raise RuntimeError("a suspended provider's token still works")
        except ApiError as exc:
            console.print(f"provider suspended: its token now gets {exc.status} ({exc.detail})")
        officer.reinstate_provider(provider_id, "demo: reviewed with the provider")
        console.print(f"provider reinstated: {provider.me()['status']}")


def _receipt(enterprise: VeilClient, provider_id: str, out_dir: Path, console: Console) -> None:
    receipt: dict[str, Any] = enterprise.usage_receipt(provider_id)
    path = out_dir / "receipt.json"
    path.write_text(json.dumps(receipt, indent=2, sort_keys=True) + "\n")
    (out_dir / "receipt.html").write_text(render_html(receipt))
    verify_receipt(receipt, public_keys_from_pem(enterprise.audit_public_key()))
    totals = receipt["totals"]
    console.print(
        f"receipt {receipt['id']}: {totals['jobs']} jobs ({totals['by_status']}), epsilon "
        f"{totals['epsilon_charged']:.2f} charged, {totals['results_released']} results "
        f"released with their hashes, {totals['approvals']} approvals; signed "
        f"(key v{receipt['key_version']}) and verified; written to {path} and receipt.html",
        highlight=False,
    )
