"""Transport security: the headers every response carries, and TLS for the API server."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Final

from starlette.types import Scope

from sandbox.config.settings import Settings

#: A year, once a browser has seen the API over TLS (RFC 6797); sent only over TLS.
HSTS: Final = (b"strict-transport-security", b"max-age=31536000")
_COMMON: Final = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]
_NO_STORE: Final = (b"cache-control", b"no-store")
_NOTHING_LOADS: Final = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_API: Final = [*_COMMON, _NO_STORE, (b"referrer-policy", b"no-referrer"), _NOTHING_LOADS]
#: The API reference pages set their own policy (``sandbox.api.docs_offline``), which is
#: kept; this applies where they do not (an error answered before the route).
_DOCS: Final = [
    *_COMMON,
    _NO_STORE,
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
]
#: The console's pages set their own policy (``sandbox.console.render``), which is kept;
#: these apply to what does not (redirects, errors answered before a route).
_CONSOLE: Final = [*_COMMON, _NO_STORE, (b"referrer-policy", b"same-origin"), _NOTHING_LOADS]
#: Static assets keep their ETag revalidation: no ``no-store``.
_STATIC: Final = [*_COMMON, (b"referrer-policy", b"same-origin"), _NOTHING_LOADS]
DOCS_PATHS: Final = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
_VARIANTS: Final = {
    (kind, tls): [*headers, HSTS] if tls else headers
    for kind, headers in {
        "api": _API,
        "docs": _DOCS,
        "console": _CONSOLE,
        "static": _STATIC,
    }.items()
    for tls in (False, True)
}


def security_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The headers a response to ``scope`` gets unless it sets them itself.

    Strict-Transport-Security only over TLS (directly, or as reported by a trusted
    proxy): browsers ignore it over plain HTTP.
    """
    path: str = scope["path"]
    if path.startswith("/console/static/"):
        kind = "static"
    elif path == "/console" or path.startswith("/console/"):
        kind = "console"
    elif path in DOCS_PATHS:
        kind = "docs"
    else:
        kind = "api"
    return _VARIANTS[kind, scope.get("scheme") == "https"]


class TlsConfigError(ValueError):
    """The TLS settings are incomplete or name files that cannot be used."""


def tls_options(settings: Settings) -> dict[str, Any]:
    """Uvicorn's TLS arguments from the settings; empty when TLS is off.

    Checked here, before the server starts, so that a mistake is one clear sentence
    rather than a traceback from inside the server.
    """
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        given, missing = (
            ("VEIL_TLS_KEY_FILE", "VEIL_TLS_CERT_FILE")
            if cert is None
            else ("VEIL_TLS_CERT_FILE", "VEIL_TLS_KEY_FILE")
        )
        raise TlsConfigError(
            f"{given} is set but {missing} is not: set both (certificate chain and private "
            "key, PEM) to serve over TLS, or neither to serve plain HTTP"
        )
    for path, name in ((cert, "VEIL_TLS_CERT_FILE"), (key, "VEIL_TLS_KEY_FILE")):
        _readable(path, name)
    password = settings.tls_key_password.get_secret_value() if settings.tls_key_password else None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsConfigError(
            "VEIL_TLS_CERT_FILE and VEIL_TLS_KEY_FILE are not a usable certificate and "
            "private key (both PEM, the key matching the certificate; an encrypted key needs "
            f"VEIL_TLS_KEY_PASSWORD): {getattr(exc, 'reason', None) or type(exc).__name__}"
        ) from None
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key), "ssl_keyfile_password": password}


def _readable(path: Path, setting: str) -> None:
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TlsConfigError(f"{setting}={path} cannot be read ({reason})") from None
