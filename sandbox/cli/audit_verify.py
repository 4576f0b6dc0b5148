"""``veil audit verify``: recompute the audit hash chain and check its signed checkpoints.

Three sources, and never a false all-clear:

- ``--offline FILE --public-key KEY``: an export, with the public key alone;
- with a token (``--token`` or ``VEIL_TOKEN``; ``--url``/``VEIL_URL`` says where): through
  the API, as every command that has a token does: the server's signed export of the whole
  log (operators and security officers) is checked here, offline, with the public key
  (``--public-key``, or the server's own, which the verdict then says);
- otherwise (or ``--local``): this machine's database, read only.  Nothing is created: no
  database, no directory, and no key server is started (the public key comes from
  ``--public-key`` or a key server already running).

Exit status: 0 only when every event and signature was checked and holds; 1 when the chain
is broken; 2 when nothing could be verified (no log where it looked, an empty log, no
public key, no answer from the server), with where it looked and what to do.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from i18n import Msg
from i18n.catalog import translate
from keys import KeyService, LocalKeyServer, SigningPublicKey
from keys.signing import public_keys_from_pem
from policies.audit_export import verify_export
from sandbox.cli.app import audit_app
from sandbox.cli.output import Output, console, err_console
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Url, connect
from sandbox.client import ApiError
from sandbox.config.settings import Settings

#: Nothing could be verified (as opposed to 1: verified, and broken).
NOTHING_VERIFIED = 2
HINT = (
    "verify through the API with --token (or VEIL_TOKEN) and --url, or an export with "
    "--offline FILE --public-key KEY"
)

OptionalToken = Annotated[
    str | None,
    typer.Option("--token", envvar="VEIL_TOKEN", help="Verify through the API as this principal."),
]


@audit_app.command("verify")
def audit_verify(
    offline: Annotated[
        Path | None,
        typer.Option(help="Verify this export file instead, with no server or key server"),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="PEM file from `veil audit public-key`: needed with --offline; otherwise "
            "used instead of asking the key server or the Veil server for the key"
        ),
    ] = None,
    token: OptionalToken = None,
    url: Url = DEFAULT_URL,
    local: Annotated[
        bool,
        typer.Option("--local", help="Read this machine's database even with a token set."),
    ] = False,
    record: Annotated[
        bool,
        typer.Option(
            "--record",
            help="Have the server verify every event and record the result, signed: its "
            "routine checks start from it (needs --token).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Recompute the audit hash chain and check every signed checkpoint; exit 0 only when
    all of it holds, 1 if it is broken, 2 if there was nothing to verify.

    With --offline FILE it checks an export against the public key alone; with a token
    (VEIL_TOKEN) it checks the server's export through the API; otherwise this machine's
    database (never creating one)."""
    out = Output(as_json)
    try:
        if record:
            if not token:
                raise typer.BadParameter("give your token: --token (or VEIL_TOKEN)",
                                         param_hint="--record")  # fmt: skip
            _record_remote(url, token, out)
        elif offline is not None:
            _verify_offline(offline, public_key, out)
        elif token and not local:
            _verify_remote(url, token, public_key, out)
        else:
            _verify_local(public_key, out)
    except _NothingVerified as nothing:
        if out.as_json:
            out.data({"ok": False, "verified": False, "problem": str(nothing)})
        said = translate(Msg("[red]nothing verified[/red]: {why}", why=str(nothing)))
        err_console.print(said, highlight=False)
        raise typer.Exit(NOTHING_VERIFIED) from None


# -- the three sources --------------------------------------------------------------------------


def _verify_offline(path: Path, public_key: Path | None, out: Output) -> None:
    if public_key is None:
        raise typer.BadParameter(
            "give the public key: --public-key KEY.pem", param_hint="--offline"
        )
    keys = _read_public_keys(public_key)
    try:
        with path.open("rb") as lines:
            report = verify_export(lines, keys)
    except OSError as exc:
        raise typer.BadParameter(str(exc), param_hint="--offline") from None
    _export_verdict(out, report, {"source": str(path)})


def _verify_remote(url: str, token: str, public_key: Path | None, out: Output) -> None:
    """The server's signed export of the whole log, checked here with the public key."""
    try:
        with connect(url, token) as client:
            if public_key is not None:
                keys, key_source = _read_public_keys(public_key), str(public_key)
            else:
                keys, key_source = public_keys_from_pem(client.audit_public_key()), "server"
            # Spooled to an unnamed temporary file (gone when closed): a long log need not
            # fit in memory, and nothing is left behind.
            with tempfile.TemporaryFile() as export:
                client.audit_export(export)
                export.seek(0)
                report = verify_export(export, keys)
    except httpx.TransportError as exc:
        _nothing(
            f"cannot reach the Veil server at {url} ({type(exc).__name__}); on the server's "
            "machine, --local reads its database instead"
        )
    except ApiError as exc:
        if exc.status == 409:  # the server verifies the chain before it signs an export
            _verdict(out, False, None, f"the server refused to export it: {exc.detail}", {}, "")
        _nothing(f"the Veil server at {url} answered {exc.status}: {exc.detail}")
    if key_source == "server" and not out.as_json:
        err_console.print(
            "note: the public key came from the same server; for a check that does not trust "
            "it, give --public-key with a copy of the key kept elsewhere",
            highlight=False,
        )
    _export_verdict(out, report, {"source": url, "public_key": key_source})


def _record_remote(url: str, token: str, out: Output) -> None:
    """The server verifies every event and records the result (``audit.verified``)."""
    try:
        with connect(url, token) as client:
            report = client.record_audit_verification()
    except httpx.TransportError as exc:
        _nothing(f"cannot reach the Veil server at {url} ({type(exc).__name__})")
    except ApiError as exc:
        _nothing(f"the Veil server at {url} answered {exc.status}: {exc.detail}")
    counts = {k: report[k] for k in ("events", "checkpoints", "full_verification_at")}
    summary = Msg(
        "{events} events, {checkpoints} signed checkpoints verified by the server and "
        "recorded ({url})", events=report["events"], checkpoints=report["checkpoints"], url=url
    )  # fmt: skip
    _verdict(out, report["ok"], report["first_bad_seq"], report["problem"],
             counts | {"source": url}, summary)  # fmt: skip


def _verify_local(public_key: Path | None, out: Output) -> None:
    """This machine's database, read only; never created."""
    from policies import audit
    from sandbox.store.database import is_initialised, make_engine

    settings = Settings()
    where = _database_location(settings)
    if settings.database_url is None and not (settings.data_dir / "veil.db").is_file():
        _nothing(
            f"no audit log on this machine: there is no database at {where} (data directory "
            f"{settings.data_dir}, from VEIL_DATA_DIR); run this where Veil runs, with its "
            f"VEIL_DATA_DIR, or {HINT}"
        )
    engine = make_engine(settings.db_url, read_only=True)
    try:
        try:
            ready = is_initialised(engine)
        except SQLAlchemyError as exc:
            _nothing(f"cannot read the database at {where} ({type(exc).__name__}); {HINT}")
        if not ready:
            _nothing(
                f"no Veil audit log in the database at {where} (`veil init` never ran on "
                f"it); {HINT}"
            )
        keys = _local_public_keys(settings, public_key)
        with engine.connect() as connection, connection.begin():
            report = audit.verify(connection, keys)
    finally:
        engine.dispose()
    if report.events == 0 and report.ok:
        _nothing(f"the audit log in the database at {where} is empty: nothing to verify")
    _verdict(
        out,
        report.ok,
        report.first_bad_seq,
        report.problem,
        {"events": report.events, "checkpoints": report.checkpoints, "source": where},
        Msg(
            "{events} events, {checkpoints} signed checkpoints verified ({where})",
            events=report.events,
            checkpoints=report.checkpoints,
            where=where,
        ),
    )


# -- helpers ----------------------------------------------------------------------------------


def _local_public_keys(settings: Settings, pem: Path | None) -> Mapping[int, SigningPublicKey]:
    """The signing key's public halves: from ``pem``, or from a key server that is already
    running (the embedded one is never started just to verify)."""
    if pem is not None:
        return _read_public_keys(pem)
    if settings.embedded_key_server:
        config = LocalKeyServer(settings.keyserver_home).attach()
        if config is None:
            _nothing(
                f"the embedded key server ({settings.keyserver_home}) is not running, and the "
                "signed checkpoints need its public key: start it (`veil keys start`), or give "
                "--public-key KEY.pem (from `veil audit public-key` or `veil keys public-key`)"
            )
    else:
        config = settings.external_key_server()
    keys = KeyService.connect(config, profile=settings.crypto_profile)
    return {k.key_version: k for k in keys.signing_public_keys()}


def _read_public_keys(path: Path) -> Mapping[int, SigningPublicKey]:
    try:
        return public_keys_from_pem(path.read_text())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--public-key") from None


def _database_location(settings: Settings) -> str:
    """Where the database is, without a password."""
    if settings.database_url is None:
        return str(settings.data_dir / "veil.db")
    return make_url(settings.database_url).render_as_string(hide_password=True)


def _export_verdict(out: Output, report: Any, extra: dict[str, Any]) -> None:
    if report.ok and report.events + report.elided == 0:
        _nothing(f"the export from {extra['source']} holds no event: nothing to verify")
    _verdict(
        out,
        report.ok,
        report.first_bad_seq,
        report.problem,
        {
            "from_seq": report.from_seq,
            "to_seq": report.to_seq,
            "events": report.events,
            "elided": report.elided,
            "checkpoints": report.checkpoints,
            "scope": report.scope,
        }
        | extra,
        Msg(
            "events {first}-{last}: {events} events shown, {elided} elided, manifest and "
            "{checkpoints} checkpoints signed ({source})",
            first=report.from_seq,
            last=report.to_seq,
            events=report.events,
            elided=report.elided,
            checkpoints=report.checkpoints,
            source=extra["source"],
        ),
    )


def _verdict(
    out: Output,
    ok: bool,
    first_bad_seq: int | None,
    problem: str | None,
    counts: dict[str, Any],
    summary: str,
) -> None:
    if out.as_json:
        verdict = {"ok": ok, "verified": True, "first_bad_seq": first_bad_seq, "problem": problem}
        out.data(verdict | counts)
    elif ok:
        out.say(Msg("[green]audit chain intact[/green]: {summary}", summary=summary))
    else:
        where = Msg(" at event {seq}", seq=first_bad_seq) if first_bad_seq is not None else ""
        broken = Msg("[red]audit chain BROKEN[/red]{where}: {problem}", where=where,
                     problem=problem)  # fmt: skip
        console.print(translate(broken), highlight=False)
    if not ok:
        raise typer.Exit(1)


class _NothingVerified(Exception):
    """Nothing could be verified; the message says why, where it looked, what to do."""


def _nothing(message: str) -> NoReturn:
    raise _NothingVerified(message)
