"""The Typer application and its command groups (commands live in ``local`` and ``remote``)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Veil: data usable, not visible.", no_args_is_help=True, pretty_exceptions_enable=False
)
keys_app = typer.Typer(
    help="The key server: start, stop, status, policy, public key.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="The audit log: search, export, verify (here, through the API, or an export), "
    "checkpoints, attention, key-server operations.",
    no_args_is_help=True,
)
receipts_app = typer.Typer(
    help="Usage receipts (enterprise; officers of its scope): signed JSON and HTML.",
    no_args_is_help=True,
)
enterprises_app = typer.Typer(help="Enterprises (operator).", no_args_is_help=True)
providers_app = typer.Typer(help="Providers (operator).", no_args_is_help=True)
officers_app = typer.Typer(help="Security officers (operator).", no_args_is_help=True)
tokens_app = typer.Typer(
    help="API tokens: issue (operator); list, rotate, revoke (your own; the operator: anyone's).",
    no_args_is_help=True,
)
datasets_app = typer.Typer(
    help="Datasets (enterprise; providers see granted ones).", no_args_is_help=True
)
grants_app = typer.Typer(help="Grants (enterprise; providers see theirs).", no_args_is_help=True)
models_app = typer.Typer(help="Trained models, on this machine (no server).", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs and results (provider).", no_args_is_help=True)
code_app = typer.Typer(
    help="Tier 5: syft functions (provider submits; enterprise reviews).", no_args_is_help=True
)

for name, sub in [
    ("keys", keys_app),
    ("audit", audit_app),
    ("enterprises", enterprises_app),
    ("providers", providers_app),
    ("officers", officers_app),
    ("tokens", tokens_app),
    ("datasets", datasets_app),
    ("grants", grants_app),
    ("jobs", jobs_app),
    ("code", code_app),
    ("receipts", receipts_app),
    ("models", models_app),
]:
    app.add_typer(sub, name=name)
