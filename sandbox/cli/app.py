"""The Typer application and its command groups (commands live in ``local`` and ``remote``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from i18n.catalog import normalize, set_language

app = typer.Typer(
    help="Veil: data usable, not visible.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # -h everywhere: subcommands' contexts inherit the help option's names.
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(shown: bool) -> None:
    if shown:
        try:
            number = version("veil")
        except PackageNotFoundError:  # run from a checkout that was never installed
            number = "unknown"
        typer.echo(f"veil {number}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            is_eager=True,
            callback=_show_version,
            help="Print Veil's version and exit.",
        ),
    ] = False,
    lang: Annotated[
        str | None,
        typer.Option(
            "--lang",
            metavar="LANG",
            show_default=False,
            help="Language of messages and help: en or zh-CN (default: VEIL_LANG, then "
            "LANG); also accepted after a subcommand.",
        ),
    ] = None,
) -> None:
    # `veil` (sandbox.cli.main) takes --lang out of the arguments before Click parses them,
    # to show help in that language; here for the help, and for Typer's test runner.
    if lang is not None:
        set_language(normalize(lang) or "en")


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
purposes_app = typer.Typer(
    help="The city's purpose vocabulary: list (everyone); set (operator).", no_args_is_help=True
)
letters_app = typer.Typer(
    help="Commitment letters: keys and signing (provider), issuing (enterprise), offline check.",
    no_args_is_help=True,
)
evidence_app = typer.Typer(
    help="Evidence packs for insurers and auditors: create (enterprise, officers), verify offline.",
    no_args_is_help=True,
)
models_app = typer.Typer(help="Trained models, on this machine (no server).", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs and results (provider).", no_args_is_help=True)
code_app = typer.Typer(
    help="Tier 5: syft functions (provider submits; enterprise reviews).", no_args_is_help=True
)
sources_app = typer.Typer(
    help="Data sources read in place: databases and machines (enterprise, on its node).",
    no_args_is_help=True,
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
    ("purposes", purposes_app),
    ("letters", letters_app),
    ("evidence", evidence_app),
    ("jobs", jobs_app),
    ("code", code_app),
    ("receipts", receipts_app),
    ("models", models_app),
    ("sources", sources_app),
]:
    app.add_typer(sub, name=name)
