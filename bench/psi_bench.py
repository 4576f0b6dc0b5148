"""Benchmark of private set intersection: Veil's ``keys.psi`` session against the library's.

One session, both sides in this process: the receiver's request, the sender's answer (setup
and response), the receiver's result, every message serialised to bytes as it would be
relayed.  Veil's side adds key normalisation, deduplication, session-bound hashing and the
message envelope and checks.  The baseline is ``openmined-psi``'s own Python API on the same
keys with the same parameters (GCS, ``keys.psi.FPR``), messages serialised too.  Runs are
interleaved (Veil, library, Veil, library, ...) so that load on a shared machine hits both.

Run alone with ``.venv/bin/python bench/psi_bench.py [--sizes 100000 1000000] [--repeats 5]``
or ``--quick`` (10 000 keys a side, 3 repeats); ``make bench`` runs ``run()``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import private_set_intersection.python as openmined_psi

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import REPEATS, Row, print_rows, series_row
from keys import psi


def key_sets(n: int) -> tuple[list[str], list[str]]:
    """Two sets of ``n`` part numbers each, half of them shared."""
    sender = [f"PN-{i:010d}" for i in range(n)]
    receiver = [f"PN-{i:010d}" for i in range(n // 2, n + n // 2)]
    return sender, receiver


def veil_session(sender_keys: list[str], receiver_keys: list[str], sid: str) -> int:
    sender = psi.Sender(sid, sender_keys, reveal_intersection=True)
    receiver = psi.IntersectionReceiver(sid, receiver_keys)
    return len(receiver.finish(sender.answer(receiver.request())))


def library_session(sender_keys: list[str], receiver_keys: list[str]) -> int:
    client = openmined_psi.client.CreateWithNewKey(True)
    server = openmined_psi.server.CreateWithNewKey(True)
    request_bytes = client.CreateRequest(receiver_keys).SerializeToString()
    request = openmined_psi.Request()
    request.ParseFromString(request_bytes)
    setup_bytes = server.CreateSetupMessage(
        psi.FPR, len(receiver_keys), sender_keys, openmined_psi.DataStructure.GCS
    ).SerializeToString()
    response_bytes = server.ProcessRequest(request).SerializeToString()
    setup, response = openmined_psi.ServerSetup(), openmined_psi.Response()
    setup.ParseFromString(setup_bytes)
    response.ParseFromString(response_bytes)
    return len(client.GetIntersection(setup, response))


def timed(sessions: list[float], session: object, *args: object) -> None:
    t0 = time.perf_counter()
    session(*args)  # type: ignore[operator]
    sessions.append(time.perf_counter() - t0)


def run(sizes: list[int] | None = None, repeats: int = REPEATS, quick: bool = False) -> list[Row]:
    if quick:
        sizes = [10_000]
    rows = []
    for n in sizes or [100_000, 1_000_000]:
        sender_keys, receiver_keys = key_sets(n)
        veil: list[float] = []
        library: list[float] = []
        for i in range(repeats):
            timed(veil, veil_session, sender_keys, receiver_keys, f"b-{i}")
            timed(library, library_session, sender_keys, receiver_keys)
            print(f"  {n:,} keys, round {i + 1}: veil {veil[-1]:.2f} s, "
                  f"library {library[-1]:.2f} s", file=sys.stderr, flush=True)  # fmt: skip
        assert veil_session(*key_sets(1000), "check") == library_session(*key_sets(1000)) == 500
        item = f"PSI {n:,} x {n:,} keys, reveal"
        within = lambda _median, ratio: ratio is not None and ratio <= 1.5  # noqa: E731
        rows.append(series_row(item, veil, library, "s", "<= 1.5x openmined-psi", within))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--quick", action="store_true", help="10 000 keys a side")
    args = parser.parse_args()
    print_rows(run(args.sizes, args.repeats, quick=args.quick))


if __name__ == "__main__":
    main()
