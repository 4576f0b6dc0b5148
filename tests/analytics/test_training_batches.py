"""Poisson batches for DP-SGD: the law the accountant assumes, and unpredictable draws.

Statistical checks use fixed generator seeds (the test is reproducible) and tolerances
of about 5 standard errors, so a correct sampler fails them with negligible probability
while the mutants named in each test fail them for sure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analytics import training_batches, training_sgd
from analytics.training_batches import poisson_batches
from analytics.training_sgd import Callbacks, Rows, SgdPlan, fit_private, initial_model
from analytics.training_spec import ModelFamily, TrainingSpec


def _inclusions(rows: int, q: float, steps: int, seed: int = 1) -> np.ndarray:
    """A (steps, rows) 0/1 matrix: which rows each batch holds."""
    generator = torch.Generator().manual_seed(seed)
    batches = list(poisson_batches(rows, q, steps, generator))
    assert len(batches) == steps
    matrix = np.zeros((steps, rows), dtype=np.int8)
    for step, indices in enumerate(batches):
        assert indices.dtype == torch.int64
        assert torch.equal(indices, torch.unique(indices))  # ascending, no row twice
        matrix[step, indices.numpy()] = 1
    return matrix


@pytest.mark.parametrize("chunk", [training_batches.CHUNK_SELECTIONS, 7])
def test_every_row_joins_every_batch_independently_with_probability_q(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each (step, row) is Bernoulli(q), independently; a chunk boundary changes nothing.

    Mutants that fail: fixed-size batches (shuffled ``batch_size`` rows: the batch size
    has no variance), rows drawn with replacement or by step only, a gap off by one
    (rate q/(1+q) or the first row never drawn), chunks that drop or repeat a step."""
    monkeypatch.setattr(training_batches, "CHUNK_SELECTIONS", chunk)
    rows, q, steps = 400, 0.05, 2_000
    m = _inclusions(rows, q, steps)
    trials = rows * steps
    # The overall rate: binomial(trials, q).
    assert abs(m.mean() - q) < 5 * math.sqrt(q * (1 - q) / trials)
    # Batch sizes: mean and variance of binomial(rows, q) (fixed-size batches have none).
    sizes = m.sum(axis=1)
    assert abs(sizes.mean() - rows * q) < 5 * math.sqrt(rows * q * (1 - q) / steps)
    assert abs(sizes.var() / (rows * q * (1 - q)) - 1) < 0.2
    # Every row at rate q: the first and last rows too (edges of the gap process).
    per_row = m.mean(axis=0)
    assert abs(per_row[0] - q) < 5 * math.sqrt(q * (1 - q) / steps)
    assert abs(per_row[-1] - q) < 5 * math.sqrt(q * (1 - q) / steps)
    chi2 = ((per_row - q) ** 2 / (q * (1 - q) / steps)).sum()  # about chi2(rows)
    assert abs(chi2 - rows) < 5 * math.sqrt(2 * rows)
    # Independence: neighbours in a batch and a row in consecutive batches, rate q^2.
    pairs = (m[:, :-1] & m[:, 1:]).mean()
    again = (m[:-1] & m[1:]).mean()
    for rate in (pairs, again):
        assert abs(rate - q * q) < 5 * math.sqrt(q * q / (trials - steps))


def test_batch_sizes_follow_the_binomial_law() -> None:
    """The whole distribution of batch sizes, against binomial(rows, q) (chi-square)."""
    rows, q, steps = 1_000, 0.01, 20_000
    generator = torch.Generator().manual_seed(3)
    sizes = np.array([len(b) for b in poisson_batches(rows, q, steps, generator)])
    ks = np.arange(0, 25)
    log_pmf = [
        math.lgamma(rows + 1) - math.lgamma(k + 1) - math.lgamma(rows - k + 1)
        + k * math.log(q) + (rows - k) * math.log1p(-q)
        for k in ks
    ]  # fmt: skip
    expected = steps * np.exp(log_pmf)
    observed = np.array([(sizes == k).sum() for k in ks])
    keep = expected >= 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert chi2 < keep.sum() + 5 * math.sqrt(2 * keep.sum())


def test_empty_batches_are_yielded_and_q_of_one_takes_every_row() -> None:
    generator = torch.Generator().manual_seed(5)
    batches = list(poisson_batches(10, 0.001, 500, generator))
    assert len(batches) == 500 and sum(len(b) == 0 for b in batches) > 450
    every = list(poisson_batches(10, 1.0, 3, generator))
    assert all(torch.equal(b, torch.arange(10)) for b in every)
    assert [len(b) for b in poisson_batches(0, 0.5, 4, generator)] == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="sample_rate"):
        next(poisson_batches(10, 0.0, 1, generator))


def test_training_draws_batches_from_fresh_entropy_not_the_public_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Attack: someone who knows the public seed (it is on the model card) must not be
    able to recompute which rows were in which batch.  Two runs with the same seed draw
    different batches.  Fails if the sampling generator is seeded with ``spec.seed``
    (or left at torch's default seed)."""
    drawn: list[list[torch.Tensor]] = []

    def recording(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        batches = list(poisson_batches(*args, **kwargs))  # type: ignore[arg-type]
        drawn[-1].extend(batches)
        return iter(batches)

    monkeypatch.setattr(training_sgd, "poisson_batches", recording)
    spec = TrainingSpec(
        ModelFamily.LOGISTIC_REGRESSION, ("a",), "b", 1.0, 1e-5, epochs=1, batch_size=16
    )
    rows = Rows(torch.rand(400, 3), torch.randint(0, 2, (400,)))
    plan = SgdPlan(16 / 400, 25, 1, 1.0, 16)
    for _ in range(2):
        drawn.append([])
        fit_private(initial_model(spec.family, 3, (), 2, spec.seed), rows, spec, plan, Callbacks())
    first, second = (torch.cat(d) for d in drawn)
    assert len(drawn[0]) == len(drawn[1]) == 25
    assert not torch.equal(first, second)
