"""The rule every figure of the bureau's tables passes: at least five enterprises, and the
cell-key perturbation, so that no table, and no combination of tables, isolates one.

The privacy unit is the **enterprise**.  A figure is computed over a set of enterprises
(a category's, or all of them, in a month or not) from what each contributes: 1 for a
count of enterprises ("with datasets"), a number for a sum (datasets, jobs, ε spent).

1. **Threshold.**  Fewer than :data:`MIN_ENTERPRISES` enterprises contributing (a count
   below 5, a sum with fewer than 5 non-zero contributions): the cell is *suppressed*,
   shown as suppressed, never as 0 or as its value.
2. **Dominance** (sums): the two largest contributions over 90% of the sum (ACRO's
   nk-rule, ``analytics.sdc.SdcRules``): suppressed.
3. **Perturbation** (``analytics.cellkey``, as tier 2): each enterprise has a record key,
   derived from the programme's secret (:class:`~sandbox.store.programme_models.
   ProgrammeSecret`) and the figure's label (table, figure, month); a cell's key is the
   sum of its enterprises' record keys.  A count is perturbed by the p-table (at most
   ±2, never below 5); a sum by less than twice its largest enterprise contribution.
   The same enterprises in the same figure always get the same perturbation, whichever
   category, table or request shows them (asking again gains nothing), and two cells
   that differ by one enterprise get unrelated perturbations, so that subtracting a total
   and the other categories' cells leaves the missing enterprise's contribution with the
   noise of every cell used.

A mean ("per enterprise") is a perturbed sum over a perturbed count.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from analytics.cellkey import cell_key, perturb_count, perturb_sum
from analytics.sdc import SdcRules
from sandbox.store.programme_models import ProgrammeSecret

#: A cell of the bureau's tables counts at least this many distinct enterprises.
MIN_ENTERPRISES: Final = 5
#: ACRO's nk-dominance rule, as tier 2 applies it.
DOMINANCE_N: Final = SdcRules().nk_n
DOMINANCE_K: Final = SdcRules().nk_k
_SECRET_NAME: Final = "record-keys"  # noqa: S105 - the row's name, not a secret
_KEY_LABEL: Final = b"veil programme record keys v1"
_LANE: Final = 2**32


@dataclass(frozen=True)
class Cell:
    """A released figure: its value, or None with ``suppressed`` set."""

    value: float | None
    suppressed: bool = False

    @classmethod
    def hidden(cls) -> Cell:
        return cls(None, True)


def load_secret(session: Session) -> bytes:
    """The programme's record-key secret (migration 0016 makes it; made here only if it
    was lost, in its own savepoint, so that two processes making it keep the first)."""
    found = session.get(ProgrammeSecret, _SECRET_NAME)
    if found is None:
        try:
            with session.begin_nested():
                session.add(ProgrammeSecret(name=_SECRET_NAME, secret=secrets.token_hex(32)))
        except IntegrityError:
            pass
        found = session.get(ProgrammeSecret, _SECRET_NAME)
        assert found is not None
    return bytes.fromhex(found.secret)


class Protector:
    """Releases the figures of one request's tables under the rule above."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.digest(secret, _KEY_LABEL, "sha256")
        # An enterprise is in a category's row and in the total: its key is made once.
        self._records: dict[tuple[str, str], int] = {}

    def _record_key(self, label: str, enterprise_id: str) -> int:
        found = self._records.get((label, enterprise_id))
        if found is None:
            message = label.encode() + b"\0" + enterprise_id.encode()
            found = int.from_bytes(hmac.digest(self._key, message, "sha256")[:8], "big")
            self._records[(label, enterprise_id)] = found
        return found

    def _cell_key(self, label: str, enterprises: list[str]) -> int:
        high = low = 0
        for enterprise_id in enterprises:
            record = self._record_key(label, enterprise_id)
            high += record >> 32
            low += record & (_LANE - 1)
        return cell_key(high, low)

    def count(self, label: str, members: set[str]) -> Cell:
        """How many ``members`` (enterprises) there are, perturbed; suppressed below five."""
        if len(members) < MIN_ENTERPRISES:
            return Cell.hidden()
        key = self._cell_key(label, sorted(members))
        return Cell(perturb_count(len(members), 1, key, MIN_ENTERPRISES))

    def total(self, label: str, contributions: Mapping[str, float], *, whole: bool) -> Cell:
        """The sum of the enterprises' ``contributions``, perturbed (rounded to a whole
        number when ``whole``); suppressed below five contributors or when dominated."""
        given = {e: v for e, v in contributions.items() if v != 0}
        if len(given) < MIN_ENTERPRISES:
            return Cell.hidden()
        sizes = sorted((abs(v) for v in given.values()), reverse=True)
        if sum(sizes[:DOMINANCE_N]) > DOMINANCE_K * sum(sizes):
            return Cell.hidden()
        key = self._cell_key(label, sorted(given))
        value = perturb_sum(sum(given.values()), sizes[0], key, "value", 1.0)
        value = max(0.0, value)  # every contribution here is positive
        return Cell(float(round(value)) if whole else round(value, 3))


def ratio(numerator: Cell, denominator: Cell) -> Cell:
    """A mean from released figures only (suppressed if either is)."""
    if numerator.value is None or denominator.value is None or denominator.value <= 0:
        return Cell.hidden()
    return Cell(round(numerator.value / denominator.value, 2))


def share(part: Cell, whole: Cell) -> Cell:
    """A share (0 to 1, three decimals) from released figures only: ``part`` over ``whole``,
    each perturbed on its own, so a perturbed part above its whole is shown as 1."""
    if part.value is None or whole.value is None or whole.value <= 0:
        return Cell.hidden()
    return Cell(round(min(1.0, part.value / whole.value), 3))
