"""Benchmark: tier-4 DP training (Opacus DP-SGD) vs the same model trained without DP.

Veil's defaults (``TrainingSpec``: 5 epochs, batch 256, learning rate 0.1, clipping norm
1) on 200 000 synthetic predictive-maintenance rows x 20 encoded features (16 scaled
sensors, 4 one-hot lines), 160 000 after the held-out split.  Veil has no default model
(a training document names its family and layers); the MLP classifier with hidden
layers 64 and 64 is the larger of the documented examples.  The rows are encoded once
(tensors), as ``train_model`` does, and both sides run ``analytics.training_sgd``'s loop
on them, on the CPU with ``threads()`` (Veil's setting):

* Veil: ``fit_private``: Poisson batches at q = batch_size / training rows
  (``analytics.training_batches``), Opacus' ghost clipping, Gaussian noise and PRV
  accountant.  The noise multiplier's search (a function of public values only, cached:
  a preview has paid it before a job runs) is outside the timed part; the end-to-end row
  includes it.
* Baseline: ``fit_plain`` with the same Poisson batches (the same loader, so the ratio
  is what clipping, noise and accounting cost), plain SGD, nothing of Opacus.

Figures are CPU seconds of this process (``time.process_time``: the machine is shared, so
wall time measures the neighbours), from ``report.REPEATS`` interleaved repetitions.
More rows: ``train_model`` end to end (encoding, split, the noise search with its cache
cleared, training, the OpenDP release of the held-out accuracy), the shuffled-batch
baseline (what a non-private trainer would use), and Poisson batches alone (Veil's vs
Opacus' ``UniformWithReplacementSampler``, one epoch).

Run alone: ``.venv/bin/python bench/training_bench.py [--quick] [--rows 200000] [--epochs 5]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import torch
from opacus.utils.uniform_sampler import (  # type: ignore[import-untyped]
    UniformWithReplacementSampler,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics import training_sgd
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from analytics.training import ModelFamily, TrainingSpec, train_model
from analytics.training_batches import poisson_batches
from analytics.training_encoding import encode_features, feature_card, target_card
from analytics.training_sgd import (
    Callbacks,
    Rows,
    SgdPlan,
    fit_plain,
    fit_private,
    initial_model,
    sgd_plan,
    threads,
)
from bench.report import REPEATS, Row, interleaved, series_row

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


def cpu_seconds(action: Callable[[], object]) -> Callable[[], float]:
    """A measure for ``report.interleaved``: the CPU seconds of one ``action()``."""

    def measure() -> float:
        start = time.process_time()
        action()
        return time.process_time() - start

    return measure


def run(quick: bool = False, rows: int | None = None, epochs: int | None = None) -> list[Row]:
    """The rows of the table; ``quick``: 50 000 rows, 1 epoch, 3 repetitions."""
    rows = rows or (50_000 if quick else 200_000)
    epochs = epochs or (1 if quick else TrainingSpec.epochs)
    repeats = 3 if quick else REPEATS
    frame, declared = make_frame(rows), schema()
    spec = TrainingSpec(
        ModelFamily.MLP_CLASSIFIER, FEATURES, "failure", 1.0, 1e-6, epochs=epochs,
        hidden_sizes=(64, 64),
    )  # fmt: skip
    features = [feature_card(declared, name) for name in FEATURES]
    x = encode_features(frame, features)
    y = torch.tensor(frame["failure"].cast(pl.Int64).to_numpy())
    training = int(rows * (1 - spec.holdout_fraction))
    rows_ = Rows(x[:training], y[:training])  # a training split's size
    classes = len(target_card(declared, spec)["classes"])
    plan = sgd_plan(spec, rows, spec.epsilon * (1 - spec.metrics_epsilon_share))

    def model() -> torch.nn.Sequential:
        return initial_model(spec.family, x.shape[1], spec.hidden_sizes, classes, 0)

    def dp() -> None:
        with threads():
            fit_private(model(), rows_, spec, plan, Callbacks())

    def plain() -> None:
        with threads():
            fit_plain(model(), rows_, spec, plan)

    def shuffled() -> None:
        with threads():
            fit_plain(model(), rows_, spec)

    def end_to_end() -> None:
        training_sgd.sigma_for_budget.cache_clear()  # pay the accountant's search each time
        train_model(frame, declared, spec, rows)

    dp_s, plain_s, shuffled_s, e2e_s = interleaved(
        repeats, cpu_seconds(dp), cpu_seconds(plain), cpu_seconds(shuffled), cpu_seconds(end_to_end)
    )
    ours, opacus = interleaved(
        repeats, cpu_seconds(lambda: _epoch_of_batches(plan, training, ours=True)),
        cpu_seconds(lambda: _epoch_of_batches(plan, training, ours=False)),
    )  # fmt: skip
    size = f"{rows:,} rows x {x.shape[1]} features, MLP 64-64, batch {spec.batch_size}"
    size += f", {epochs} epochs"
    return [
        series_row(f"DP training (Opacus ghost clipping) vs non-private, same Poisson batches, "
                   f"CPU, {size}", dp_s, plain_s, "CPU s", "<= 2x",
                   lambda _v, ratio: ratio is not None and ratio <= 2),
        series_row(f"train_model end to end (+ noise search, split, OpenDP metric) vs "
                   f"non-private, CPU, {size}", e2e_s, plain_s, "CPU s", "report", None),
        series_row(f"non-private: shuffled batches vs the same Poisson batches, CPU, {size}",
                   shuffled_s, plain_s, "CPU s", "report", None),
        series_row(f"Poisson batches of one epoch ({training:,} rows, q = {plan.sample_rate:.2g}): "
                   "Veil's vs Opacus' sampler, CPU", ours, opacus, "CPU s", "< 1x",
                   lambda _v, ratio: ratio is not None and ratio < 1),
    ]  # fmt: skip


def _epoch_of_batches(plan: SgdPlan, rows: int, *, ours: bool) -> None:
    """One epoch of Poisson batches of row indices, as the training loop gets them."""
    generator = torch.Generator().manual_seed(1)
    with threads():  # as in training: one thread (two spin on a busy machine)
        if ours:
            for _ in poisson_batches(rows, plan.sample_rate, plan.steps_per_epoch, generator):
                pass
            return
        sampler = UniformWithReplacementSampler(
            num_samples=rows, sample_rate=plan.sample_rate, generator=generator
        )
        for indices in sampler:
            torch.tensor(indices, dtype=torch.long)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="50 000 rows, 1 epoch, 3 runs")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    from bench.report import print_rows

    print_rows(run(args.quick, args.rows, args.epochs))


if __name__ == "__main__":
    main()
