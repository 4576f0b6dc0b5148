"""Private set intersection (``keys.psi``): the right intersection or size, and a relay that
reads every message learns no key; the size-only receiver cannot get the keys; a message
that is not this session's, or is damaged, is refused (and what this module cannot detect,
a flip inside the sender's set, is caught by the signature the caller must add)."""

from __future__ import annotations

import hashlib
import random
import statistics
import unicodedata

import private_set_intersection.python as openmined_psi
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys import KeysError, psi
from keys.psi import IntersectionReceiver, PsiError, Sender, SizeReceiver, normalise


def session(
    sender_keys: list[str], receiver_keys: list[str], reveal: bool, sid: str = "job-1"
) -> tuple[frozenset[str] | int, list[bytes]]:
    """One session with the relay in the middle: the result and every message relayed."""
    sender = Sender(sid, sender_keys, reveal_intersection=reveal)
    receiver = (
        IntersectionReceiver(sid, receiver_keys) if reveal else SizeReceiver(sid, receiver_keys)
    )
    request = receiver.request()
    answer = sender.answer(request)
    return receiver.finish(answer), [request, answer]


def expected(sender_keys: list[str], receiver_keys: list[str]) -> frozenset[str]:
    return frozenset(map(normalise, sender_keys)) & frozenset(map(normalise, receiver_keys))


def seeded(seed: object) -> random.Random:
    return random.Random(str(seed))  # noqa: S311 - test data, not secrets


def random_keys(rng: random.Random, n: int) -> list[str]:
    return [f"P-{rng.getrandbits(64):016x}" for _ in range(n)]


# ---------------------------------------------------------------- correctness

CASES = {
    "both empty": (0, 0, 0),
    "sender empty": (0, 50, 0),
    "receiver empty": (50, 0, 0),
    "disjoint": (80, 60, 0),
    "identical": (70, 0, 70),
    "overlapping": (300, 200, 120),
    "one key each, shared": (0, 0, 1),
}


@pytest.mark.parametrize("reveal", [True, False], ids=["reveal", "size"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_intersection_is_right_on_random_sets(case: str, reveal: bool) -> None:
    only_sender, only_receiver, shared = CASES[case]
    rng = seeded(f"{case}-{reveal}")
    common = random_keys(rng, shared)
    sender_keys = common + random_keys(rng, only_sender)
    receiver_keys = common + random_keys(rng, only_receiver)
    rng.shuffle(sender_keys)
    rng.shuffle(receiver_keys)
    result, _ = session(sender_keys, receiver_keys, reveal)
    truth = expected(sender_keys, receiver_keys)
    assert result == (truth if reveal else len(truth))


def test_unicode_keys_meet_whatever_their_form_whitespace_or_repetition() -> None:
    sender_keys = ["零件-001", "Bauteil-Ä", "  阀门 ", "零件-001", "ﬁlter", "Ω-ohm"]
    receiver_keys = [
        unicodedata.normalize("NFD", "Bauteil-Ä"),  # decomposed Ä: same key
        "阀门",
        "零件-001\t",
        "零件-001",
        "fi" + "lter",  # the ligature ﬁ is not NFC-equal to "fi": another key
        "\u2126-ohm",  # OHM SIGN, NFC-equal to GREEK CAPITAL OMEGA
        "零件-002",
    ]
    result, _ = session(sender_keys, receiver_keys, reveal=True)
    assert result == {"Bauteil-Ä", "阀门", "零件-001", "Ω-ohm"}
    size, _ = session(sender_keys, receiver_keys, reveal=False, sid="job-2")
    assert size == 4


def test_duplicates_count_once_and_sizes_are_distinct_keys() -> None:
    sender = Sender("job-1", ["a", "a ", " a", "b"], reveal_intersection=False)
    receiver = SizeReceiver("job-1", ["a", "a", "b", "b", "c"])
    assert (sender.size, receiver.size) == (2, 3)
    assert receiver.finish(sender.answer(receiver.request())) == 2


@pytest.mark.parametrize("bad", [42, None, b"P-1", "", "   "])
def test_a_key_that_is_not_text_or_is_empty_is_refused(bad: object) -> None:
    with pytest.raises(PsiError):
        Sender("job-1", ["a", bad], reveal_intersection=True)  # type: ignore[list-item]


# ---------------------------------------------------------------- what the relay sees


def encodings(key: str, sid: str) -> list[bytes]:
    """Every form of ``key`` a relay could look for without either party's secret."""
    forms = {key, normalise(key), unicodedata.normalize("NFD", key)}
    out: list[bytes] = []
    for text in forms:
        for raw in (text.encode(), text.encode("utf-16-le"), text.encode("utf-16-be")):
            out += [raw, hashlib.sha256(raw).digest(), hashlib.sha256(raw).hexdigest().encode()]
            out += [hashlib.sha256(raw).digest()[:8], hashlib.md5(raw).digest()]  # noqa: S324
        out += psi._hashed(sid, [normalise(text)])  # what the library is given
    return out


def leaks(messages: list[bytes], key: str, sid: str) -> list[bytes]:
    return [form for form in encodings(key, sid) for m in messages if form in m]


def test_no_message_holds_any_form_of_a_key_outside_the_intersection() -> None:
    rng = seeded(3)
    common = random_keys(rng, 40)
    only_sender, only_receiver = random_keys(rng, 150), random_keys(rng, 150)
    only_sender += ["零件-机密-7788", "Geheimteil-Öl-42"]
    for reveal in (True, False):
        _, messages = session(common + only_sender, common + only_receiver, reveal)
        found = {k: leaks(messages, k, "job-1") for k in only_sender + only_receiver}
        assert not any(found.values()), {k: v for k, v in found.items() if v}
        # Nor the shared keys: the relay does not learn the intersection either.
        assert not any(leaks(messages, k, "job-1") for k in common)


def test_the_leak_check_finds_a_key_sent_in_any_of_those_forms() -> None:
    key = "零件-机密-7788"
    for form in encodings(key, "job-1"):
        assert leaks([b"header" + form + b"trailer"], key, "job-1")


def answer_sizes(sender_keys: list[str], receiver_keys: list[str], runs: int) -> list[int]:
    return [
        len(session(sender_keys, receiver_keys, reveal=False, sid=f"s-{i}")[1][1])
        for i in range(runs)
    ]


def test_a_relay_cannot_tell_which_keys_the_sender_holds_outside_the_intersection() -> None:
    rng = seeded(5)
    common, receiver_only = random_keys(rng, 30), random_keys(rng, 70)
    world_a = common + random_keys(rng, 100)
    world_b = common + random_keys(rng, 100)  # other keys outside the intersection, same count
    sizes_a = answer_sizes(world_a, common + receiver_only, 8)
    sizes_b = answer_sizes(world_b, common + receiver_only, 8)
    # The answer's size depends on the set sizes; the GCS coding varies by a byte or two with
    # each session's fresh secret, in both worlds alike.
    spread = max(sizes_a + sizes_b) - min(sizes_a + sizes_b)
    assert spread <= 4, (sizes_a, sizes_b)
    assert abs(statistics.mean(sizes_a) - statistics.mean(sizes_b)) <= 2


def points(request: bytes) -> list[bytes]:
    """The request's elements as the relay can cut them out: 33-byte compressed points."""
    parsed = openmined_psi.Request()
    parsed.ParseFromString(psi._decode(request, b"Q").parts[0])
    return list(parsed.encrypted_elements)


def test_requests_for_the_same_or_other_sets_of_one_size_are_unlinkable_by_content() -> None:
    rng = seeded(9)
    set_a, set_b = random_keys(rng, 200), random_keys(rng, 200)
    request_a1 = SizeReceiver("s-1", set_a).request()
    request_a2 = SizeReceiver("s-2", set_a).request()
    request_b = SizeReceiver("s-3", set_b).request()
    assert len(request_a1) == len(request_a2) == len(request_b)
    pa1, pa2, pb = points(request_a1), points(request_a2), points(request_b)
    assert len(pa1) == 200 and all(len(p) == 33 for p in pa1 + pa2 + pb)
    # The same set twice shares no element: the relay cannot even link a set to itself.
    assert not set(pa1) & set(pa2)
    # Nor any 8-byte run, beyond what chance gives (none, at 2^-64 each).
    runs = {p[i : i + 8] for p in pa1 for i in range(1, 26)}
    assert not any(p[i : i + 8] in runs for p in pa2 + pb for i in range(1, 26))
    # The x-coordinates look uniform in every request (a relay's simplest distinguisher).
    for request_points in (pa1, pa2, pb):
        body = b"".join(p[1:] for p in request_points)
        assert 120 < statistics.mean(body) < 135
        assert 0.35 < sum(p[0] == 2 for p in request_points) / len(request_points) < 0.65


# ---------------------------------------------------------------- size only


def test_the_size_only_receiver_has_no_way_to_the_keys() -> None:
    rng = seeded(11)
    common = random_keys(rng, 100)
    mine = common + random_keys(rng, 100)
    rng.shuffle(mine)
    sender = Sender("job-1", common + random_keys(rng, 100), reveal_intersection=False)
    receiver = SizeReceiver("job-1", mine)
    request = receiver.request()
    answer = sender.answer(request)
    assert receiver.finish(answer) == 100
    assert not hasattr(receiver, "intersection")
    with pytest.raises(PsiError):
        receiver.finish(answer)  # one reading per session
    # Even going round the front door: the library refuses the keys to a size-only client.
    setup, response = (openmined_psi.ServerSetup(), openmined_psi.Response())
    message = psi._decode(answer, b"A")
    setup.ParseFromString(message.parts[0])
    response.ParseFromString(message.parts[1])
    with pytest.raises(RuntimeError):
        receiver._client.GetIntersection(setup, response)
    # And a revealing client with the same secret finds matches only among the sender's
    # sorted points: which positions match says nothing of which of its keys did.
    key = receiver._client.GetPrivateKeyBytes()
    thief = openmined_psi.client.CreateFromKey(key, True)
    guessed = {mine[i] for i in thief.GetIntersection(setup, response)}
    assert len(guessed) == 100
    assert len(guessed & set(common)) < 75  # about 50 by chance; 100 if the order told


# ---------------------------------------------------------------- refused messages


def test_a_request_of_another_session_or_mode_or_a_second_request_is_refused() -> None:
    request = SizeReceiver("job-1", ["a", "b"]).request()
    with pytest.raises(PsiError):
        Sender("job-2", ["a"], reveal_intersection=False).answer(request)
    with pytest.raises(PsiError):
        Sender("job-1", ["a"], reveal_intersection=True).answer(request)
    sender = Sender("job-1", ["a"], reveal_intersection=False)
    sender.answer(request)
    with pytest.raises(PsiError):
        sender.answer(request)  # one answer: no second set of keys to test
    with pytest.raises(PsiError):
        Sender("job-1", ["a"], reveal_intersection=False, max_receiver_keys=1).answer(request)


def test_an_answer_to_another_request_or_session_is_refused() -> None:
    first, second = IntersectionReceiver("job-1", ["a"]), IntersectionReceiver("job-1", ["a"])
    answer = Sender("job-1", ["a"], reveal_intersection=True).answer(first.request())
    second.request()
    with pytest.raises(PsiError):
        second.finish(answer)  # same session and keys, but not its request
    other = IntersectionReceiver("job-2", ["a"])
    other.request()
    with pytest.raises(PsiError):
        other.finish(answer)
    with pytest.raises(PsiError):
        SizeReceiver("job-1", ["a"]).finish(answer)  # before its request


def flips(message: bytes, positions: list[int]) -> list[bytes]:
    return [message[:i] + bytes([message[i] ^ 0x01]) + message[i + 1 :] for i in positions]


def test_a_damaged_header_length_or_point_is_refused_with_one_error() -> None:
    receiver = IntersectionReceiver("job-1", [f"k{i}" for i in range(20)])
    request = receiver.request()
    sender_keys = [f"k{i}" for i in range(10, 40)]
    header = list(range(0, 30))
    for bad in [*flips(request, header), request[:-1], request + b"\0", b"", b"veil-psi-1\n"]:
        with pytest.raises(PsiError):
            Sender("job-1", sender_keys, reveal_intersection=True).answer(bad)
    # A point's first byte says which of two points it is (02 or 03): 06 is none.
    at = request.index(b"\x12\x21") + 2  # field 2 (the points), 33 bytes
    broken = request[:at] + b"\x06" + request[at + 1 :]
    with pytest.raises(PsiError):
        Sender("job-1", sender_keys, reveal_intersection=True).answer(broken)

    answer = Sender("job-1", sender_keys, reveal_intersection=True).answer(request)
    # The header, the request's digest and the first part's length (the parts' own bytes
    # are the library's, below).
    for bad in [*flips(answer, list(range(0, 60))), answer[:-1], answer + b"\0"]:
        fresh = IntersectionReceiver("job-1", [])
        fresh._request = request  # as if it had sent that request
        with pytest.raises(PsiError):
            fresh.finish(bad)
    assert issubclass(PsiError, KeysError)


def test_a_flip_inside_the_senders_set_is_not_detected_here_so_callers_sign() -> None:
    """The documented gap: the GCS carries no integrity of its own, so a bit flipped in it
    gives a wrong answer, not an error.  The caller's signature over the exact message
    bytes is what refuses it."""
    mine = [f"k{i}" for i in range(50)]
    receiver = IntersectionReceiver("job-1", mine)
    request = receiver.request()
    answer = Sender("job-1", mine[:25], reveal_intersection=True).answer(request)
    setup_length = len(psi._decode(answer, b"A").parts[0])
    response_length = len(psi._decode(answer, b"A").parts[1])
    middle = len(answer) - response_length - 8 - setup_length // 2  # inside the GCS bits
    damaged = answer[:middle] + bytes([answer[middle] ^ 0x10]) + answer[middle + 1 :]
    signing = Ed25519PrivateKey.generate()
    signature = signing.sign(answer)
    with pytest.raises(InvalidSignature):
        signing.public_key().verify(signature, damaged)  # the caller's check refuses it
    assert receiver.finish(damaged) != frozenset(mine[:25])  # this module alone would not


def test_sets_too_large_for_the_librarys_64_bit_hash_range_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(psi, "MAX_KEYS_PRODUCT", 99)
    receiver = SizeReceiver("job-1", [f"k{i}" for i in range(10)])
    with pytest.raises(PsiError):
        Sender("job-1", ["a"], reveal_intersection=False).answer(receiver.request())
    assert psi.FPR * 2**63 > psi.MAX_KEYS_PRODUCT  # the real bound keeps hash_range < 2^63


def test_session_ids_are_checked() -> None:
    for bad in ["", "a\nb", "x" * 201]:
        with pytest.raises(PsiError):
            SizeReceiver(bad, ["a"])
