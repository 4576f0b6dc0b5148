"""Benchmark of the key layer: streaming format vs raw AES-GCM, and data-key round trips.

Run alone with ``.venv/bin/python bench/keys_bench.py [--mib 256] [--seconds 3]``
or with everything else through ``make bench``.  Starts its own embedded
OpenBao in a temporary directory and stops it at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import REPEATS, Row, interleaved, row, series_row
from keys import KeyService, LocalKeyServer


class Discard(io.RawIOBase):
    """A sink that only counts bytes, like /dev/null, so the figure is the format's own cost."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = len(b)
        self.count += n
        return n


class Generated(io.RawIOBase):
    """A source of ``size`` bytes produced on demand, never held in memory at once."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = os.urandom(1 << 16)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self.block), self.left)
        buffer[:n] = self.block[:n]
        self.left -= n
        return n


def peak_mib(action: Callable[[], object]) -> float:
    """Peak Python heap growth (tracemalloc) while ``action`` runs, in MiB."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def seconds_of(action: Callable[[], object]) -> float:
    """Wall time of one run of ``action`` (seconds)."""
    t0 = time.perf_counter()
    action()
    return time.perf_counter() - t0


def rate(seconds: float, action: Callable[[], object]) -> float:
    """Calls of ``action`` per second over about ``seconds``."""
    count = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        action()
        count += 1
    return count / elapsed


def run(
    mib: int = 256, seconds: float = 3.0, repeats: int = REPEATS, quick: bool = False
) -> list[Row]:
    if quick:
        mib, seconds = 32, 0.5
    size = mib << 20
    buf = os.urandom(size)
    key, nonce, aad = os.urandom(32), os.urandom(12), b"tenant|object|1"
    raw = AESGCM(key)
    raw_ct = raw.encrypt(nonce, buf, aad)

    with tempfile.TemporaryDirectory(prefix="veil-bench-") as home:
        server = LocalKeyServer(Path(home) / "bao")
        try:
            keys = KeyService.connect(server.start())
            keys.create_tenant("bench")
            sealed = io.BytesIO()
            wrapped = keys.encrypt_stream("bench", "obj", 1, io.BytesIO(buf), sealed)
            blob = sealed.getvalue()
            del sealed
            # Each side's MiB/s, taking turns: Veil's stream, raw AES-GCM, Veil's, ...
            enc, raw_enc, dec, raw_dec = interleaved(
                repeats,
                lambda: (
                    mib
                    / seconds_of(
                        lambda: keys.encrypt_stream("bench", "obj", 1, io.BytesIO(buf), Discard())
                    )
                ),
                lambda: mib / seconds_of(lambda: raw.encrypt(nonce, buf, aad)),
                lambda: (
                    mib
                    / seconds_of(
                        lambda: keys.decrypt_stream(
                            "bench", "obj", 1, wrapped, io.BytesIO(blob), Discard()
                        )
                    )
                ),
                lambda: mib / seconds_of(lambda: raw.decrypt(nonce, raw_ct, aad)),
            )
            peak = peak_mib(
                lambda: keys.encrypt_stream("bench", "obj", 1, Generated(size), Discard())
            )
            raw_peak = peak_mib(lambda: raw.encrypt(nonce, buf, aad))
            issue = rate(seconds, lambda: keys.encrypt_bytes("bench", "o", 1, b""))
            unwrap = rate(
                seconds,
                lambda: keys.decrypt_bytes(
                    "bench", "o", 1, *keys.encrypt_bytes("bench", "o", 1, b"")
                ),
            )
        finally:
            server.stop()

    at_least = lambda _median, ratio: ratio is not None and ratio >= 0.8  # noqa: E731
    return [
        series_row(
            f"stream encrypt {mib} MiB", enc, raw_enc, "MiB/s", ">= 0.8x raw AESGCM", at_least
        ),
        series_row(
            f"stream decrypt {mib} MiB", dec, raw_dec, "MiB/s", ">= 0.8x raw AESGCM", at_least
        ),
        row(
            f"stream encrypt {mib} MiB, peak heap",
            peak,
            raw_peak,
            "MiB",
            "constant (a few chunks)",
            peak < 8,
        ),
        row("data key issued (empty object sealed)", issue, None, "ops/s", "report", None),
        row("data key round trip (issue + unwrap)", unwrap, None, "round trips/s", "report", None),
    ]


def main() -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--quick", action="store_true", help="32 MiB, 0.5 s rates")
    args = parser.parse_args()
    rows = run(args.mib, args.seconds, args.repeats, quick=args.quick)
    from bench.report import print_rows

    print_rows(rows)
    return rows


if __name__ == "__main__":
    main()
