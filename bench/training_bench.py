"""Benchmark: tier-4 DP training (Opacus DP-SGD) vs the same model trained without DP.

The same MLP classifier (hidden 64, 64; 20 inputs) on the same synthetic
predictive-maintenance rows, same epochs, batch size and learning rate, on CPU:

* Veil: the DP-SGD loop ``train_model`` runs (``fit_private``: Opacus' Poisson sampler
  at q = batch_size / public training rows, ghost clipping, Gaussian noise, PRV
  accounting), on 80% of the rows as after the held-out split.
* Baseline: the same encoded rows, shuffled batches of batch_size, plain SGD (no
  clipping, no noise, nothing of Opacus), through the same training loop
  (``fit_plain``).  ``bench/training_device.py`` runs the same pair on any torch device.

Two more rows: ``train_model`` end to end (adds the noise-multiplier search, its cache
cleared each time, the encoding and split, and the OpenDP release of the held-out
accuracy), and Opacus' ghost clipping vs its hooks mode (which Veil does not use).

Run alone: ``.venv/bin/python bench/training_bench.py [--rows 50000] [--epochs 3] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics import training_sgd
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from analytics.training import ModelFamily, TrainingSpec, train_model
from analytics.training_encoding import encode_features, feature_card, target_card
from analytics.training_sgd import Callbacks, Rows, fit_plain, fit_private, initial_model, threads
from bench.report import Row

LINES = ("north", "south", "east", "west")
SENSORS = [f"sensor_{i:02d}" for i in range(16)]
FEATURES = ("temperature_c", "vibration_mm_s", *SENSORS[:14], "line")  # 16 numeric + 4 one-hot


def schema() -> DatasetSchema:
    """Declared columns of the benchmark data."""
    columns = [
        ColumnSpec("temperature_c", ColumnType.FLOAT, ColumnClass.CONFIDENTIAL, 0.0, 150.0),
        ColumnSpec("vibration_mm_s", ColumnType.FLOAT, ColumnClass.INTERNAL, 0.0, 20.0),
        *(ColumnSpec(s, ColumnType.FLOAT, ColumnClass.INTERNAL, 0.0, 1.0) for s in SENSORS),
        ColumnSpec("line", ColumnType.STRING, ColumnClass.PUBLIC, categories=LINES),
        ColumnSpec("failure", ColumnType.BOOLEAN, ColumnClass.INTERNAL),
    ]
    return DatasetSchema(tuple(columns))


def make_frame(rows: int, seed: int = 7) -> pl.DataFrame:
    """Synthetic workload: failure when temperature and vibration are both high."""
    rng = np.random.default_rng(seed)
    temp, vib = rng.uniform(20, 120, rows), rng.uniform(0, 15, rows)
    score = (temp - 70) / 25 + (vib - 7.5) / 3.75 + rng.normal(0, 0.5, rows)
    data: dict[str, object] = {"temperature_c": temp, "vibration_mm_s": vib}
    data.update({s: rng.uniform(0, 1, rows) for s in SENSORS})
    data.update({"line": rng.choice(LINES, rows), "failure": score > 0})
    return pl.DataFrame(data)


def median_time(repeats: int, action: Callable[[], object]) -> float:
    """Median wall time of ``repeats`` runs of ``action`` (seconds)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        action()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(item: str, veil: float, baseline: float, goal: str, met: bool | None) -> Row:
    return {
        "item": item,
        "veil": round(veil, 3),
        "baseline": round(baseline, 3),
        "unit": "s",
        "ratio": round(veil / baseline, 3),
        "goal": goal,
        "met": met,
    }


def run(rows: int = 50_000, epochs: int = 3, repeats: int = 3) -> list[Row]:
    frame, declared = make_frame(rows), schema()
    spec = TrainingSpec(
        ModelFamily.MLP_CLASSIFIER, FEATURES, "failure", 1.0, 1e-6, epochs=epochs,
        learning_rate=0.5, hidden_sizes=(64, 64),
    )  # fmt: skip
    features = [feature_card(declared, name) for name in FEATURES]
    x = encode_features(frame, features)
    y = torch.tensor(frame["failure"].cast(pl.Int64).to_numpy())
    rows_ = Rows(x[: int(rows * 0.8)], y[: int(rows * 0.8)])  # a training split's size
    classes = len(target_card(declared, spec)["classes"])

    def model() -> torch.nn.Sequential:
        return initial_model(spec.family, x.shape[1], spec.hidden_sizes, classes, 0)

    def veil() -> None:
        training_sgd.sigma_for_budget.cache_clear()  # pay the accountant's search each time
        train_model(frame, declared, spec, rows)

    def plain() -> None:
        with threads():
            fit_plain(model(), rows_, spec)

    plan = training_sgd.sgd_plan(spec, rows, 0.9)

    def loop(mode: str) -> Callable[[], object]:
        def action() -> None:
            with threads():
                fit_private(model(), rows_, spec, plan, Callbacks(), grad_sample_mode=mode)

        return action

    base = median_time(repeats, plain)
    end_to_end = median_time(repeats, veil)
    ghost, hooks = median_time(repeats, loop("ghost")), median_time(repeats, loop("hooks"))
    size = f"{rows:,} rows, {epochs} epochs"
    return [
        row(f"DP training (Opacus) vs non-private, {size}", ghost, base, "<= 3x",
            ghost <= 3 * base),
        row(f"train_model end to end (+ PRV search, OpenDP metric) vs non-private, {size}",
            end_to_end, base, "report", None),
        row(f"DP-SGD: ghost clipping vs hooks, {size}", ghost, hooks, "< 1x", ghost < hooks),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from bench.report import print_rows

    print_rows(run(args.rows, args.epochs, args.repeats))


if __name__ == "__main__":
    main()
