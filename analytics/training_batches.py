"""Poisson sampling of DP-SGD's batches, drawn for many steps at once.

DP-SGD's accounting (Opacus' PRV accountant, ``analytics.training_sgd``) assumes Poisson
sampling: at every step, every training row joins the batch independently with
probability q.  Opacus' ``UniformWithReplacementSampler`` draws that literally, one
uniform per row per step (``torch.rand(rows) < q``, then ``nonzero``): at 160 000 rows
that is 0.8 ms a step, more than a small model's whole step.

``poisson_batches`` draws the same law from the gaps between selections.  Take an
epoch's ``steps x rows`` independent Bernoulli(q) trials in order (step by step, row by
row); the number of trials up to and including each success is independent of the others
and geometric, P(G = k) = (1 - q)^(k - 1) q, and drawing those gaps and placing the
successes is the same random process as drawing every trial.  Each gap comes from one
uniform U on (0, 1] by inversion, ``G = floor(log U / log(1 - q)) + 1`` (P(G > k) =
P(U <= (1 - q)^k) = (1 - q)^k).  So an epoch costs about ``rows`` uniforms (q x steps x
rows, one per selected row) instead of ``steps x rows``, and nothing runs per step but a
slice.  Empty batches are yielded like any other (the accountant counts every step).

The uniforms come from the caller's generator: ``training_sgd`` passes one seeded from OS
entropy (or Opacus' secure generator), never from a public seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Final

import torch

#: About how many selections to draw at once (bounds memory: ~32 bytes per selection).
CHUNK_SELECTIONS: Final = 1 << 20


def poisson_batches(
    rows: int, sample_rate: float, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """``steps`` batches of row indices (ascending int64, possibly empty): each of the
    ``rows`` rows is in each batch independently with probability ``sample_rate``."""
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError("sample_rate must be in (0, 1]")
    per_chunk = max(1, CHUNK_SELECTIONS // max(1, math.ceil(rows * sample_rate)))
    for first in range(0, steps, per_chunk):
        count = min(per_chunk, steps - first)
        # Trials are independent, so each chunk's gap process may start afresh.
        positions = _successes(count * rows, sample_rate, generator)
        sizes = torch.bincount(positions // rows, minlength=count) if rows else None
        if sizes is None:
            yield from (positions for _ in range(count))
        else:
            yield from torch.split(positions % rows, sizes.tolist())


def _successes(trials: int, sample_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Positions (0-based, ascending) of the successes among ``trials`` Bernoulli trials."""
    # Every gap is 1 when every trial succeeds (q = 1): log U / -inf = -0.0.
    log_miss = math.log1p(-sample_rate) if sample_rate < 1.0 else -math.inf
    parts: list[torch.Tensor] = []
    last = -1  # the position of the last success drawn so far
    while last < trials - 1:
        expected = (trials - 1 - last) * sample_rate
        # Enough gaps to pass the end nearly always; the loop draws more when not.
        draw = int(expected + 6 * math.sqrt(expected) + 16)
        uniform = 1.0 - torch.rand(draw, dtype=torch.float64, generator=generator)  # (0, 1]
        gaps = torch.floor(torch.log(uniform) / log_miss).to(torch.int64) + 1
        positions = torch.cumsum(gaps, 0) + last
        parts.append(positions)
        last = int(positions[-1])
    if not parts:
        return torch.empty(0, dtype=torch.int64)
    positions = torch.cat(parts)
    return positions[positions < trials]
