"""Benchmark: one collaboration run over N enterprise nodes, end to end on loopback.

A provider starts a run over HTTP (``VeilClient.start_collaboration_run``); every node
answers the five phases of secure aggregation (advertise, share, input, unmask, veto) and
acknowledges the release through the node protocol (signed requests), from its own link
thread as in production: a long-poll claim on the control plane, returned when a phase
opens.  Each node is a full Veil core with its own SQLite database and embedded OpenBao
(``bench.collab_world``; no job worker: the nodes run no job here); all of them share this
machine's cores and one Python process, so a run measures the control plane and N nodes
together on one interpreter (``docs/performance.md``: where the time goes; 100 nodes).

Measured per run: the control plane's row (``created_at`` → ``finished_at``, released),
what the provider saw (POST sent → the GET that reads it released, polled every 20 ms),
and when each phase opened.  Baseline: the same statistic computed in-process without
secure aggregation — each node's values, ``encode_partial`` + ``noise_share``, summed and
``release``d, no HTTP, no masks — the cost of the protocol is the difference.  Runs and
baselines are interleaved after a warm-up run; medians with min-max.  Set-up time per node
and memory (this process, the OpenBao processes) are reported too.

Run alone: ``.venv/bin/python -m bench.collab_bench [--quick] [--nodes 20,100]
[--repeats N]`` (``--quick``: 6 nodes, 2 repeats).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from analytics.collab_stats import (
    encode_partial,
    enterprise_values,
    noise_share,
    parse_benchmark,
    release,
    vector_length,
)
from bench.collab_world import BENCHMARK, CATEGORY, CollabWorld, RunTimes
from bench.report import REPEATS, Row, print_rows, row, series_row
from keys import secure_sum
from sandbox.collaborations.runs import PHASES

GOAL_S = 2.0  # for 100 nodes (issue 21)
STEPS = (*PHASES, "released")


def baseline(world: CollabWorld, count: int) -> float:
    """Seconds to compute the release in-process from the first ``count`` nodes' rows:
    each node's values, partial and noise share, summed, released (no protocol)."""
    spec = parse_benchmark(BENCHMARK)
    threshold = max(spec.min_participants, count // 2 + 1)
    started = time.perf_counter()
    total = np.zeros(vector_length(spec), dtype=np.int64)
    for node in world.nodes[:count]:
        partial = encode_partial(spec, enterprise_values(spec, node.frame), CATEGORY)
        total = total + partial + noise_share(spec, threshold)
    release(spec, total, count, threshold)
    return time.perf_counter() - started


def protocol_floor(count: int) -> float:
    """CPU seconds of the secure aggregation's own cryptography for ``count`` parties in this
    process, with nothing around it (no HTTP, database or key server): each party's
    adverts signed (Ed25519, locally) and every advert checked by every party, the shares
    sealed and opened, the masked inputs, the unmask and the sum.  Spread over machines
    each party does 1/``count`` of it; on one machine it is a floor for the whole run."""
    parties = [f"node-{i:03d}" for i in range(count)]
    round_id, threshold = "floor", count // 2 + 1
    started = time.process_time()
    held = {p: secure_sum.Party(p, round_id, threshold) for p in parties}
    signers = {p: Ed25519PrivateKey.generate() for p in parties}
    adverts = [held[p].advertise() for p in parties]
    signed = [(a, signers[a.party].sign(a.signed_bytes(round_id))) for a in adverts]
    publics = {p: signers[p].public_key() for p in parties}
    inbox: dict[str, list[secure_sum.SealedShares]] = {p: [] for p in parties}
    for party in parties:
        for advert, signature in signed:
            publics[advert.party].verify(signature, advert.signed_bytes(round_id))
        for sealed in held[party].share_keys(adverts):
            inbox[sealed.recipient].append(sealed)
    values = np.ones(32, dtype=np.uint64)
    masked = {p: held[p].masked_input(values, inbox[p]) for p in parties}
    reveals = [held[p].unmask(parties, []) for p in parties]
    adverts_by = {a.party: a for a in adverts}
    total = secure_sum.unmasked_sum(round_id, threshold, adverts_by, parties, masked, reveals)
    assert int(total[0]) == count
    return time.process_time() - started


def phases(times: RunTimes) -> dict[str, float]:
    """Seconds each phase was open (NaN where the watcher missed a phase)."""
    opened = [times.opened.get(p) for p in PHASES] + [times.finished_at]
    out = {}
    for phase, start, end in zip(PHASES, opened, opened[1:], strict=False):
        out[phase] = (end - start).total_seconds() if start and end else float("nan")
    return out


def _spread(values: list[float], unit: str = "s") -> str:
    med = statistics.median(values)
    low, high = min(values), max(values)
    return f"median {med:.3f} {unit} (min {low:.3f}, max {high:.3f}, n={len(values)})"


def measure(world: CollabWorld, count: int, repeats: int) -> list[Row]:
    """A warm-up run, then ``repeats`` runs over ``count`` nodes, each next to a baseline."""
    collaboration = world.collaboration(count)
    world.run(collaboration)  # warm-up: the first run's imports, caches and connections
    runs: list[RunTimes] = []
    base: list[float] = []
    for i in range(repeats):
        order = (True, False) if i % 2 == 0 else (False, True)
        for protocol in order:
            if protocol:
                runs.append(world.run(collaboration))
            else:
                base.append(baseline(world, count))
    floor = [protocol_floor(count) for _ in range(repeats)]
    bad = [f"{r.status} ({r.survivors} survivors)" for r in runs if r.status != "released"]
    if bad:
        raise RuntimeError(f"runs over {count} nodes not released: {bad}")
    rows_s = [r.row_s for r in runs]
    client_s = [r.client_s for r in runs]
    print(f"{count} nodes: run (control plane's row) {_spread(rows_s)}", file=sys.stderr)
    print(f"{count} nodes: run (provider's view) {_spread(client_s)}", file=sys.stderr)
    print(f"{count} nodes: baseline in-process {_spread([b * 1000 for b in base], 'ms')}",
          file=sys.stderr)  # fmt: skip
    breakdown = {p: statistics.median([phases(r)[p] for r in runs]) for p in PHASES}
    for phase, value in breakdown.items():
        print(f"  phase {phase:<10} median {value:.3f} s", file=sys.stderr)
    med = statistics.median
    goal, met = (f"<= {GOAL_S:.0f} s", med(rows_s) <= GOAL_S) if count >= 100 else ("report", None)
    label = f"collaboration: one run over {count} real nodes, start -> released"
    if count < 100:
        label += " (goal for 100 nodes: python -m bench.collab_bench --nodes 100)"
    first = series_row(f"{label} (control plane's row; vs in-process without secure "
                       "aggregation)", [r * 1000 for r in rows_s], [b * 1000 for b in base],
                       "ms", goal, None)  # fmt: skip
    first["met"] = met
    rows = [
        first,
        row(f"{label} (provider's view over HTTP, polled every 20 ms)", med(client_s) * 1000,
            None, "ms", "report", None),
    ]  # fmt: skip
    print(f"{count} nodes: secure aggregation's cryptography alone, one process, CPU "
          f"{_spread(floor)}", file=sys.stderr)  # fmt: skip
    rows.append(
        row(
            f"collaboration: {count} parties, the secure aggregation's cryptography "
            f"alone in one process, CPU time (a floor on one machine; min {min(floor):.2f}, "
            f"max {max(floor):.2f} s)",
            med(floor) * 1000,
            None,
            "ms",
            "report",
            None,
        )
    )
    for phase, value in breakdown.items():
        rows.append(row(f"collaboration: {count} nodes, phase {phase} (median)", value * 1000,
                        None, "ms", "report", None))  # fmt: skip
    return rows


def setup_rows(world: CollabWorld, count: int, memory: dict[str, float]) -> list[Row]:
    setup = world.setup_s[:count]
    print(f"set-up of {count} nodes: {sum(setup):.0f} s in all, per node {_spread(setup)}",
          file=sys.stderr)  # fmt: skip
    print(f"memory with {count} nodes: " + ", ".join(f"{k} {v:,.0f} MiB"
                                                    for k, v in memory.items()),
          file=sys.stderr)  # fmt: skip
    return [
        row(f"collaboration: set-up of one node (enrol, two OpenBao starts, upload), "
            f"median of {count}", statistics.median(setup) * 1000, None, "ms", "report", None),
        row(f"collaboration: memory with {count} nodes, this process (CP + nodes' cores)",
            memory["this process"], None, "MiB", "report", None),
        row(f"collaboration: memory with {count} nodes, their {count + 1} OpenBao processes",
            memory["OpenBao processes"], None, "MiB", "report", None),
    ]  # fmt: skip


def run(counts: list[int] | None = None, repeats: int = REPEATS, quick: bool = False) -> list[Row]:
    """Rows for ``counts`` nodes (nodes are added between counts; the same world)."""
    if quick:
        counts, repeats = [6], 2
    counts = sorted(counts or [20])
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="veil-collab-bench-") as home,
        CollabWorld(Path(home)) as world,
    ):
        for count in counts:
            while len(world.nodes) < count:
                world.add_node()
                if len(world.nodes) % 10 == 0:
                    print(f"{len(world.nodes)} nodes up, {sum(world.setup_s):.0f} s",
                          file=sys.stderr)  # fmt: skip
            rows += setup_rows(world, count, world.memory_mib())
            rows += measure(world, count, repeats)
    return rows


class Timings:
    """Wall and CPU (the calling thread's) seconds of the protocol's steps, by name: the
    control plane's handlers and the nodes' work, wrapped in this process for one run."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[float, float]]] = {}
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str, label: Callable[..., str]) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: object, **kwargs: object) -> object:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                key = label(*args, **kwargs)
                self.calls.setdefault(key, []).append(
                    (time.perf_counter() - wall, time.thread_time() - cpu)
                )

        self._undo.append((owner, name, original))
        setattr(owner, name, timed)

    def __enter__(self) -> Timings:
        from node.protocol.client import ControlPlane
        from node.work import collab
        from sandbox.collaborations import runs

        self.wrap(runs, "tasks", lambda *a, **k: "CP: tasks (GET, advances the run)")
        self.wrap(runs, "answer", lambda veil, node, run, phase, body: f"CP: answer {phase}")
        self.wrap(runs, "_unmask", lambda *a, **k: "CP: unmask (Shamir, sum, release)")
        self.wrap(collab.CollabDesk, "_answer",
                  lambda desk, task: f"node: compute {task.get('phase')}")  # fmt: skip
        self.wrap(collab, "sign", lambda *a, **k: "node: sign a document (OpenBao)")
        self.wrap(ControlPlane, "send",
                  lambda cp, verb, path, *a, **k: f"node: HTTP {verb} "
                  + ("claim" if "claim" in path else path.rsplit("/", 1)[-1]
                     if "runs/" in path else path.split("?")[0].split("/")[-1]))  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)

    def print(self, runs: int) -> None:
        print(f"per run (sums over all nodes and calls, divided by {runs} runs):",
              file=sys.stderr)  # fmt: skip
        print(f"  {'step':<44} {'calls':>6} {'wall s':>8} {'CPU s':>8}", file=sys.stderr)
        for key in sorted(self.calls):
            calls = self.calls[key]
            wall, cpu = sum(c[0] for c in calls), sum(c[1] for c in calls)
            print(f"  {key:<44} {len(calls) / runs:6.0f} {wall / runs:8.2f} {cpu / runs:8.2f}",
                  file=sys.stderr)  # fmt: skip


def profile(count: int, repeats: int) -> None:
    """Runs over ``count`` nodes with the protocol's steps timed (``Timings``)."""
    with (
        tempfile.TemporaryDirectory(prefix="veil-collab-bench-") as home,
        CollabWorld(Path(home)) as world,
    ):
        while len(world.nodes) < count:
            world.add_node()
        collaboration = world.collaboration(count)
        world.run(collaboration)
        process = psutil.Process()
        cpu = process.cpu_times()
        with Timings() as timings:
            times = [world.run(collaboration) for _ in range(repeats)]
        used = process.cpu_times()
        print(f"{count} nodes: runs {_spread([t.row_s for t in times])}; this process used "
              f"{(used.user + used.system - cpu.user - cpu.system) / repeats:.2f} CPU s a run",
              file=sys.stderr)  # fmt: skip
        for phase in PHASES:
            print(f"  phase {phase:<10} median "
                  f"{statistics.median([phases(t)[phase] for t in times]):.3f} s",
                  file=sys.stderr)  # fmt: skip
        timings.print(repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 nodes, 2 repeats")
    parser.add_argument("--nodes", default="20", help="comma-separated counts, e.g. 20,100")
    parser.add_argument(
        "--repeats", type=int, default=REPEATS, help="runs per count (after a warm-up)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time the protocol's steps (control plane, nodes) instead",
    )
    args = parser.parse_args()
    if args.profile:
        for count in [6] if args.quick else [int(n) for n in args.nodes.split(",")]:
            profile(count, args.repeats)
        return
    started = time.perf_counter()
    rows = run([int(n) for n in args.nodes.split(",")], args.repeats, quick=args.quick)
    print(f"collab bench took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print_rows(rows)


if __name__ == "__main__":
    main()
