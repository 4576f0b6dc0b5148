"""Commands that act on this machine's Veil directly: init, serve, demo, keys (rotate
included), models.

(``veil audit verify`` reads this machine's log, an export, or the API: ``audit_verify``.)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from i18n import N_, Msg
from i18n.catalog import translate
from keys import KeyService, LocalKeyServer, Tenancy, platform_policy
from sandbox.cli.app import app, keys_app, models_app
from sandbox.cli.errors import read_json
from sandbox.cli.output import Output, console, err_console
from sandbox.config.datadir import prepare_data_dir
from sandbox.config.settings import Settings
from sandbox.runtime.keyserver import key_service

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command()
def init(
    new_operator_token: Annotated[
        bool,
        typer.Option(
            "--new-operator-token",
            help="An operator exists already: issue a new token for it here (when every "
            "operator token is lost, revoked or expired); audited.",
        ),
    ] = False,
) -> None:
    """Create the data directory and database, start the key server, print an operator token."""
    from sandbox.accounts.tokens import recover_operator_token
    from sandbox.service import bootstrap_operator, open_veil

    settings = Settings()
    with open_veil(settings, worker=False) as veil:
        token = bootstrap_operator(veil)
        if token is None and new_operator_token:
            issued = recover_operator_token(veil)
            token = issued.secret if issued is not None else None
    console.print(translate(Msg("data directory: {path}", path=str(settings.data_dir))))
    console.print(
        translate(Msg("database: {url} (migrated to the newest schema)", url=settings.db_url))
    )
    if token is None:
        console.print(
            translate(
                Msg(
                    "an operator exists already; ask it for a token, or run `veil init "
                    "--new-operator-token` here if every operator token is lost (no new one "
                    "printed)"
                )
            )
        )
        return
    console.print(
        translate(
            Msg(
                "operator token (shown once; Veil stores only its hash; it expires in {days} "
                "days: rotate it before with `veil tokens rotate`):",
                days=settings.token_ttl_days,
            )
        )
    )
    sys.stdout.write(token + "\n")


@app.command()
def demo(
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help=N_(
                "Afterwards leave the instance running (Ctrl-C stops it) and print the "
                "console's address and a token per role, to explore it."
            ),
        ),
    ] = False,
    hosted: Annotated[
        bool,
        typer.Option(
            "--hosted",
            help=N_(
                "The single-process story (every enterprise's data and keys with the "
                "platform) instead of one node per enterprise; --keep implies it."
            ),
        ),
    ] = False,
) -> None:
    """Run the main path end to end on the embedded defaults: a control plane and one node
    per demo enterprise (--hosted: everything in one process)."""
    if hosted or keep:
        from sandbox.demo.walkthrough import run_demo

        run_demo(Settings(), console, keep=keep)
        return
    from node.setup.demo import run_node_demo

    run_node_demo(Settings(), console)


@app.command()
def serve(
    processes: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="API processes serving the one address (uvicorn's workers)."
        ),
    ] = 1,
) -> None:
    """Run the API server (OpenAPI at /openapi.json); over TLS when VEIL_TLS_CERT_FILE and
    VEIL_TLS_KEY_FILE are set."""
    import uvicorn

    from sandbox.api.transport import TlsConfigError, tls_options
    from sandbox.server.app import create_app
    from sandbox.server.processes import serve as serve_processes

    settings = Settings()
    try:
        tls = tls_options(settings)
    except TlsConfigError as exc:
        err_console.print(f"[red]cannot serve[/red]: {exc}", highlight=False)
        raise typer.Exit(2) from None
    where = {"host": settings.api_host, "port": settings.api_port, **tls}
    if processes == 1:
        uvicorn.run(create_app(settings), **where)
        return
    # The processes share everything through the database and the key server: start the
    # embedded key server, provision Veil's keys and migrate once here, before they start.
    from sandbox.store.database import migrate

    prepare_data_dir(settings.data_dir)
    local = LocalKeyServer(settings.keyserver_home) if settings.embedded_key_server else None
    owns_server = local is not None and not local.is_running()
    try:
        KeyService.connect(
            local.start() if local else settings.external_key_server(),
            profile=settings.crypto_profile,
        )
        migrate(settings.db_url)
        serve_processes(  # each process listens on its own socket (sandbox.server.processes)
            "sandbox.server.app:app_from_environment", processes, factory=True, **where
        )
    finally:
        if local is not None and owns_server:
            local.stop()


@app.command()
def worker() -> None:
    """Run queued jobs from the procrastinate queue (VEIL_JOB_ENGINE=procrastinate) until
    stopped (SIGINT/SIGTERM); start as many as you like, on any machines."""
    import logging

    from sandbox.service import run_worker

    settings = Settings()
    if settings.job_engine != "procrastinate":
        err_console.print(
            "[red]error:[/red] 'veil worker' runs the jobs of the procrastinate engine: set "
            "VEIL_JOB_ENGINE=procrastinate and VEIL_DATABASE_URL=postgresql+psycopg://... "
            "(with the default engine, 'embedded', each 'veil serve' runs jobs itself)",
            highlight=False,
        )
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_worker(settings)


@keys_app.command("start")
def keys_start() -> None:
    """Start the embedded key server (or find it running) and leave it running."""
    settings = Settings()
    prepare_data_dir(settings.data_dir)
    server = LocalKeyServer(settings.keyserver_home)
    config = server.start()
    KeyService.connect(config, profile=settings.crypto_profile)
    console.print(
        translate(
            Msg(
                "embedded key server running at {addr} (pid {pid})",
                addr=config.addr,
                pid=server.pid,
            )
        )
    )


@keys_app.command("stop")
def keys_stop() -> None:
    """Stop the embedded key server."""
    server = LocalKeyServer(Settings().keyserver_home)
    was_running = server.is_running()
    server.stop()
    console.print(
        translate(Msg("embedded key server stopped") if was_running else Msg("it was not running"))
    )


@keys_app.command("status")
def keys_status() -> None:
    """Check the configured key server: reachable, unsealed, and usable by Veil."""
    settings = Settings()
    with key_service(settings) as keys:
        keys.check()
        where = "embedded" if settings.embedded_key_server else settings.vault_addr
        console.print(
            translate(
                Msg(
                    "key server ({where}): ready; tenancy {tenancy}; signing key v{version}",
                    where=where,
                    tenancy=str(keys.tenancy),
                    version=keys.signing_public_key().key_version,
                )
            )
        )


@keys_app.command("policy")
def keys_policy(
    tenancy: Annotated[Tenancy, typer.Option(help="namespace or mount")] = Tenancy.NAMESPACE,
) -> None:
    """Print the policy Veil's token needs on an external key server."""
    if tenancy is Tenancy.AUTO:
        raise typer.BadParameter("choose namespace or mount", param_hint="--tenancy")
    sys.stdout.write(platform_policy(tenancy))


@keys_app.command("rotate")
def keys_rotate(
    enterprise: Annotated[str, typer.Argument(help="The enterprise's id (ent_...).")],
    as_json: JsonOpt = False,
) -> None:
    """Rotate an enterprise's key and rewrap its stored data keys (audited `key.rotated`)."""
    from sandbox.accounts.key_rotation import rotate_enterprise_key
    from sandbox.service import open_veil

    with open_veil(Settings(), worker=False) as veil:
        rotation = rotate_enterprise_key(veil, None, enterprise)
    summary = {
        "rotation": rotation.id,
        "version": rotation.version,
        "rewrapped": rotation.rewrapped,
    }
    if as_json:
        Output(True).data(summary)
        return
    console.print(
        f"key of {enterprise} rotated to version {rotation.version}; "
        f"{rotation.rewrapped} stored data key(s) rewrapped (rotation {rotation.id})",
        highlight=False,
    )


NodeDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--node-dir",
        help="An enterprise node's directory: act on the node's own Veil instead of this "
        "machine's control plane.",
    ),
]


def _local_settings(node_dir: Path | None) -> Settings:
    if node_dir is None:
        return Settings()
    from node.setup.provision import node_settings

    return node_settings(node_dir.resolve())


@keys_app.command("profile")
def keys_profile(node_dir: NodeDirOpt = None, as_json: JsonOpt = False) -> None:
    """The crypto profile: the setting, the audit chain's hash, the signing keys, and how many
    stored objects each profile holds (``veil keys migrate`` moves them)."""
    from policies import audit
    from sandbox.jobs.reencryption import census
    from sandbox.service import open_veil

    settings = _local_settings(node_dir)
    with open_veil(settings, worker=False, profile_check=False) as veil:
        with veil.db.read() as session:
            counts = census(session)
            head = session.get(audit.AuditHead, 1)
            chain = head.hash_alg if head is not None else audit.SHA256
        signing = [f"v{k.key_version} {k.algorithm}" for k in veil.keys.signing_public_keys()]
    summary = {"setting": str(settings.crypto_profile), "audit_chain_hash": chain,
               "signing_keys": signing, "stored": counts}  # fmt: skip
    if as_json:
        Output(True).data(summary)
        return
    Output(False).record(
        N_("crypto profile"),
        {
            "setting": summary["setting"],
            "audit_chain_hash": chain,
            "signing_keys": ", ".join(signing),
            **{
                f"stored ({profile})": ", ".join(f"{kind} {n}" for kind, n in kinds.items())
                for profile, kinds in counts.items()
            },
        },
    )


@keys_app.command("migrate")
def keys_migrate(node_dir: NodeDirOpt = None, as_json: JsonOpt = False) -> None:
    """Switch this deployment to VEIL_CRYPTO_PROFILE: the audit chain's hash, then every stored
    dataset, model, held output and cell-key secret re-encrypted (progress shown; resumable:
    run it again after a failure; audited). Stop Veil's servers first."""
    from sandbox.jobs.reencryption import StoredItem, migrate
    from sandbox.service import open_veil

    def progress(done: int, total: int, item: StoredItem) -> None:
        if not as_json:
            err_console.print(
                f"[{done + 1}/{total}] {item.kind} {item.object_id} v{item.version}",
                highlight=False,
            )

    settings = _local_settings(node_dir)
    with open_veil(settings, worker=False, profile_check=False) as veil:
        run = migrate(veil, None, progress=progress)
    summary = {"migration": run.id, "profile": str(run.profile),
               "audit_chain_switched": run.chain_switched, "reencrypted": run.reencrypted,
               "changed_meanwhile": run.changed_meanwhile, "failed": run.failed,
               "remaining": run.remaining}  # fmt: skip
    if as_json:
        Output(True).data(summary)
    else:
        console.print(
            translate(
                Msg(
                    "migrated to the {profile} profile ({migration}): {count} object(s) "
                    "re-encrypted, {failed} failed, {remaining} left",
                    profile=str(run.profile),
                    migration=run.id,
                    count=sum(run.reencrypted.values()),
                    failed=len(run.failed),
                    remaining=run.remaining,
                )
            ),
            highlight=False,
        )
        for failure in run.failed:
            err_console.print(f"failed: {failure}", highlight=False)
    if not run.done:
        raise typer.Exit(1)


@keys_app.command("public-key")
def keys_public_key(
    output: Annotated[Path, typer.Option("--output", "-o", help="Write the PEM here.")],
) -> None:
    """Export the public keys that verify Veil's signatures offline (every version: after a
    rotation or a change of crypto profile, older signatures need the older keys)."""
    with key_service(Settings()) as keys:
        output.write_text("".join(k.to_pem() for k in keys.signing_public_keys()))
    console.print(translate(Msg("public key written to {path}", path=str(output))))


@models_app.command("predict")
def models_predict(
    model_dir: Annotated[Path, typer.Argument(help="Directory from `veil jobs model`")],
    data: Annotated[Path, typer.Argument(help="CSV with the model's feature columns")],
    limit: Annotated[int, typer.Option(help="Rows to show")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Load a downloaded model (safetensors + card) and predict on a CSV, e.g. mock data."""
    import polars as pl

    from analytics.training import load_model, predict

    card = read_json(model_dir / "model-card.json")
    model = load_model((model_dir / "model.safetensors").read_bytes(), card)
    frame = pl.read_csv(data)
    predictions = predict(model, card, frame)
    out = Output(as_json)
    if as_json:
        out.data({"predictions": predictions})
        return
    out.say(
        f"{card['family']} predicting '{card['target']['name']}' from "
        f"{len(card['features'])} features; {len(predictions)} predictions"
    )
    for i, value in enumerate(predictions[:limit]):
        out.say(f"  row {i + 1}: {value}")
