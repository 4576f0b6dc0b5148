"""Secure aggregation (``keys.secure_sum``): the aggregator gets the survivors' sum and no
single input, whoever drops out, and honest parties refuse what would unmask one input."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from keys.secure_sum import (
    Advert,
    Party,
    SealedShares,
    SecureSumError,
    Vector,
    combine,
    decode,
    encode,
    split,
    summed_again,
    unmasked_sum,
)

ROUND = "round-1"


def run_round(
    inputs: dict[str, Vector],
    threshold: int,
    drop_before_input: frozenset[str] = frozenset(),
    drop_before_shares: frozenset[str] = frozenset(),
) -> tuple[Vector, dict[str, Vector], dict[str, Party]]:
    """One round with the aggregator relaying; the sum and the masked inputs it saw."""
    parties = {name: Party(name, ROUND, threshold) for name in inputs}
    adverts = {name: p.advertise() for name, p in parties.items()}
    inbox: dict[str, list[SealedShares]] = {name: [] for name in parties}
    sharers = [n for n in parties if n not in drop_before_shares]
    for name in sharers:
        for sealed in parties[name].share_keys(adverts.values()):
            inbox[sealed.recipient].append(sealed)
    survivors = [n for n in sharers if n not in drop_before_input]
    masked = {n: parties[n].masked_input(inputs[n], inbox[n]) for n in survivors}
    gone = [n for n in sharers if n not in survivors]
    reveals = [parties[n].unmask(survivors, gone) for n in survivors]
    total = unmasked_sum(ROUND, threshold, adverts, sharers, masked, reveals)
    return total, masked, parties


def vectors(names: list[str], length: int = 6) -> dict[str, Vector]:
    rng = np.random.default_rng(7)
    return {n: rng.integers(0, 2**40, size=length, dtype=np.uint64) for n in names}


NAMES = ["ent_a", "ent_b", "ent_c", "ent_d", "ent_e", "ent_f"]


def test_the_sum_is_exact_and_no_masked_input_is_its_input() -> None:
    inputs = vectors(NAMES)
    total, masked, _ = run_round(inputs, threshold=4)
    assert np.array_equal(total, sum(inputs.values()))
    for name in NAMES:  # each input travels masked: not it, nowhere near it
        assert not np.any(masked[name] == inputs[name])


def test_parties_dropping_out_leave_the_sum_of_the_others() -> None:
    inputs = vectors(NAMES)
    total, _, _ = run_round(inputs, threshold=4, drop_before_input=frozenset({"ent_c"}),
                            drop_before_shares=frozenset({"ent_f"}))  # fmt: skip
    expected = sum(v for n, v in inputs.items() if n not in {"ent_c", "ent_f"})
    assert np.array_equal(total, expected)


def test_too_few_survivors_are_never_unmasked() -> None:
    with pytest.raises(SecureSumError, match="too few"):
        run_round(vectors(NAMES), threshold=4,
                  drop_before_input=frozenset({"ent_a", "ent_b", "ent_c"}))  # fmt: skip


def test_an_aggregator_asking_for_both_secrets_of_one_party_is_refused() -> None:
    """With a survivor's self-mask seed *and* its pairwise key the aggregator could strip
    every mask off that one input: an honest party answers once, one way per party."""
    inputs = vectors(NAMES)
    parties = {name: Party(name, ROUND, 4) for name in NAMES}
    adverts = {name: p.advertise() for name, p in parties.items()}
    inbox: dict[str, list[SealedShares]] = {name: [] for name in NAMES}
    for p in parties.values():
        for sealed in p.share_keys(adverts.values()):
            inbox[sealed.recipient].append(sealed)
    for name in NAMES:
        parties[name].masked_input(inputs[name], inbox[name])
    # Told "ent_a survived" by one request and "ent_a dropped" by another: refused.
    parties["ent_b"].unmask(NAMES, [])
    with pytest.raises(SecureSumError, match="answered"):
        parties["ent_b"].unmask([n for n in NAMES if n != "ent_a"], ["ent_a"])
    # One request naming ent_a both ways, or leaving a sharer out: refused.
    with pytest.raises(SecureSumError):
        parties["ent_c"].unmask(NAMES, ["ent_a"])
    with pytest.raises(SecureSumError):
        parties["ent_c"].unmask(NAMES[1:], [])


def test_shares_are_sealed_for_their_recipient_and_round() -> None:
    parties = {name: Party(name, ROUND, 4) for name in NAMES}
    adverts = [p.advertise() for p in parties.values()]
    sealed = next(s for s in parties["ent_a"].share_keys(adverts) if s.recipient == "ent_b")
    # Opened by another party, or changed on the way: refused.
    stolen = SealedShares("ent_a", "ent_c", sealed.nonce, sealed.ciphertext)
    other = Party("ent_c", ROUND, 4)
    other.share_keys([*adverts[:2], other.advertise(), *adverts[3:]])
    with pytest.raises(SecureSumError, match="do not open"):
        other.masked_input(np.zeros(3, dtype=np.uint64), [stolen])
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    parties["ent_b"].share_keys(adverts)
    tampered = SealedShares("ent_a", "ent_b", sealed.nonce, flipped)
    with pytest.raises(SecureSumError, match="do not open"):
        parties["ent_b"].masked_input(np.zeros(3, dtype=np.uint64), [tampered])


def test_a_threshold_of_half_or_less_is_refused() -> None:
    parties = [Party(name, ROUND, 3) for name in NAMES]
    with pytest.raises(SecureSumError, match="more than half"):
        parties[0].share_keys([p.advertise() for p in parties])


def test_shamir_needs_the_threshold() -> None:
    secret = secrets.token_bytes(32)
    shares = split(secret, [1, 2, 3, 4, 5], 3)
    assert combine({x: shares[x] for x in (1, 3, 5)}) == secret
    try:  # two shares of a 3-of-5 sharing: another point, almost surely outside 32 bytes
        fewer = combine({x: shares[x] for x in (2, 4)})
    except SecureSumError:
        fewer = b""
    assert fewer != secret


def test_fixed_point_sums_of_signed_reals() -> None:
    values = {n: encode([1.25, -3.5], 1000.0) for n in NAMES[:5]}
    total, _, _ = run_round(values, threshold=3)
    assert decode(total, 1000.0) == [6.25, -17.5]


def test_adverts_bind_the_round_and_the_keys() -> None:
    advert = Party("ent_a", ROUND, 4).advertise()
    assert advert.signed_bytes(ROUND) != advert.signed_bytes("round-2")
    swapped = Advert(advert.party, advert.s_public, advert.c_public)
    assert swapped.signed_bytes(ROUND) != advert.signed_bytes(ROUND)


def test_a_further_vector_opens_only_in_the_survivors_sum() -> None:
    """After the unmask, each survivor's further vector (e.g. its dominance vetoes) is
    hidden by pairwise masks the aggregator cannot rebuild; their sum is exact, and a
    missing survivor leaves the masks in (refused)."""
    inputs = vectors(NAMES)
    _, _, parties = run_round(inputs, threshold=4, drop_before_input=frozenset({"ent_f"}))
    survivors = NAMES[:5]
    flags = {n: np.array([i % 2, 1, 0], dtype=np.uint64) for i, n in enumerate(survivors)}
    again = {n: parties[n].masked_again(flags[n], "veto") for n in survivors}
    assert np.array_equal(summed_again(survivors, again), sum(flags.values()))
    for n in survivors:
        assert not np.array_equal(again[n], flags[n])
        assert int(again[n].max()) > 2**40  # uniform-looking, not a small flag vector
    partial = {n: again[n] for n in survivors[:4]}
    with pytest.raises(SecureSumError, match="every survivor"):
        summed_again(survivors, partial)
    # The sum of all but one is not that party's complement: the masks stay in.
    assert not np.array_equal(sum(partial.values()), sum(flags[n] for n in survivors[:4]))
    with pytest.raises(SecureSumError, match="label of its own"):
        parties["ent_a"].masked_again(flags["ent_a"], "veto")
    with pytest.raises(SecureSumError, match="after this party's unmask"):
        Party("ent_z", ROUND, 4).masked_again(flags["ent_a"], "veto")


def test_keys_agreed_with_one_set_of_adverts_are_not_reused_for_another() -> None:
    """A party derives each channel and mask key once per set of adverts: given new adverts
    (a party's keys replaced), it seals to the new keys, never to keys cached before."""
    parties = {n: Party(n, ROUND, 3) for n in NAMES[:4]}
    first = {n: p.advertise() for n, p in parties.items()}
    parties["ent_a"].share_keys(first.values())  # keys agreed with the first ent_b
    replaced = Party("ent_b", ROUND, 3)
    second = {**first, "ent_b": replaced.advertise()}
    inbox = [
        s
        for sender in ("ent_a", "ent_c")
        for s in parties[sender].share_keys(second.values())
        if s.recipient == "ent_b"
    ]
    replaced.share_keys(second.values())
    replaced.masked_input(np.zeros(2, dtype=np.uint64), inbox)  # both open for the new keys
    parties["ent_b"].share_keys(first.values())
    with pytest.raises(SecureSumError, match="from ent_a do not open"):
        parties["ent_b"].masked_input(np.zeros(2, dtype=np.uint64), inbox)
