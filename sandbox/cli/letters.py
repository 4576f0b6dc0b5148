"""``veil purposes`` (the city's vocabulary), ``veil letters`` (commitment letters) and
``veil evidence`` (evidence packs).

A provider makes its key pair here (``keygen``), registers the public half
(``register-key``) and signs a grant's letter with the private key, which never leaves its
machine (``sign``); an enterprise issues the letter (``issue``); anyone verifies a letter
file offline with the platform's public key (``verify``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from i18n import N_, Msg
from i18n.catalog import translate
from keys import InvalidSignature
from policies.errors import VeilError
from policies.letter_format import (
    InvalidLetter,
    dumps,
    public_key_fingerprint,
    sign_as_provider,
    verify_letter,
)
from sandbox.cli.app import evidence_app, letters_app, purposes_app
from sandbox.cli.errors import CliError
from sandbox.cli.output import Output, err_console
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect
from sandbox.grants import letter_page
from sandbox.oversight import evidence_format
from sandbox.oversight.receipt_format import load_public_keys

PURPOSE_COLUMNS = ["code", "name_zh", "name_en", "retired"]
PrivateKey = Annotated[
    Path, typer.Option("--private-key", help="The provider's Ed25519 private key (PEM).")
]


# ---------------------------------------------------------------- purposes


@purposes_app.command("list")
def purposes_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """List the purposes new grants may name (retired ones are marked)."""
    with connect(url, token) as c:
        Output(as_json).table(N_("purposes"), c.list_purposes(), PURPOSE_COLUMNS)


@purposes_app.command("set")
def purposes_set(
    code: Annotated[str, typer.Argument(help="The purpose's code, e.g. energy-management.")],
    zh: Annotated[str, typer.Option("--zh", help="Its Chinese name.")],
    en: Annotated[str, typer.Option("--en", help="Its English name.")],
    token: Token,
    url: Url = DEFAULT_URL,
    retire: Annotated[
        bool, typer.Option("--retire", help="Retire it: no new grant may name it.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a purpose, rename it, retire it (--retire) or restore it (operator)."""
    with connect(url, token) as c:
        Output(as_json).record(N_("purpose"), c.set_purpose(code, zh, en, retired=retire))


# ---------------------------------------------------------------- the provider's key


@letters_app.command("keygen")
def letters_keygen(
    private_key: PrivateKey,
    public_key: Annotated[
        Path, typer.Option("--public-key", help="Where to write the public key (PEM).")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Make an Ed25519 key pair on this machine (no server); the private key file is the
    user's alone."""
    if private_key.exists():
        said = Msg(
            "{path} exists: choose another file, or keep using that key", path=str(private_key)
        )
        raise CliError(translate(said), code="file_exists")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_pem)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    public_key.write_text(public_pem)
    Output(as_json).record(
        N_("key pair written"),
        {
            "private_key": str(private_key),
            "public_key": str(public_key),
            "fingerprint": public_key_fingerprint(public_pem),
        },
    )


@letters_app.command("register-key")
def letters_register_key(
    public_key: Annotated[
        Path, typer.Option("--public-key", help="The public key file (PEM) to register.")
    ],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Register your public key (provider); letters issued from now on name it."""
    with connect(url, token) as c:
        Output(as_json).record(
            N_("signing key registered"), c.register_letter_key(public_key.read_text())
        )


# ---------------------------------------------------------------- issuing, reading, signing


def _summary(view: dict[str, Any]) -> dict[str, Any]:
    letter = view["letter"]
    return {
        "grant": view["grant_id"],
        "letter": letter.get("id"),
        "status": view["status"],
        "enterprise": letter.get("enterprise", {}).get("name"),
        "provider": letter.get("provider", {}).get("name"),
        "purposes": [p.get("code") for p in letter.get("purposes", [])],
        "retain_until": view["retain_until"],
        "insurance_reference": letter.get("insurance_reference"),
        "signed_at": view.get("signed_at"),
    }


@letters_app.command("issue")
def letters_issue(
    grant_id: Annotated[str, typer.Argument(help="Your grant's id.")],
    retention_days: Annotated[
        int,
        typer.Option("--retention-days", help="Days results and models are kept after the grant."),
    ],
    insurance: Annotated[
        str, typer.Option("--insurance", help="The provider's insurance policy reference.")
    ],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Issue a grant's commitment letter (enterprise); Veil signs it for you."""
    with connect(url, token) as c:
        view = c.issue_letter(grant_id, retention_days, insurance)
    Output(as_json).record(N_("commitment letter issued"), _summary(view))


@letters_app.command("show")
def letters_show(
    grant_id: Annotated[str, typer.Argument(help="The grant's id.")],
    token: Token,
    url: Url = DEFAULT_URL,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the letter's JSON here.")
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write the printable page here.")
    ] = None,
    pdf: Annotated[
        Path | None,
        typer.Option("--pdf", help="Also print the page to this PDF (needs Chromium here)."),
    ] = None,
    signer_key: Annotated[
        Path | None,
        typer.Option(
            "--signer-key",
            help="Write here the public key that signed for the enterprise (the platform's, "
            "or its node's), for 'veil letters verify --public-key'.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a grant's letter (its enterprise and provider); save its file or its page."""
    with connect(url, token) as c:
        view = c.get_letter(grant_id)
        if signer_key is not None:
            signer_key.write_text(view.get("enterprise_key_pem") or c.audit_public_key())
    if output is not None:
        output.write_text(dumps(view["letter"]))
    page = letter_page.render_html(view["letter"])
    if html is not None:
        html.write_text(page)
    if pdf is not None:
        print_pdf(page, pdf)
    Output(as_json).record(N_("commitment letter"), _summary(view))


@letters_app.command("sign")
def letters_sign(
    grant_id: Annotated[str, typer.Argument(help="The grant whose letter you sign.")],
    private_key: PrivateKey,
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Sign a grant's letter with your private key, here (provider); the grant comes into
    force.  The enterprise's signature and your key in the letter are checked first."""
    key = _private_key(private_key)
    with connect(url, token) as c:
        view = c.get_letter(grant_id)
        letter = view["letter"]
        # Signed for the enterprise by the platform, or by the enterprise's own node.
        signer = view.get("enterprise_key_pem") or c.audit_public_key()
        verify_letter(letter, load_public_keys(signer), require_provider=False)
        mine = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        named = letter["provider"]["signing_key"]["fingerprint"]
        if public_key_fingerprint(mine.decode()) != named:
            said = Msg(
                "this letter names another key than {path}'s; sign with the key you "
                "registered, or ask the enterprise for a new letter",
                path=str(private_key),
            )
            raise CliError(translate(said), code="wrong_key")
        view = c.sign_letter(grant_id, sign_as_provider(letter, key))
    Output(as_json).record(N_("commitment letter signed"), _summary(view))


#: Browsers that print a page to PDF headless, in the order tried.
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def print_pdf(page: str, target: Path) -> None:
    """Print ``page`` to ``target`` with a headless Chromium of this machine (its own
    profile in a temporary directory; the page has no script and loads nothing)."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        said = Msg(
            "no Chromium found to print the PDF: install chromium, or save the --html page "
            "as PDF from a browser's print dialog"
        )
        raise CliError(translate(said), code="no_browser")
    with tempfile.TemporaryDirectory(prefix="veil-letter-") as work:
        source = Path(work) / "letter.html"
        source.write_text(page)
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
            f"--user-data-dir={work}/profile", f"--print-to-pdf={target.resolve()}",
            source.as_uri(),
        ]  # fmt: skip
        # A timeout leaves no PDF, refused below like any other failure to print.
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(command, capture_output=True, timeout=120, check=False)  # noqa: S603
    if not target.exists() or not target.read_bytes().startswith(b"%PDF"):
        said = Msg(
            "Chromium did not print the PDF; save the --html page as PDF from a browser's "
            "print dialog"
        )
        raise CliError(translate(said), code="no_pdf")


def _private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        said = Msg(
            "{path} is not an unencrypted Ed25519 private key in PEM form "
            "('veil letters keygen' writes one)",
            path=str(path),
        )
        raise CliError(translate(said), code="bad_file")
    return key


# ---------------------------------------------------------------- offline


@letters_app.command("verify")
def letters_verify(
    file: Annotated[Path, typer.Argument(help="The letter's JSON (or its printable page).")],
    public_key: Annotated[
        Path, typer.Option("--public-key", help="The platform's key(s): 'veil audit public-key'.")
    ],
    provider_key: Annotated[
        Path | None,
        typer.Option("--provider-key", help="Also require this provider public key (PEM)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check both signatures of a letter offline; exit 1 if it was altered or is unsigned."""
    letter = letter_page.load_letter(file.read_text())
    keys = load_public_keys(public_key.read_text())
    expected = provider_key.read_text() if provider_key is not None else None
    out = Output(as_json)
    try:
        verify_letter(letter, keys, provider_key_pem=expected)
    except (InvalidSignature, InvalidLetter) as exc:
        problem = (
            translate(
                Msg(
                    "a signature does not match: the letter was altered after it was "
                    "signed, or signed by another key"
                )
            )
            if isinstance(exc, InvalidSignature)
            else translate(exc.message)
        )
        if as_json:
            out.data({"ok": False, "problem": problem})
        said = translate(Msg("[red]letter NOT valid:[/red] {problem}", problem=problem))
        err_console.print(said, highlight=False)
        raise typer.Exit(1) from None
    summary = {
        "letter": letter.get("id"),
        "grant": letter.get("grant", {}).get("id"),
        "enterprise": letter.get("enterprise", {}).get("name"),
        "provider": letter.get("provider", {}).get("name"),
        "purposes": [p.get("code") for p in letter.get("purposes", [])],
        "retain_until": letter.get("obligations", {}).get("retain_until"),
    }
    if as_json:
        out.data({"ok": True, **summary})
        return
    out.record(N_("letter verified: both signatures valid, content unaltered"), summary)


# ---------------------------------------------------------------- evidence packs


@evidence_app.command("create")
def evidence_create(
    grant_id: Annotated[str, typer.Argument(help="The grant the pack is about.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Write the pack's JSON here.")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Ask for a grant's signed evidence pack: its letter, a usage receipt, the audit range."""
    with connect(url, token) as c:
        pack = c.evidence_pack(grant_id)
    output.write_text(evidence_format.dumps(pack))
    Output(as_json).record(
        N_("evidence pack"),
        {"pack": pack["id"], "grant": pack["grant_id"], "written_to": str(output)},
    )


@evidence_app.command("verify")
def evidence_verify(
    file: Annotated[Path, typer.Argument(help="The evidence pack's JSON.")],
    public_key: Annotated[
        Path, typer.Option("--public-key", help="The platform's key(s): 'veil audit public-key'.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Check a pack offline: its signature, the letter, the receipt, the audit range, and
    that they belong together; exit 1 otherwise."""
    keys = load_public_keys(public_key.read_text())
    out = Output(as_json)
    try:
        summary = evidence_format.verify_pack(evidence_format.load_pack(file.read_text()), keys)
    except (InvalidSignature, VeilError) as exc:
        problem = (
            translate(
                Msg(
                    "a signature does not match: the pack was altered after it was signed, "
                    "or signed by another key"
                )
            )
            if isinstance(exc, InvalidSignature)
            else translate(exc.message)
        )
        if as_json:
            out.data({"ok": False, "problem": problem})
        said = translate(Msg("[red]evidence pack NOT valid:[/red] {problem}", problem=problem))
        err_console.print(said, highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        out.data({"ok": True, **summary})
        return
    out.record(N_("evidence pack verified: every part valid and belonging together"), summary)
