"""Privacy budgets as exact, frozen values: a :class:`Budget` is an (ε, δ) pair.

The ledger keeps ε in millionths and δ in 10⁻¹² (``EPSILON_UNIT``, ``DELTA_UNIT``) so that
ten debits of 0.1 exhaust a budget of 1.0 exactly; floats would drift.  A ``Budget``
holds those integer units and is the only place that converts them to and from the
floats people type and read: the database columns stay integers, and the models turn
them into budgets at their boundary (``Grant.budget_total``, ``Dataset.cap``, ``Job.cost``).

A budget is never negative: an amount of privacy loss, a limit, or what is left of one.
Subtracting more than there is raises :class:`ValueError` (a bug: callers check
:meth:`Budget.fits_within` first, and the ledger's conditional updates make sure spent
never exceeds its limit).  The ledger's refunds are negative *entries*, not negative
budgets (``BudgetDebit.amount`` and ``BudgetDebit.is_refund``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from i18n import Msg
from policies.errors import InvalidRequest

EPSILON_UNIT: Final = 1_000_000  # units per 1.0 of epsilon
DELTA_UNIT: Final = 1_000_000_000_000  # units per 1.0 of delta
#: The largest ε anyone may ask for or grant at once; larger is no privacy at all.
MAX_EPSILON: Final = 100.0


def epsilon_units(value: float) -> int:
    """ε as exact millionths; refuses values that are not finite, negative, or too large."""
    if not math.isfinite(value) or value < 0 or value > MAX_EPSILON:
        raise InvalidRequest(
            Msg(
                "epsilon must be a number between 0 and {max_epsilon}",
                max_epsilon=f"{MAX_EPSILON:g}",
            )
        )
    return round(value * EPSILON_UNIT)


def delta_units(value: float) -> int:
    """δ as exact units of 10⁻¹²; refuses values that are not finite or not in [0, 1)."""
    if not math.isfinite(value) or not 0 <= value < 1:
        raise InvalidRequest(Msg("delta must be a number in [0, 1)"))
    return round(value * DELTA_UNIT)


def ledger_epsilon(units: int) -> float:
    """ε of a ledger entry, or of a net sum of entries, as a float: unlike a budget it may
    be negative (a refund, or a period that holds a refund but not its debit)."""
    return units / EPSILON_UNIT


@dataclass(frozen=True, slots=True)
class Budget:
    """An exact (ε, δ) amount in the ledger's integer units; immutable, never negative.

    ``a + b`` adds (sequential composition), ``a - b`` takes away (``ValueError`` if ``b``
    does not fit in ``a``), ``a <= b`` (:meth:`fits_within`) says whether ``a`` fits in
    ``b`` in both ε and δ: a partial order, so there is no ``<``.
    """

    epsilon_units: int = 0
    delta_units: int = 0

    def __post_init__(self) -> None:
        for name in ("epsilon_units", "delta_units"):
            value = getattr(self, name)
            # bool is an int too, and True units would be a bug somewhere.
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"a budget's {name} must be a non-negative int")

    @classmethod
    def from_floats(cls, epsilon: float, delta: float = 0.0) -> Budget:
        """The budget of ``epsilon`` and ``delta`` as people write them, rounded to the
        nearest unit; :class:`InvalidRequest` (with the message the API shows) for a
        value that is not finite, negative, or out of range."""
        return cls(epsilon_units(epsilon), delta_units(delta))

    @property
    def epsilon(self) -> float:
        """ε as a float (what the API, CLI and console show)."""
        return self.epsilon_units / EPSILON_UNIT

    @property
    def delta(self) -> float:
        """δ as a float."""
        return self.delta_units / DELTA_UNIT

    @property
    def epsilon_text(self) -> str:
        """ε as messages write it (``:g``: ``0.25``, ``1e-06``)."""
        return f"{self.epsilon:g}"

    @property
    def delta_text(self) -> str:
        """δ as messages write it (``:g``)."""
        return f"{self.delta:g}"

    def __bool__(self) -> bool:
        """Whether this is any budget at all (a free job's cost is falsy)."""
        return bool(self.epsilon_units or self.delta_units)

    def __add__(self, other: Budget) -> Budget:
        if not isinstance(other, Budget):
            return NotImplemented
        return Budget(
            self.epsilon_units + other.epsilon_units, self.delta_units + other.delta_units
        )

    def __sub__(self, other: Budget) -> Budget:
        if not isinstance(other, Budget):
            return NotImplemented
        if not other.fits_within(self):
            raise ValueError("cannot take away more budget than there is")
        return Budget(
            self.epsilon_units - other.epsilon_units, self.delta_units - other.delta_units
        )

    def fits_within(self, limit: Budget) -> bool:
        """Whether this amount fits in ``limit``, in ε and in δ."""
        return self.epsilon_units <= limit.epsilon_units and self.delta_units <= limit.delta_units

    def __le__(self, other: Budget) -> bool:
        if not isinstance(other, Budget):
            return NotImplemented
        return self.fits_within(other)

    def describe(self) -> dict[str, float]:
        """``{"epsilon": …, "delta": …}`` as floats, as the API and the audit log show it."""
        return {"epsilon": self.epsilon, "delta": self.delta}


#: No budget: the cost of a free job, what an unused grant has spent.
ZERO: Final = Budget()


def summary(total: Budget, spent: Budget) -> dict[str, float]:
    """A limit and what was spent of it, as the API shows a grant's budget or a dataset's
    cap: ``epsilon``, ``delta``, ``epsilon_spent``, ``delta_spent``, ``epsilon_remaining``,
    ``delta_remaining`` (floats, in that order)."""
    left = total - spent
    return {
        "epsilon": total.epsilon,
        "delta": total.delta,
        "epsilon_spent": spent.epsilon,
        "delta_spent": spent.delta,
        "epsilon_remaining": left.epsilon,
        "delta_remaining": left.delta,
    }


__all__ = [
    "DELTA_UNIT",
    "EPSILON_UNIT",
    "MAX_EPSILON",
    "ZERO",
    "Budget",
    "delta_units",
    "epsilon_units",
    "ledger_epsilon",
    "summary",
]
