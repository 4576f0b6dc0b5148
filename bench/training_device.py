"""Benchmark: the DP-SGD loop vs the same loop without DP, on one torch device.

Needs only torch and Opacus (not polars or OpenDP), so it also runs on an accelerator
machine that has neither.  The rows are ``training_bench``'s workload built with torch:
20 encoded inputs (16 scaled sensors, 4 one-hot lines), a 0/1 failure target; the
model is the same MLP (hidden 64, 64).  Both sides run ``analytics.training_sgd``'s
loop on ``--device``: ``fit_private`` (Opacus ghost clipping, Poisson sampling, noise,
PRV accounting; "hooks" too for comparison) and ``fit_plain`` (shuffled batches, no
clipping, no noise).  Medians of ``--repeats`` runs after one warm-up run each.

Run: ``python bench/training_device.py [--device cuda] [--rows 50000] [--epochs 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.training_sgd import (
    Callbacks,
    Rows,
    fit_plain,
    fit_private,
    initial_model,
    sgd_plan,
    threads,
)
from analytics.training_spec import ModelFamily, TrainingSpec


def make_rows(rows: int, device: torch.device, seed: int = 7) -> Rows:
    """Encoded rows: failure when temperature and vibration are both high."""
    g = torch.Generator().manual_seed(seed)
    sensors = torch.rand(rows, 16, generator=g, dtype=torch.float64)  # scaled to [0, 1]
    lines = torch.nn.functional.one_hot(torch.randint(0, 4, (rows,), generator=g), 4)
    noise = torch.randn(rows, generator=g, dtype=torch.float64) * 0.5
    score = (sensors[:, 0] - 0.5) * 4 + (sensors[:, 1] - 0.5) * 4 + noise
    x = torch.cat([sensors, lines.to(torch.float64)], dim=1).to(torch.float32)
    return Rows(x.to(device), (score > 0).to(torch.int64).to(device))


def timed(device: torch.device, repeats: int, action: Callable[[], object]) -> float:
    """Median seconds of ``repeats`` runs after one warm-up run."""
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        action()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(device: torch.device, rows: int, epochs: int, repeats: int, batch: int) -> None:
    data = make_rows(int(rows * 0.8), device)  # a training split's size
    spec = TrainingSpec(
        ModelFamily.MLP_CLASSIFIER, tuple(f"f{i}" for i in range(20)), "failure", 1.0, 1e-6,
        epochs=epochs, batch_size=batch, learning_rate=0.5, hidden_sizes=(64, 64),
    )  # fmt: skip
    plan = sgd_plan(spec, rows, 0.9)

    def model() -> torch.nn.Module:
        return initial_model(spec.family, 20, spec.hidden_sizes, 2, 0).to(device)

    def private(mode: str) -> Callable[[], object]:
        return lambda: fit_private(model(), data, spec, plan, Callbacks(), grad_sample_mode=mode)

    with threads():
        plain = timed(device, repeats, lambda: fit_plain(model(), data, spec))
        ghost = timed(device, repeats, private("ghost"))
        hooks = timed(device, repeats, private("hooks"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{name}: {rows:,} rows, {epochs} epochs, batch {batch}, {plan.steps} steps: "
        f"plain {plain:.3f} s, DP ghost {ghost:.3f} s ({ghost / plain:.2f}x), "
        f"DP hooks {hooks:.3f} s ({hooks / plain:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[256])
    args = parser.parse_args()
    for batch in args.batch:
        run(torch.device(args.device), args.rows, args.epochs, args.repeats, batch)


if __name__ == "__main__":
    main()
