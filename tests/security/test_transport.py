"""Transport security on a real API: the headers of every response, and TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from sandbox.api.docs_offline import SWAGGER_POLICY
from sandbox.api.transport import TlsConfigError, tls_options
from sandbox.cli import app as cli
from sandbox.console.render import SECURITY_HEADERS
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from tests.sandbox.conftest import World

API_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


def self_signed(directory: Path, name: str = "veil") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


# --- Headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "who", "status"),
    [
        ("/v1/health", None, 200),
        ("/v1/me", None, 401),
        ("/v1/me", "operator", 200),
        ("/v1/grants/nope", "provider", 404),
        ("/v1/grants/nope", "operator", 403),
        ("/v1/audit/events?limit=0", "operator", 422),
        ("/openapi.json", None, 200),
    ],
)
def test_every_api_response_carries_the_security_headers(
    world: World, path: str, who: str | None, status: int
) -> None:
    client = getattr(world, who) if who else None
    auth = {"authorization": client._http.headers["authorization"]} if client else {}
    response = httpx.get(world.url + path, headers=auth)
    assert response.status_code == status
    assert {k: response.headers.get(k) for k in API_HEADERS} == API_HEADERS
    assert "strict-transport-security" not in response.headers  # plain HTTP: meaningless


def test_the_console_keeps_its_own_policy(world: World) -> None:
    page = httpx.get(world.url + "/console/login")
    assert page.status_code == 200
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value  # set by the console, not replaced
    assert page.headers["x-frame-options"] == "DENY"
    asset = httpx.get(world.url + "/console/static/console.css")
    assert asset.status_code == 200
    assert asset.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in asset.headers.get("cache-control", "")  # still cacheable
    docs = httpx.get(world.url + "/docs")
    # Its own policy: scripts from this server only (sandbox/api/docs_offline.py).
    assert docs.headers["content-security-policy"] == SWAGGER_POLICY


def test_even_an_unexpected_error_carries_them(veil: Veil) -> None:
    from fastapi.testclient import TestClient

    from sandbox.server.app import create_app

    app = create_app(veil.settings, veil)

    @app.get("/v1/fails")
    def fails() -> None:
        raise RuntimeError("a bug")

    response = TestClient(app, raise_server_exceptions=False).get("/v1/fails")
    assert response.status_code == 500
    assert "a bug" not in response.text
    assert {k: response.headers.get(k) for k in API_HEADERS} == API_HEADERS


# --- TLS -----------------------------------------------------------------------------------


def test_the_api_serves_https_with_the_configured_certificate(veil: Veil, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = veil.settings.model_copy(update={"tls_cert_file": cert, "tls_key_file": key})
    trust = ssl.create_default_context(cafile=str(cert))
    with ApiThread(settings, veil) as url:
        assert url.startswith("https://127.0.0.1:")
        response = httpx.get(url + "/v1/health", verify=trust)
        assert response.status_code == 200
        assert response.headers["strict-transport-security"] == "max-age=31536000"
        assert response.headers["x-content-type-options"] == "nosniff"
        # Plain HTTP to the TLS port gets no answer; nor does a client that does not trust it.
        with pytest.raises(httpx.TransportError):
            httpx.get(url.replace("https://", "http://") + "/v1/health")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url + "/v1/health")


def test_tls_settings_are_checked_before_the_server_starts(veil: Veil, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    other_cert, _ = self_signed(tmp_path, "other")

    def check(**tls: object) -> str:
        with pytest.raises(TlsConfigError) as error:
            ApiThread(veil.settings.model_copy(update=tls), veil)
        return str(error.value)

    assert "VEIL_TLS_KEY_FILE is not" in check(tls_cert_file=cert)
    assert "VEIL_TLS_CERT_FILE is not" in check(tls_key_file=key)
    missing = check(tls_cert_file=cert, tls_key_file=tmp_path / "absent.key")
    assert "VEIL_TLS_KEY_FILE" in missing and "cannot be read" in missing
    assert "not a usable certificate" in check(tls_cert_file=other_cert, tls_key_file=key)
    assert "not a usable certificate" in check(tls_cert_file=key, tls_key_file=key)
    assert tls_options(veil.settings) == {}


def test_veil_serve_refuses_half_a_tls_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, _ = self_signed(tmp_path)
    monkeypatch.setenv("VEIL_DATA_DIR", str(tmp_path / "veil"))
    monkeypatch.setenv("VEIL_TLS_CERT_FILE", str(cert))
    monkeypatch.delenv("VEIL_TLS_KEY_FILE", raising=False)
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2
    assert "VEIL_TLS_KEY_FILE" in result.output
    assert not (tmp_path / "veil").exists()  # nothing was started
