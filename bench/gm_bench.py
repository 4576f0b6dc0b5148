"""Benchmark of the national-cryptography primitives (issue 23) against Veil's standard ones.

Three pairs, each measured on the same input, interleaved (standard, national,
standard, national, ...) ``--repeats`` times so that a shared machine's load
falls on both alike; a row gives the median, the item text the min-max:

* the streaming format: SM4-GCM (format 2) vs AES-256-GCM (format 1), encrypt
  and decrypt of ``--mib`` MiB held in memory, to a discarding sink (goal:
  SM4-GCM >= 200 MiB/s); and SM4-GCM as Veil runs it (past 4 MiB on worker
  processes, ``keys._parallel``) vs the serial loop alone (before those workers), on
  the same bytes, the three interleaved;
* the audit chain's hash step: ``sm3_chain_hash`` vs ``policies.audit.chain_hash``
  over the same canonical event bytes (events/s);
* signatures: SM2 (gmssl-pyx) vs Ed25519 (cryptography, a local key; Veil's own
  Ed25519 key signs inside the key server), sign and verify (ops/s).

Run alone with ``nice .venv/bin/python bench/gm_bench.py [--mib 64] [--repeats 5]
[--only streams]``.
Needs no key server.  It prints the load average before and after: on a shared
machine the worker processes' gain depends on the cores others leave free.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.keys_bench import Discard
from bench.report import Row, interleaved, series_row
from keys._stream import decrypt_stream, decrypt_with, encrypt_stream, encrypt_with, object_context
from keys.gm import Sm2PrivateKey, decrypt_stream_sm4, encrypt_stream_sm4, sm3_chain_hash
from keys.gm._sm4_stream import SM4GCM_STREAM
from policies.audit import chain_hash, checkpoint_body, encode_canonical

Measure = Callable[[], float]


def _seconds(action: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    action()
    return time.perf_counter() - t0


def _per_second(seconds: float, action: Callable[[], object]) -> float:
    count = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        action()
        count += 1
    return count / elapsed


def _row(item: str, unit: str, national: list[float], standard: list[float], goal: str,
         met: bool | None) -> Row:  # fmt: skip
    result = series_row(item, national, standard, unit, goal, None)
    result["met"] = met
    return result


def stream_rows(mib: int, repeats: int) -> list[Row]:
    buf = os.urandom(mib << 20)
    context = object_context("bench", "obj", 1)
    aes_key, sm4_key = os.urandom(32), os.urandom(16)
    aes_blob, sm4_blob = io.BytesIO(), io.BytesIO()
    encrypt_stream(aes_key, context, io.BytesIO(buf), aes_blob)
    encrypt_stream_sm4(sm4_key, context, io.BytesIO(buf), sm4_blob)
    aes_sealed, sm4_sealed = aes_blob.getvalue(), sm4_blob.getvalue()
    del aes_blob, sm4_blob

    def enc(fn: Callable[..., int], key: bytes) -> Measure:
        return lambda: mib / _seconds(lambda: fn(key, context, io.BytesIO(buf), Discard()))

    def dec(fn: Callable[..., int], key: bytes, blob: bytes) -> Measure:
        return lambda: mib / _seconds(lambda: fn(key, context, io.BytesIO(blob), Discard()))

    serial = replace(SM4GCM_STREAM, parallel_above=None)  # the reference loop, one core

    def serial_enc(key: bytes, ctx: bytes, src: io.BytesIO, dst: Discard) -> int:
        return encrypt_with(serial, key, ctx, src, dst)

    def serial_dec(key: bytes, ctx: bytes, src: io.BytesIO, dst: Discard) -> int:
        return decrypt_with(serial, key, ctx, src, dst)

    aes_e, sm4_e, one_e = interleaved(
        repeats,
        enc(encrypt_stream, aes_key),
        enc(encrypt_stream_sm4, sm4_key),
        enc(serial_enc, sm4_key),
    )
    aes_d, sm4_d, one_d = interleaved(
        repeats,
        dec(decrypt_stream, aes_key, aes_sealed),
        dec(decrypt_stream_sm4, sm4_key, sm4_sealed),
        dec(serial_dec, sm4_key, sm4_sealed),
    )
    goal = ">= 200 MiB/s (SM4-GCM)"
    return [
        _row(f"SM4-GCM vs AES-GCM stream encrypt {mib} MiB", "MiB/s", sm4_e, aes_e, goal,
             statistics.median(sm4_e) >= 200),
        _row(f"SM4-GCM vs AES-GCM stream decrypt {mib} MiB", "MiB/s", sm4_d, aes_d, goal,
             statistics.median(sm4_d) >= 200),
        _row(f"SM4-GCM with workers vs serial loop, encrypt {mib} MiB", "MiB/s", sm4_e, one_e,
             "report", None),
        _row(f"SM4-GCM with workers vs serial loop, decrypt {mib} MiB", "MiB/s", sm4_d, one_d,
             "report", None),
    ]  # fmt: skip


def chain_rows(events: int, repeats: int) -> list[Row]:
    canonical = [
        encode_canonical(
            {
                "seq": n,
                "at": f"2026-12-05T13:{n % 60:02d}:00.000000+00:00",
                "action": "job.released",
                "actor": "analyst@acme",
                "tenant": "acme",
                "outcome": "ok",
                "details": {"job": f"job-{n:08d}", "epsilon": "0.25", "rows": 12_345 + n},
            }
        ).encode()
        for n in range(events)
    ]

    def chain(step: Callable[[str, bytes], str]) -> Measure:
        def measure() -> float:
            def walk() -> None:
                head = "00" * 32
                for event in canonical:
                    head = step(head, event)

            return events / _seconds(walk)

        return measure

    sha, sm3 = interleaved(repeats, chain(chain_hash), chain(sm3_chain_hash))
    size = statistics.mean(len(c) for c in canonical)
    return [
        _row(f"SM3 vs SHA-256 audit chain, {events:,} events of ~{size:.0f} B", "events/s",
             sm3, sha, "report", None),
    ]  # fmt: skip


def signature_rows(seconds: float, repeats: int) -> list[Row]:
    message = checkpoint_body(123_456, "ab" * 32)
    ed, sm2 = Ed25519PrivateKey.generate(), Sm2PrivateKey.generate()
    ed_pub, sm2_pub = ed.public_key(), sm2.public_key()
    ed_sig, sm2_sig = ed.sign(message), sm2.sign(message)
    ed_s, sm2_s = interleaved(
        repeats,
        lambda: _per_second(seconds, lambda: ed.sign(message)),
        lambda: _per_second(seconds, lambda: sm2.sign(message)),
    )
    ed_v, sm2_v = interleaved(
        repeats,
        lambda: _per_second(seconds, lambda: ed_pub.verify(ed_sig, message)),
        lambda: _per_second(seconds, lambda: sm2_pub.verify(sm2_sig, message)),
    )
    return [
        _row("SM2 vs Ed25519 sign", "ops/s", sm2_s, ed_s, "report", None),
        _row("SM2 vs Ed25519 verify", "ops/s", sm2_v, ed_v, "report", None),
    ]


def run(
    mib: int = 64,
    repeats: int = 5,
    events: int = 20_000,
    seconds: float = 1.0,
    only: str | None = None,
    quick: bool = False,
) -> list[Row]:
    if quick:
        mib, events, seconds = 16, 5_000, 0.3
    parts = {
        "streams": lambda: stream_rows(mib, repeats),
        "chain": lambda: chain_rows(events, repeats),
        "signatures": lambda: signature_rows(seconds, repeats),
    }
    return [r for name, rows in parts.items() if only in (None, name) for r in rows()]


def main() -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=1.0, help="per signature measurement")
    parser.add_argument("--only", choices=["streams", "chain", "signatures"], help="one pair")
    parser.add_argument("--quick", action="store_true", help="16 MiB, 5 000 events, 0.3 s")
    args = parser.parse_args()
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    rows = run(args.mib, args.repeats, args.events, args.seconds, args.only, quick=args.quick)
    print("load average after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    from bench.report import print_rows

    print_rows(rows)
    return rows


if __name__ == "__main__":
    main()
