"""SM2 signatures under the gm crypto profile: made with a key kept in the key server,
verified offline, one sequence of key versions with Ed25519, and refused when relabelled."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from keys import (
    CryptoProfile,
    InvalidSignature,
    KeyServerConfig,
    KeyServerMisconfigured,
    KeyServerUnavailable,
    KeyService,
    LocalKeyServer,
    Signature,
    SigningPublicKey,
    Tenancy,
    bao,
    platform_policy,
    verify_signature,
)
from keys.bao import hcl_string
from keys.gm import Sm2PrivateKey
from keys.signing import SM2, public_keys_from_pem
from keys.tenancy import PLATFORM_GM_MOUNT
from tests.conftest import DevServer

MESSAGE = b"veil/audit\n2048\nq1w2e3r4t5y6\n"
GM = CryptoProfile.GM
BEGIN, END = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"


def _sm2_pair(version: int = 2) -> tuple[Sm2PrivateKey, SigningPublicKey]:
    key = Sm2PrivateKey.generate()
    return key, SigningPublicKey(version, key.public_key().raw, SM2)


@pytest.mark.integration
def test_gm_signs_with_sm2_after_ed25519_and_both_verify(own_key_server: LocalKeyServer) -> None:
    config = own_key_server.config()
    standard = KeyService.connect(config)
    before = standard.sign(MESSAGE)
    assert (before.algorithm, before.key_version) == ("ed25519", 1)

    gm = KeyService.connect(config, profile=GM)
    signature = gm.sign(MESSAGE)
    assert (signature.algorithm, signature.key_version) == (SM2, 2)  # one sequence
    assert signature.to_text().startswith("veil-sm2:v2:")
    assert gm.sign(b"another").key_version == 2  # the same key, read again
    assert gm.signing_public_key().algorithm == SM2

    pem = "".join(k.to_pem() for k in gm.signing_public_keys())
    # From here on nothing touches the key server.
    public_keys = public_keys_from_pem(pem)
    assert [(k.key_version, k.algorithm) for k in public_keys.values()] == [
        (1, "ed25519"),
        (2, SM2),
    ]
    for made in (before, signature):
        text = made.to_text()
        parsed = Signature.from_text(text)
        verify_signature(public_keys[parsed.key_version], MESSAGE, text)
        with pytest.raises(InvalidSignature):
            verify_signature(public_keys[parsed.key_version], MESSAGE + b"x", text)
    # A standard Veil reading the same server still verifies both.
    assert [k.algorithm for k in standard.signing_public_keys()] == ["ed25519", SM2]

    # Switching back is refused, with what to do.
    with pytest.raises(KeyServerMisconfigured, match="VEIL_CRYPTO_PROFILE=gm"):
        KeyService.connect(config)

    own_key_server.stop()  # fail closed: no key server, no signature
    with pytest.raises(KeyServerUnavailable):
        gm.sign(MESSAGE)


def _policy_before_gm() -> str:
    """The platform policy as it was before the gm profile existed."""
    return "".join(
        line
        for line in platform_policy(Tenancy.NAMESPACE).splitlines(keepends=True)
        if PLATFORM_GM_MOUNT not in line
    )


@pytest.mark.integration
def test_an_embedded_server_initialised_before_the_gm_profile_is_named(
    tmp_path: Path, bao_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = hcl_string(platform_policy(Tenancy.NAMESPACE))
    assert new in bao.VEIL_INITIALIZE
    monkeypatch.setattr(
        bao, "VEIL_INITIALIZE", bao.VEIL_INITIALIZE.replace(new, hcl_string(_policy_before_gm()))
    )
    server = LocalKeyServer(tmp_path / "bao", bao_binary=bao_binary)
    server.start()
    try:
        KeyService.connect(server.config()).sign(MESSAGE)  # standard does not need it
        with pytest.raises(KeyServerMisconfigured) as info:
            KeyService.connect(server.config(), profile=GM)
    finally:
        server.stop()
    message = str(info.value)
    assert "'read' on 'veil-platform-gm/data/sm2-signing'" in message
    assert "'update' on 'veil-platform-gm/metadata/sm2-signing'" in message
    assert "veil keys policy" in message and "embedded key server" in message


@pytest.mark.integration
def test_a_transit_key_rotated_onto_the_sm2_version_is_refused(dev_server: DevServer) -> None:
    root = dev_server.root()
    gm = KeyService.connect(KeyServerConfig(addr=dev_server.addr, token="test-root"), profile=GM)
    assert gm.sign(MESSAGE).key_version == 2
    root.secrets.transit.rotate_key("audit-signing", mount_point="veil-platform")  # v2 too
    with pytest.raises(KeyServerMisconfigured, match="both claim signing key version 2"):
        gm.signing_public_keys()


def test_sm2_signature_text_round_trip_and_pem() -> None:
    key, public = _sm2_pair()
    signature = Signature(2, key.sign(MESSAGE), SM2)
    assert Signature.from_text(signature.to_text()) == signature
    assert SigningPublicKey.from_pem(public.to_pem()) == public
    verify_signature(public, MESSAGE, signature.to_text())


def test_signatures_of_the_other_algorithm_or_version_are_refused() -> None:
    key, public = _sm2_pair()
    signature = Signature(2, key.sign(MESSAGE), SM2)
    relabelled = dataclasses.replace(signature, algorithm="ed25519")
    with pytest.raises(InvalidSignature):
        verify_signature(public, MESSAGE, relabelled)
    with pytest.raises(InvalidSignature):  # the same relabelling, as text
        verify_signature(public, MESSAGE, signature.to_text().replace("veil-sm2", "veil-ed25519"))
    with pytest.raises(InvalidSignature):
        verify_signature(public, MESSAGE, dataclasses.replace(signature, key_version=3))
    ed_key = SigningPublicKey(2, bytes(32))  # an Ed25519 key of the same version
    with pytest.raises(InvalidSignature):
        verify_signature(ed_key, MESSAGE, signature)
    with pytest.raises(InvalidSignature):  # an Ed25519 signature against the SM2 key
        verify_signature(public, MESSAGE, Signature(2, bytes(64)))


@pytest.mark.parametrize("cut", [1, 2, 10])
def test_truncated_or_padded_der_is_refused(cut: int) -> None:
    key, public = _sm2_pair()
    value = key.sign(MESSAGE)
    for damaged in (value[:-cut], value + b"\x00" * cut):
        text = f"veil-sm2:v2:{base64.b64encode(damaged).decode()}"
        with pytest.raises(InvalidSignature):
            Signature.from_text(text)
        with pytest.raises(InvalidSignature):
            verify_signature(public, MESSAGE, Signature(2, damaged, SM2))


def test_mixed_pem_files_and_bad_sm2_keys() -> None:
    _, sm2 = _sm2_pair(2)
    ed = SigningPublicKey(1, bytes(range(32)))
    keys = public_keys_from_pem(ed.to_pem() + sm2.to_pem())
    assert keys == {1: ed, 2: sm2}
    with pytest.raises(ValueError, match="appears twice"):
        public_keys_from_pem(sm2.to_pem() + dataclasses.replace(ed, key_version=2).to_pem())
    der = base64.b64decode("".join(sm2.to_pem().splitlines()[2:-1]))
    off_curve = der[:-1] + bytes([der[-1] ^ 1])
    p256 = der.replace(bytes.fromhex("2a811ccf5501822d"), bytes.fromhex("2a8648ce3d030107"))
    for bad in (der[:-1], der + b"\x00", off_curve, p256):
        body = base64.b64encode(bad).decode()
        text = f"# veil-sm2 key version 2\n{BEGIN}\n{body}\n{END}\n"
        with pytest.raises(ValueError, match="not a Veil signing key"):
            SigningPublicKey.from_pem(text)
