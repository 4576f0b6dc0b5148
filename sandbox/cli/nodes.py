"""``veil node``: an enterprise's node, on the enterprise's machine (init, run, token, status);
``veil nodes``: the operator's view of them on the control plane (list, enrolment-code)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from i18n import Msg
from i18n.catalog import translate
from sandbox.cli.app import app
from sandbox.cli.errors import CliError
from sandbox.cli.output import Output, console
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect
from sandbox.config.settings import Settings

node_app = typer.Typer(
    help="This enterprise's node: its data, keys and jobs, on its own machine.",
    no_args_is_help=True,
)
nodes_app = typer.Typer(help="Enterprise nodes, seen from the control plane (operator).",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(node_app, name="node")
app.add_typer(nodes_app, name="nodes")

NodeDir = Annotated[
    Path | None,
    typer.Option(
        "--dir", envvar="VEIL_NODE_DIR", help="The node's directory (default ./.veil-node)."
    ),
]


@contextmanager
def _node_errors() -> Iterator[None]:
    """The node's expected failures as the CLI's one-line errors."""
    from node.protocol.client import ControlPlaneRefused, ControlPlaneUnavailable
    from node.setup.provision import NodeAlreadyInitialised, NodeNotInitialised

    try:
        yield
    except NodeAlreadyInitialised as exc:
        raise CliError(translate(Msg("{path} holds a node already: a node enrols once; use "
                                     "another directory", path=str(exc.node_dir))),
                       code="node_exists") from None  # fmt: skip
    except NodeNotInitialised as exc:
        message = Msg(
            "{path} is not a node directory: run `veil node init --enrol CODE "
            "--control-plane URL` first",
            path=str(exc.node_dir),
        )
        raise CliError(translate(message), code="not_a_node") from None
    except ControlPlaneRefused as exc:
        raise CliError(translate(Msg("the control plane refused: {message}",
                                     message=exc.message)), code=exc.code) from None  # fmt: skip
    except ControlPlaneUnavailable:
        raise CliError(translate(Msg("the control plane cannot be reached: check its URL and "
                                     "that it runs")), code="connection") from None  # fmt: skip


def _dir(node_dir: Path | None) -> Path:
    from node.setup.provision import default_node_dir

    return node_dir.resolve() if node_dir else default_node_dir()


def _settings(node_dir: Path, port: int | None = None) -> Settings:
    from node.setup.provision import node_settings

    return node_settings(node_dir, **({"api_port": port} if port else {}))


@node_app.command("init")
def node_init(
    enrol: Annotated[str, typer.Option("--enrol", help="The operator's one-time enrolment code.")],
    control_plane: Annotated[
        str,
        typer.Option("--control-plane", help="The control plane's URL, e.g. https://veil.example"),
    ],
    node_dir: NodeDir = None,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="CA bundle for the control plane's TLS certificate.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Enrol this machine as the enterprise's node (once): its keys are made here, in its own
    key server, and never leave it; prints a token for the node's console and API."""
    from node.setup.provision import init_node

    where = _dir(node_dir)
    with _node_errors():
        config, token = init_node(where, control_plane, enrol, _settings(where),
                                  verify=str(ca) if ca else True)  # fmt: skip
    Output(as_json).record(
        "node enrolled",
        {"node_id": config.node_id, "enterprise": config.enterprise_name,
         "directory": str(where), "enterprise_token": token},
    )  # fmt: skip


@node_app.command("run")
def node_run(
    node_dir: NodeDir = None,
    port: Annotated[
        int | None, typer.Option(help="Port of the node's own console and API.")
    ] = None,
) -> None:
    """Run the node: its job worker, its console and API for the enterprise (loopback by
    default), and its outbound link to the control plane."""
    import uvicorn

    from node.setup.provision import NodeConfig, running_node
    from sandbox.server.app import create_app

    where = _dir(node_dir)
    settings = _settings(where, port)
    with _node_errors():
        NodeConfig.load(where)  # a clear error before anything starts
    poll_s = float(os.environ.get("VEIL_NODE_POLL_S") or 1.0)  # the link's poll interval
    # uvicorn stops serving on SIGTERM, then raises the signal again: let that unwind the
    # node (its link, worker and own key server stop) instead of ending the process there.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with running_node(where, settings, poll_s=poll_s) as (veil, _):
        console.print(f"node console and API: http://{settings.api_host}:{settings.api_port}")
        uvicorn.run(create_app(settings, veil), host=settings.api_host, port=settings.api_port)


@node_app.command("token")
def node_token(node_dir: NodeDir = None, as_json: JsonOpt = False) -> None:
    """A new token for the enterprise on its node (on the node's machine; audited there)."""
    from node.setup.provision import NodeConfig, enterprise_token
    from sandbox.service import open_veil

    where = _dir(node_dir)
    with _node_errors():
        config = NodeConfig.load(where)
    with open_veil(_settings(where), worker=False) as veil:
        token = enterprise_token(veil, config)
    Output(as_json).record("token issued", {"enterprise": config.enterprise_name, "token": token})


@node_app.command("status")
def node_status(node_dir: NodeDir = None, as_json: JsonOpt = False) -> None:
    """The node's identity, jobs by state, code to review and held outputs (from its directory)."""
    from sqlalchemy import func, select

    from node.setup.provision import NodeConfig
    from node.work.models import NodeJob
    from sandbox.store.database import Database
    from sandbox.store.models import CodeRequest, CodeStatus, Job, JobStatus

    where = _dir(node_dir)
    with _node_errors():
        config = NodeConfig.load(where)
    settings = _settings(where)
    db = Database(settings.db_url)
    try:
        with db.read() as session:
            rows = session.execute(select(NodeJob.state, func.count()).group_by(NodeJob.state))
            counts: dict[str, int] = {str(state): int(n) for state, n in rows}
            to_review = session.scalar(
                select(func.count()).where(CodeRequest.status == CodeStatus.PENDING)
            )
            held = [
                f"{local} ({control})"
                for control, local in session.execute(
                    select(NodeJob.control_job_id, NodeJob.local_job_id)
                    .join(Job, Job.id == NodeJob.local_job_id)
                    .where(Job.status == JobStatus.HELD)
                )
            ]
    finally:
        db.dispose()
    Output(as_json).record(
        "node",
        {"node_id": config.node_id, "enterprise": config.enterprise_name,
         "control_plane": config.control_plane_url,
         **{f"jobs_{state}": int(n) for state, n in counts.items()},
         "code_to_review": int(to_review or 0), "held_outputs": ", ".join(held) or "-"},
    )  # fmt: skip


@nodes_app.command("list")
def nodes_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Every enterprise node and when it was last heard from."""
    columns = ["id", "enterprise_id", "status", "enrolled_at", "last_seen_at"]
    with connect(url, token) as c:
        Output(as_json).table("nodes", c.list_nodes(), columns)


@nodes_app.command("enrolment-code")
def nodes_enrolment_code(
    enterprise_id: Annotated[str, typer.Argument(help="The enterprise's id (ent_...).")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """A fresh one-time enrolment code for an enterprise's node not yet enrolled."""
    with connect(url, token) as c:
        Output(as_json).record("enrolment code", c.new_enrolment_code(enterprise_id))


@nodes_app.command("check")
def nodes_check(as_json: JsonOpt = False) -> None:
    """Verify again, on this machine, every release and refusal the nodes signed: the
    node's signature, the job and query it answers, the result released, the node's read of
    the data and its audit events (exit 1 on any problem)."""
    from sandbox.nodes.checks import check_releases
    from sandbox.store.database import Database

    db = Database(Settings().db_url)
    try:
        checks = check_releases(db)
    finally:
        db.dispose()
    rows = [
        {"job": c.job_id, "node": c.node_id, "status": c.status,
         "data_read_at": c.data_read_at or "-", "node_events": c.node_events,
         "problems": "; ".join(c.problems) or "none"}
        for c in checks
    ]  # fmt: skip
    Output(as_json).table("node releases", rows, list(rows[0]) if rows else ["job"])
    if any(c.problems for c in checks):
        raise typer.Exit(1)
