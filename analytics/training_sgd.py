"""DP-SGD with Opacus: the model, the noise multiplier, and the training loop.

Every noise sample, the clipping and the accounting come from Opacus (its ghost-clipping
module, optimizer and PRV accountant); this module only wires them up.  The Poisson
batches are drawn by ``analytics.training_batches`` (the same law as Opacus' uniform
sampler, drawn for a whole epoch at once).  ``analytics.training`` explains the
guarantee; the wiring choices are explained where they are made.
"""

from __future__ import annotations

import functools
import math
import secrets
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import torch
from opacus import PrivacyEngine  # type: ignore[import-untyped]  # opacus ships no py.typed
from opacus.accountants.utils import get_noise_multiplier  # type: ignore[import-untyped]
from opacus.grad_sample import (  # type: ignore[import-untyped]
    GradSampleModule,
    GradSampleModuleFastGradientClipping,
)
from opacus.optimizers import (  # type: ignore[import-untyped]
    DPOptimizer,
    DPOptimizerFastGradientClipping,
)
from opacus.utils.fast_gradient_clipping_utils import (  # type: ignore[import-untyped]
    DPLossFastGradientClipping,
)
from torch import nn

from analytics.training_batches import poisson_batches
from analytics.training_spec import (
    CLASSIFIERS,
    MAX_STEPS,
    ModelFamily,
    TrainingCancelled,
    TrainingError,
    TrainingSpec,
)
from i18n import Msg

#: Opacus' PRV accountant (Gopi et al. 2021): numerical composition of the subsampled
#: Gaussian's privacy loss; Opacus returns its certified upper bound on epsilon.  Tighter
#: than RDP, so less noise for the same budget.  Used for both preview and training.
ACCOUNTANT: Final = "prv"
#: Ghost clipping (fast gradient clipping): per-sample gradient norms without
#: materialising per-sample gradients, then a second backward pass with clipped weights.
#: Same clipping, noise and accounting as "hooks"; 1.1-1.5x faster on a 2-core CPU
#: for these models (bench/training_bench.py).  Works with Poisson (even empty) batches.
GRAD_SAMPLE_MODE: Final = "ghost"
#: Intra-op threads while training: one.  A step of these small models is a few hundred
#: microseconds of small kernels; a second thread saves little wall time and, on a busy
#: machine, spins waiting for its partner: 8-15x the CPU seconds of one thread for the
#: same run under load (docs/performance.md, "DP training").
MAX_THREADS: Final = 1


@dataclass(frozen=True)
class SgdPlan:
    """The public parameters of one DP-SGD run (none depends on the private row count)."""

    sample_rate: float  # q = batch_size / training rows (public): a row's chance per batch
    steps_per_epoch: int  # floor(1/q), as Opacus' Poisson sampler: the batches of an epoch
    epochs: int
    noise_multiplier: float  # sigma: noise std / max_grad_norm
    expected_batch: int  # q x public training rows = batch_size: divides the noisy sum

    @property
    def steps(self) -> int:
        """Optimizer steps in the whole run."""
        return self.steps_per_epoch * self.epochs


def public_training_rows(spec: TrainingSpec, rows_public: int) -> float:
    """The public count of training rows: ``rows_public`` less the held-out share."""
    return rows_public * (1.0 - spec.holdout_fraction)


def sgd_plan(spec: TrainingSpec, rows_public: int, epsilon_training: float) -> SgdPlan:
    """The sample rate, steps and noise multiplier that spend ``epsilon_training``."""
    training_rows = public_training_rows(spec, rows_public)
    if spec.batch_size > training_rows:
        raise TrainingError(
            Msg(
                "batch_size: must not exceed the training rows, rows_public x (1 "
                "- holdout_fraction)"
            )
        )
    q = spec.batch_size / training_rows
    per_epoch = int(1 / q)  # what opacus' UniformWithReplacementSampler yields too
    if per_epoch * spec.epochs > MAX_STEPS:
        raise TrainingError(
            Msg(
                "epochs x rows_public / batch_size must be at most {max_steps} "
                "steps: raise batch_size or lower epochs",
                max_steps=MAX_STEPS,
            )
        )
    sigma = sigma_for_budget(epsilon_training, spec.delta, q, per_epoch * spec.epochs)
    return SgdPlan(q, per_epoch, spec.epochs, sigma, spec.batch_size)


@functools.lru_cache(maxsize=128)
def sigma_for_budget(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """Opacus' smallest sigma (to its 0.01 search tolerance) whose accounted epsilon for
    ``steps`` Poisson-subsampled Gaussian steps at ``sample_rate`` is at most ``epsilon``.

    Cached: preview and training ask for the same values, and the search takes a moment.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numerical warnings of the accountant's search
            sigma = get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=ACCOUNTANT,
            )
    except ValueError:
        raise TrainingError(Msg("epsilon: too small for this many training steps")) from None
    return float(sigma)


def build_model(
    family: ModelFamily, inputs: int, hidden: tuple[int, ...], outputs: int
) -> nn.Sequential:
    """Linear layers with ReLU between them (no hidden layer for logistic regression)."""
    layers: list[nn.Module] = []
    width = inputs
    for units in hidden if family != ModelFamily.LOGISTIC_REGRESSION else ():
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


def initial_model(
    family: ModelFamily, inputs: int, hidden: tuple[int, ...], outputs: int, seed: int
) -> nn.Sequential:
    """``build_model`` with initial weights fixed by ``seed`` (public), leaving torch's
    global generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(family, inputs, hidden, outputs)


def loss_function(family: ModelFamily) -> nn.Module:
    """Cross-entropy over the classes, or squared error on the scaled target."""
    return nn.CrossEntropyLoss() if family in CLASSIFIERS else nn.MSELoss()


class Rows:
    """Encoded rows: features ``x`` and targets ``y``, on one device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows at ``indices`` (an empty index gives an empty batch)."""
        indices = indices.to(self.x.device)
        return self.x[indices], self.y[indices]


@contextmanager
def threads(count: int = MAX_THREADS) -> Iterator[None]:
    """Use at most ``count`` intra-op threads inside the block, then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(count, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fresh_generator(device: torch.device) -> torch.Generator:
    # The Poisson draws and the noise must be unpredictable: seeding them with the public
    # ``seed`` (or leaving torch's fixed default seed) would let anyone recompute the noise.
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


def _engine(secure_mode: bool) -> PrivacyEngine:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "secure RNG turned off": documented choice
            return PrivacyEngine(accountant=ACCOUNTANT, secure_mode=secure_mode)
    except ImportError:
        raise TrainingError(
            Msg(
                "secure_mode needs the torchcsprng package (Opacus' "
                "cryptographically secure generator), which is not installed"
            )
        ) from None


class _GhostOptimizer(DPOptimizerFastGradientClipping):  # type: ignore[misc]
    """Opacus' ghost-clipping optimizer, accumulating the clipped gradient with a clone
    where Opacus deep-copies it (a tenth of a step's time for these small models)."""

    def accumulate(self) -> None:
        for p in self.params:
            if p.summed_grad is None:
                p.summed_grad = p.grad.detach().clone()
            else:
                p.summed_grad.add_(p.grad)


@dataclass(frozen=True)
class Callbacks:
    """Progress and cancellation hooks of a training run."""

    on_epoch: Callable[[int, float], None] | None = None
    should_stop: Callable[[], bool] | None = None


Batches = Callable[[], Iterator[torch.Tensor]]  # one epoch's batches of row indices


def fit_private(
    model: nn.Module,
    rows: Rows,
    spec: TrainingSpec,
    plan: SgdPlan,
    callbacks: Callbacks,
    secure_mode: bool = False,
    grad_sample_mode: str = GRAD_SAMPLE_MODE,
) -> float:
    """Train ``model`` (on ``rows``' device) in place with DP-SGD; return the epsilon
    Opacus' accountant spent.

    The pieces ``PrivacyEngine.make_private`` would assemble, assembled here so that
    every rate is the public one: Poisson batches at ``plan.sample_rate``
    (``training_batches``; not ``batch_size / len(rows)``, a private count), Opacus'
    optimizer dividing by the public ``plan.expected_batch``, its accountant hooked at
    the same rate.
    ``grad_sample_mode`` is Opacus' ("ghost" or "hooks": same clipping, noise and
    accounting); "hooks" is for the benchmark's comparison only.
    """
    engine = _engine(secure_mode)
    engine.validate(module=model, optimizer=None, data_loader=None)
    device = rows.x.device
    sampling = engine.secure_rng if secure_mode else _fresh_generator(torch.device("cpu"))
    sgd = torch.optim.SGD(model.parameters(), lr=spec.learning_rate)
    noise = dict(
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=spec.max_grad_norm,
        expected_batch_size=plan.expected_batch,
        loss_reduction="mean",
        generator=engine.secure_rng if secure_mode else _fresh_generator(device),
        secure_mode=secure_mode,
    )
    criterion: Any = loss_function(spec.family)
    module: nn.Module
    optimizer: DPOptimizer
    if grad_sample_mode == "ghost":
        module = GradSampleModuleFastGradientClipping(
            model, batch_first=True, loss_reduction="mean",
            max_grad_norm=spec.max_grad_norm, use_ghost_clipping=True,
        )  # fmt: skip
        optimizer = _GhostOptimizer(sgd, **noise)
        criterion = DPLossFastGradientClipping(module, optimizer, criterion, "mean")
    elif grad_sample_mode == "hooks":
        module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        optimizer = DPOptimizer(sgd, **noise)
    else:
        raise ValueError(f"grad_sample_mode: {grad_sample_mode!r} is not 'ghost' or 'hooks'")
    optimizer.attach_step_hook(engine.accountant.get_optimizer_hook_fn(plan.sample_rate))

    def batches() -> Iterator[torch.Tensor]:
        return poisson_batches(len(rows), plan.sample_rate, plan.steps_per_epoch, sampling)

    _run_epochs(module, optimizer, criterion, rows, batches, spec, callbacks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the PRV domain bound's RDP "largest alpha" note
        return float(engine.accountant.get_epsilon(spec.delta))


def fit_plain(
    model: nn.Module, rows: Rows, spec: TrainingSpec, poisson: SgdPlan | None = None
) -> None:
    """The same loop without DP (no clipping, no noise, no accountant): a benchmark
    baseline only, never used for a release.  Batches: shuffled batches of
    ``batch_size``, or with ``poisson`` the same Poisson batches as ``fit_private``."""

    def batches() -> Iterator[torch.Tensor]:
        if poisson is not None:
            generator = _fresh_generator(torch.device("cpu"))
            return poisson_batches(
                len(rows), poisson.sample_rate, poisson.steps_per_epoch, generator
            )
        return iter(torch.split(torch.randperm(len(rows)), spec.batch_size))

    optimizer = torch.optim.SGD(model.parameters(), lr=spec.learning_rate)
    criterion = loss_function(spec.family)
    _run_epochs(model, optimizer, criterion, rows, batches, spec, Callbacks())


def _run_epochs(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Any,
    rows: Rows,
    batches: Batches,
    spec: TrainingSpec,
    callbacks: Callbacks,
) -> None:
    regression = spec.family not in CLASSIFIERS
    module.train()
    with warnings.catch_warnings():
        # Ghost clipping's hooks fire on outputs because inputs need no gradient: expected.
        warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
        for epoch in range(1, spec.epochs + 1):
            loss = _run_epoch(module, optimizer, criterion, rows, batches, regression, callbacks)
            if callbacks.on_epoch is not None:
                callbacks.on_epoch(epoch, loss)
    module.eval()


def _run_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Any,
    rows: Rows,
    batches: Batches,
    regression: bool,
    callbacks: Callbacks,
) -> float:
    """One pass; returns the mean loss of the rows seen (NaN if none)."""
    total, seen = torch.zeros((), dtype=torch.float64, device=rows.x.device), 0
    for indices in batches():
        if callbacks.should_stop is not None and callbacks.should_stop():
            raise TrainingCancelled("training was cancelled")
        x, y = rows.take(indices)
        optimizer.zero_grad()
        out = module(x)
        loss = criterion(out.reshape(-1) if regression else out, y)
        # An empty Poisson batch still takes a (pure-noise) step: skipping it would
        # reveal that it was empty, and the accountant counts every step.
        loss.backward()
        optimizer.step()
        if len(y):
            total += loss.detach() * len(y)  # no host sync per step on an accelerator
            seen += len(y)
    return float(total) / seen if seen else math.nan


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters, detached and contiguous (what safetensors stores)."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}
