"""The ``veil`` command line. Errors of every layer are caught in :func:`main`, in one place."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from keys import KeysError, KeyService, LocalKeyServer, Tenancy, platform_policy
from sandbox.keyserver import key_service
from sandbox.settings import Settings

app = typer.Typer(
    help="Veil: data usable, not visible.", no_args_is_help=True, pretty_exceptions_enable=False
)
keys_app = typer.Typer(
    help="The key server: start, stop, status, policy, public key.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
console = Console()
err_console = Console(stderr=True)


@app.command()
def demo() -> None:
    """Run the main path end to end on the embedded defaults."""
    from sandbox.demo import run_demo

    run_demo(Settings(), console)


@app.command()
def serve() -> None:
    """Run the API server (OpenAPI at /openapi.json)."""
    import uvicorn

    from sandbox.api import create_app

    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port)


@keys_app.command("start")
def keys_start() -> None:
    """Start the embedded key server (or find it running) and leave it running."""
    server = LocalKeyServer(Settings().keyserver_home)
    config = server.start()
    KeyService.connect(config)
    console.print(f"embedded key server running at {config.addr} (pid {server.pid})")


@keys_app.command("stop")
def keys_stop() -> None:
    """Stop the embedded key server."""
    server = LocalKeyServer(Settings().keyserver_home)
    was_running = server.is_running()
    server.stop()
    console.print(
        "embedded key server stopped" if was_running else "embedded key server was not running"
    )


@keys_app.command("status")
def keys_status() -> None:
    """Check the configured key server: reachable, unsealed, and usable by Veil."""
    settings = Settings()
    with key_service(settings) as keys:
        keys.check()
        where = "embedded" if settings.embedded_key_server else settings.vault_addr
        console.print(
            f"key server ({where}): ready; tenancy {keys.tenancy}; "
            f"signing key v{keys.signing_public_key().key_version}"
        )


@keys_app.command("policy")
def keys_policy(
    tenancy: Annotated[Tenancy, typer.Option(help="namespace or mount")] = Tenancy.NAMESPACE,
) -> None:
    """Print the policy Veil's token needs on an external key server."""
    if tenancy is Tenancy.AUTO:
        raise typer.BadParameter("choose namespace or mount", param_hint="--tenancy")
    sys.stdout.write(platform_policy(tenancy))


@keys_app.command("public-key")
def keys_public_key(
    output: Annotated[Path, typer.Option("--output", "-o", help="Write the PEM here.")],
) -> None:
    """Export the public key that verifies Veil's signatures offline."""
    with key_service(Settings()) as keys:
        output.write_text(keys.signing_public_key().to_pem())
    console.print(f"public key written to {output}")


def main() -> None:
    """Entry point of the ``veil`` script."""
    try:
        app()
    except KeysError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
