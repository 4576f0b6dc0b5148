"""``veil collaborations``: a provider's benchmarks across enterprises (through the API);
``veil node collaborations``: an enterprise joining and leaving them on its node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from i18n import Msg
from i18n.catalog import translate
from sandbox.cli.app import app
from sandbox.cli.errors import CliError
from sandbox.cli.nodes import NodeDir, _dir, _node_errors, _settings, node_app
from sandbox.cli.output import Output
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect

if TYPE_CHECKING:
    from node.protocol.client import ControlPlane
    from node.setup.provision import NodeConfig
    from sandbox.runtime.veil import Veil

collab_app = typer.Typer(
    help="Benchmarks across enterprises (provider): propose, run, read the release.",
    no_args_is_help=True,
)
node_collab_app = typer.Typer(
    help="This enterprise's collaborations, on its node: join, leave, receipts.",
    no_args_is_help=True,
)
app.add_typer(collab_app, name="collaborations")
node_app.add_typer(node_collab_app, name="collaborations")

CollaborationId = Annotated[str, typer.Argument(help="The collaboration's id (col_…)")]
RunId = Annotated[str, typer.Argument(help="The run's id (crun_…)")]

_RUN_COLUMNS = ["id", "status", "phase", "nodes", "survivors", "threshold", "reason"]
_CELL_COLUMNS = ["category", "statistic", "value", "low", "high", "suppressed"]


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        message = Msg("cannot read {path} as JSON: {reason}", path=str(path),
                      reason=type(exc).__name__)  # fmt: skip
        raise CliError(translate(message), code="bad_file") from None
    if not isinstance(data, dict):
        raise CliError(translate(Msg("{path} must hold a JSON object", path=str(path))),
                       code="bad_file")  # fmt: skip
    return data


@collab_app.command("propose")
def collab_propose(
    spec: Annotated[
        Path,
        typer.Argument(help="A JSON file: title, purpose, and columns and benchmark, or analysis"),
    ],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Propose a benchmark, or an analysis between two enterprises; they join on their nodes."""
    doc = _load(spec)
    with connect(url, token) as c:
        made = c.propose_collaboration(str(doc.get("title", "")), str(doc.get("purpose", "")),
                                       doc.get("columns"), doc.get("benchmark"),
                                       doc.get("analysis"))  # fmt: skip
    Output(as_json).record("collaboration proposed", {k: made[k] for k in
                           ("id", "title", "spec_sha256", "min_participants")})  # fmt: skip


@collab_app.command("list")
def collab_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Your proposals, with how many enterprises joined each (never which)."""
    with connect(url, token) as c:
        rows = c.list_collaborations()
    columns = ["id", "title", "status", "participants", "min_participants"]
    Output(as_json).table("collaborations", rows, columns)


@collab_app.command("run")
def collab_run(
    collaboration_id: CollaborationId,
    token: Token,
    url: Url = DEFAULT_URL,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the release")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Start a run over the enterprises taking part now, and (by default) show its release."""
    with connect(url, token) as c:
        run = c.start_collaboration_run(collaboration_id)
        if wait:
            run = c.wait_for_collaboration_run(collaboration_id, run["id"])
    _show_run(run, as_json)


@collab_app.command("show-run")
def collab_show_run(
    collaboration_id: CollaborationId, run_id: RunId, token: Token, url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """A run: its phase, and once released the statistics with their 95% intervals."""
    with connect(url, token) as c:
        _show_run(c.get_collaboration_run(collaboration_id, run_id), as_json)


@collab_app.command("close")
def collab_close(
    collaboration_id: CollaborationId,
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """No more runs of this collaboration."""
    with connect(url, token) as c:
        Output(as_json).record("collaboration closed", c.close_collaboration(collaboration_id))


def _show_run(run: dict[str, Any], as_json: bool) -> None:
    out = Output(as_json)
    if as_json:
        out.data(run)
        return
    out.table("run", [run], _RUN_COLUMNS)
    release = run.get("release") or {}
    if release:
        out.table("released statistics", [_cell_row(c) for c in release.get("cells", [])],
                  _CELL_COLUMNS)  # fmt: skip


def _cell_row(cell: dict[str, Any]) -> dict[str, Any]:
    interval = cell.get("interval") or [None, None]
    return {**cell, "low": cell.get("low", interval[0]), "high": cell.get("high", interval[1])}


# ---------------------------------------------------------------- on the node


Mapping = Annotated[
    list[str],
    typer.Option("--map", help="COMMON=LOCAL: a common column from a column of the dataset"),
]


def _pairs(items: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        common, sep, local = item.partition("=")
        if not sep or not common or not local:
            raise CliError(translate(Msg("--map takes COMMON=LOCAL, e.g. --map energy_kwh=energy")),
                           code="usage")  # fmt: skip
        pairs[common.strip()] = local.strip()
    return pairs


@contextmanager
def _on_node(node_dir: Path | None) -> Iterator[tuple[Veil, ControlPlane, NodeConfig]]:
    """The node's core (no job worker: the running node has its own) and its signed link to
    the control plane, from the node's directory."""
    from node.protocol.client import ControlPlane
    from node.setup.provision import NodeConfig, identity
    from sandbox.service import open_veil

    where = _dir(node_dir)
    with _node_errors():
        config = NodeConfig.load(where)
        control = ControlPlane(config.control_plane_url, identity(where, config),
                               verify=config.verify)  # fmt: skip
        try:
            with open_veil(_settings(where), worker=False) as veil:
                yield veil, control, config
        finally:
            control.close()


@node_collab_app.command("proposals")
def node_proposals(node_dir: NodeDir = None, as_json: JsonOpt = False) -> None:
    """The open proposals on the control plane this enterprise may join."""
    from node.work.collab import proposals

    with _on_node(node_dir) as (_, control, _config):
        rows = proposals(control)
    Output(as_json).table("open proposals", rows,
                          ["id", "title", "proposer", "purpose", "min_participants"])  # fmt: skip


@node_collab_app.command("join")
def node_join(
    collaboration_id: CollaborationId,
    dataset: Annotated[str, typer.Option("--dataset", help="This enterprise's dataset id")],
    epsilon: Annotated[float, typer.Option("--epsilon", help="Budget for this collaboration")],
    mapping: Mapping,
    category: Annotated[
        str, typer.Option("--category", help="Its public category here (benchmarks)")
    ] = "",
    min_rows: Annotated[
        int | None,
        typer.Option("--min-rows", help="An analysis: the fewest joined rows it may release"),
    ] = None,
    delta: Annotated[float, typer.Option("--delta", help="δ budget")] = 1e-5,
    node_dir: NodeDir = None,
    as_json: JsonOpt = False,
) -> None:
    """Join with one dataset; the node checks and signs the opt-in, and keeps the ledger."""
    from node.work.collab import join
    from policies.budget import Budget

    with _on_node(node_dir) as (veil, control, config):
        budget = Budget.from_floats(epsilon, delta)
        row = join(veil, control, config.node_id, config.enterprise_id, collaboration_id,
                   dataset, _pairs(mapping), category, budget, min_rows=min_rows)  # fmt: skip
    joined = {"collaboration": row.collaboration_id, "dataset": row.dataset_id,
              "sha256": row.spec_sha256}  # fmt: skip
    Output(as_json).record("joined", joined)


@node_collab_app.command("leave")
def node_leave(
    collaboration_id: CollaborationId, node_dir: NodeDir = None, as_json: JsonOpt = False
) -> None:
    """Leave: no future run uses this enterprise's data."""
    from node.work.collab import leave

    with _on_node(node_dir) as (veil, control, config):
        leave(veil, control, config.node_id, config.enterprise_id, collaboration_id)
    Output(as_json).record("left", {"collaboration": collaboration_id})


@node_collab_app.command("receipts")
def node_receipts(node_dir: NodeDir = None, as_json: JsonOpt = False) -> None:
    """What this enterprise's data contributed to, and where it stands (seen here only)."""
    from node.work.collab import memberships, receipts
    from sandbox.service import open_veil

    where = _dir(node_dir)
    with _node_errors(), open_veil(_settings(where), worker=False) as veil:
        joined, runs = memberships(veil), receipts(veil)
    out = Output(as_json)
    if as_json:
        out.data({"memberships": joined, "runs": runs})
        return
    out.table("memberships", joined, ["collaboration_id", "status", "dataset_id", "category",
                                      "budget", "spent"])  # fmt: skip
    out.table("runs", runs, ["run_id", "collaboration_id", "state", "cost", "standing", "at"])
