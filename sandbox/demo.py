"""`veil demo`: the main path end to end on the embedded defaults.

So far Veil's main path is its key layer: an enterprise's production data is
encrypted under its own key in a real OpenBao, cannot be read with another
tenant's key, survives key rotation and a server restart, and becomes
unreadable for good when the enterprise is deleted.  Later issues extend the
demo up to released private statistics.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from keys import (
    DecryptionError,
    InvalidSignature,
    KeyService,
    LocalKeyServer,
    SigningPublicKey,
    UnknownTenant,
    verify_signature,
)
from sandbox.settings import Settings

DEMO_ROWS = 200_000
_MACHINES = ("press-01", "press-02", "lathe-01", "lathe-02", "mill-01")
_SHIFTS = ("early", "late", "night")


def production_csv(rows: int = DEMO_ROWS, seed: int = 7) -> bytes:
    """A reproducible production log of a small metal-parts factory (the embedded demo data)."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not security or DP noise
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["machine", "shift", "temperature_c", "cycle_time_s", "yield_pct", "recipe_p1"])
    for _ in range(rows):
        machine = rng.choice(_MACHINES)
        temperature = rng.gauss(68.0, 6.0)
        writer.writerow(
            [
                machine,
                rng.choice(_SHIFTS),
                f"{temperature:.2f}",
                f"{rng.gauss(42.0, 4.0):.2f}",
                f"{min(100.0, max(0.0, 99.0 - 0.05 * abs(temperature - 68.0) ** 2)):.2f}",
                f"{rng.uniform(0.1, 0.9):.4f}",
            ]
        )
    return out.getvalue().encode()


def _expect(error: type[Exception], action: Callable[[], object]) -> str:
    try:
        action()
    except error as exc:
        return str(exc)
    raise AssertionError(f"expected {error.__name__}")


def run_demo(settings: Settings, console: Console) -> None:
    """Run the demo against the embedded key server under ``settings.data_dir``."""
    if not settings.embedded_key_server:
        console.print("[yellow]VEIL_VAULT_ADDR is set; the demo uses the embedded server anyway.")
    server = LocalKeyServer(settings.keyserver_home)
    objects = settings.data_dir / "objects"
    console.rule("Veil demo: enterprise data under enterprise keys")
    t0 = time.perf_counter()
    config = server.start()
    console.print(
        f"1. Embedded OpenBao at {config.addr} (pid {server.pid}), storage and "
        f"audit log under {settings.keyserver_home} ({time.perf_counter() - t0:.2f} s)"
    )
    try:
        keys = KeyService.connect(config)
        console.print(
            f"2. Veil logged in with its own least-privilege AppRole; tenancy: {keys.tenancy}"
        )
        for tenant in ("acme-metal", "globex-parts"):
            keys.create_tenant(tenant)
        console.print(
            "3. Tenants acme-metal and globex-parts each have their own namespace and key"
        )
        wrapped, digest, path = _store(keys, objects, console)
        _refusals(keys, path, wrapped, console)
        _rotate(keys, path, wrapped, digest, objects, console)
        _sign(keys, settings.data_dir, console)
        _shred(keys, console)
        server.stop()
        config = server.start()
        keys = KeyService.connect(config)
        meta = json.loads((objects / "production.v1.json").read_text())
        restored = _decrypt_file(keys, path, meta["wrapped_key"])
        assert hashlib.sha256(restored).hexdigest() == digest
        console.print(
            "10. Key server restarted (auto-unsealed, no person needed); data still decrypts"
        )
    finally:
        server.stop()
    console.print("[green]Demo finished: the key server was stopped cleanly.")


def _store(keys: KeyService, objects: Path, console: Console) -> tuple[str, str, Path]:
    data = production_csv()
    digest = hashlib.sha256(data).hexdigest()
    objects.mkdir(parents=True, exist_ok=True)
    path = objects / "production.v1.veil"
    t0 = time.perf_counter()
    with open(path, "wb") as dst:
        wrapped = keys.encrypt_stream("acme-metal", "production", 1, io.BytesIO(data), dst)
    elapsed = time.perf_counter() - t0
    (objects / "production.v1.json").write_text(json.dumps({"wrapped_key": wrapped}))
    console.print(
        f"4. acme-metal's production log ({DEMO_ROWS} rows, {len(data) / 2**20:.1f} MiB) "
        f"encrypted to {path.name} in {elapsed * 1000:.0f} ms; only the wrapped data key "
        f"({wrapped[:9]}...) is kept"
    )
    restored = _decrypt_file(keys, path, wrapped)
    assert hashlib.sha256(restored).hexdigest() == digest
    console.print("5. Decrypted with acme-metal's key: SHA-256 matches the original")
    return wrapped, digest, path


def _decrypt_file(keys: KeyService, path: Path, wrapped: str, tenant: str = "acme-metal") -> bytes:
    out = io.BytesIO()
    with open(path, "rb") as src:
        keys.decrypt_stream(tenant, "production", 1, wrapped, src, out)
    return out.getvalue()


def _refusals(keys: KeyService, path: Path, wrapped: str, console: Console) -> None:
    _expect(DecryptionError, lambda: _decrypt_file(keys, path, wrapped, tenant="globex-parts"))
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1
    message = _expect(
        DecryptionError,
        lambda: keys.decrypt_bytes("acme-metal", "production", 1, wrapped, bytes(blob)),
    )
    console.print(
        f"6. Refused: globex-parts' key cannot open it; one flipped bit is detected ({message!r})"
    )


def _rotate(
    keys: KeyService, path: Path, wrapped: str, digest: str, objects: Path, console: Console
) -> None:
    version = keys.rotate_tenant_key("acme-metal")
    (rewrapped,) = keys.rewrap_data_keys("acme-metal", [wrapped])
    (objects / "production.v1.json").write_text(json.dumps({"wrapped_key": rewrapped}))
    keys.retire_key_versions_below("acme-metal", version)
    _expect(DecryptionError, lambda: _decrypt_file(keys, path, wrapped))
    assert hashlib.sha256(_decrypt_file(keys, path, rewrapped)).hexdigest() == digest
    console.print(
        f"7. acme-metal's key rotated to v{version}; data key rewrapped (bulk data "
        "untouched); the old wrapping is now refused"
    )


def _sign(keys: KeyService, data_dir: Path, console: Console) -> None:
    checkpoint = b"veil/audit\n42\nexample-chain-head\n"
    signature = keys.sign(checkpoint).to_text()
    pem_path = data_dir / "audit-signing.pub.pem"
    pem_path.write_text(keys.signing_public_key().to_pem())
    offline_key = SigningPublicKey.from_pem(pem_path.read_text())
    verify_signature(offline_key, checkpoint, signature)
    _expect(InvalidSignature, lambda: verify_signature(offline_key, checkpoint + b"x", signature))
    console.print(
        f"8. Checkpoint signed in the key server; verified offline with {pem_path.name} "
        "alone; an edited checkpoint fails verification"
    )


def _shred(keys: KeyService, console: Console) -> None:
    wrapped, blob = keys.encrypt_bytes("globex-parts", "orders", 1, b"globex order book")
    keys.destroy_tenant("globex-parts")
    _expect(UnknownTenant, lambda: keys.decrypt_bytes("globex-parts", "orders", 1, wrapped, blob))
    keys.create_tenant("globex-parts")  # a new tenant of the same name gets a new key
    _expect(DecryptionError, lambda: keys.decrypt_bytes("globex-parts", "orders", 1, wrapped, blob))
    console.print(
        "9. globex-parts deleted: its namespace is gone and its data cannot be "
        "decrypted, not even after re-creating a tenant of that name"
    )
