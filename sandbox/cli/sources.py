"""``veil sources``: the data sources an enterprise's core reads in place (docs/sources.md):
declare one for a dataset, map its fields onto the declared columns, see its state, run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from i18n import Msg
from sandbox.cli.app import sources_app
from sandbox.cli.output import Output
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect

JsonFile = Annotated[Path, typer.Argument(help="A JSON file.", exists=True, dir_okay=False)]


def _json_file(path: Path, option: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise typer.BadParameter(Msg("expected a readable JSON file"), param_hint=option) from None
    if not isinstance(value, dict):
        raise typer.BadParameter(Msg("expected a JSON object"), param_hint=option)
    return value


def _credentials(names: list[str], file: Path | None) -> dict[str, str] | None:
    """From a JSON file, or typed in (hidden) for each name: never on the command line."""
    if file is None and not names:
        return None
    given = _json_file(file, "--credentials-file") if file is not None else {}
    for name in names:
        given[name] = typer.prompt(Msg("{name} (not shown)", name=name), hide_input=True)
    if not all(isinstance(v, str) for v in given.values()):
        raise typer.BadParameter(Msg("expected text values"), param_hint="--credentials-file")
    return given


@sources_app.command("declare")
def sources_declare(
    dataset_id: str,
    token: Token,
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            help="The source's settings as a JSON file (no secrets).",
            exists=True,
            dir_okay=False,
        ),
    ],
    kind: Annotated[
        str,
        typer.Option("--kind", help="The kind of source: sql, opcua or mqtt (docs/sources.md)."),
    ] = "sql",
    credential: Annotated[
        list[str] | None,
        typer.Option(
            "--credential",
            help="A credential's name (e.g. password), asked for without echo; repeatable.",
        ),
    ] = None,
    credentials_file: Annotated[
        Path | None,
        typer.Option(
            "--credentials-file",
            help="The credentials as a JSON object in a file.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option("--interval", help="Run every this many seconds (default: continuously)."),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping", help="The first mapping, a JSON file.", exists=True, dir_okay=False
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Declare (or change) the source of one of your datasets, on the core that holds it."""
    settings = _json_file(config, "--config")
    secrets = _credentials(credential or [], credentials_file)
    first = _json_file(mapping, "--mapping") if mapping is not None else None
    with connect(url, token) as c:
        source = c.declare_source(
            dataset_id, kind, settings, credentials=secrets, interval_s=interval, mapping=first
        )
    _print(source, as_json)


@sources_app.command("map")
def sources_map(
    dataset_id: str,
    mapping: JsonFile,
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Give the source's next mapping (fields to declared columns, units) from a JSON file."""
    with connect(url, token) as c:
        _print(c.map_source(dataset_id, _json_file(mapping, "MAPPING")), as_json)


@sources_app.command("list")
def sources_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Your sources, each with its last run and last error."""
    with connect(url, token) as c:
        sources = c.sources()
    rows = [_row(s) for s in sources]
    columns = [
        "dataset_id",
        "kind",
        "schedule",
        "last_run_at",
        "last_version",
        "failures",
        "last_error",
    ]
    Output(as_json).table(Msg("data sources"), rows, columns, raw=sources)


@sources_app.command("show")
def sources_show(
    dataset_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """The dataset's source: settings, credential names, mapping, schedule and state."""
    with connect(url, token) as c:
        source = c.source(dataset_id)
    if source is None:
        typer.echo(Msg("this dataset has no source yet (veil sources declare)"))
        return
    _print(source, as_json)


@sources_app.command("run-now")
def sources_run_now(
    dataset_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Run the source now: its new rows become the dataset's next version (a continuous
    source that a scheduler reads: queued for that scheduler)."""
    with connect(url, token) as c:
        run = c.run_source(dataset_id)
    if run.get("queued") and not as_json:
        typer.echo(
            Msg(
                "queued: the scheduler that reads this continuous source runs it at its next "
                "poll; its outcome: veil sources show {dataset}",
                dataset=dataset_id,
            )
        )
        return
    Output(as_json).record(Msg("source run"), run)
    if run.get("error"):
        raise typer.Exit(1)


def _row(source: dict[str, Any]) -> dict[str, Any]:
    state, schedule = source["state"], source["schedule"]
    every = "continuous" if schedule["continuous"] else f"{schedule['interval_s']:g} s"
    return {"dataset_id": source["dataset_id"], "kind": source["kind"], "schedule": every} | {
        k: state[k] for k in ("last_run_at", "last_version", "failures", "last_error")
    }


def _print(source: dict[str, Any], as_json: bool) -> None:
    out = Output(as_json)
    if as_json:
        out.data(source)
        return
    mapping = source.get("mapping")
    shown = _row(source) | {
        "source": source["id"],
        "config": json.dumps(source["config"], ensure_ascii=False),
        "credentials": ", ".join(source["credentials"]) or "-",
        "mapping_version": mapping["version"] if mapping else None,
        "next_attempt_at": source["state"]["next_attempt_at"],
    }
    out.record(Msg("data source of {dataset}", dataset=source["dataset_id"]), shown)
