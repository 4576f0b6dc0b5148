"""The tiers of access, in one place: what each number means and which are jobs.

An enterprise grants tiers (``Grant.tiers``, numbers 0 to 5); a provider uses one per
request.  The numbers are part of the API, the CLI and the stored grants and jobs, so
they never change; :class:`Tier` is an ``IntEnum``, equal to (and serialised as) its
number.  The ``…_TIER`` names are the same members under the names older code imports.
"""

from __future__ import annotations

import enum
from typing import Final

from i18n import N_


class Tier(enum.IntEnum):
    """A tier of access; ``label`` is its short name (marked for the catalog)."""

    #: Tier 0: the catalog of declared schemas and rounded row counts (no data).
    CATALOG = 0
    #: Tier 1: synthetic rows generated from the declaration alone (no data).
    MOCK = 1
    #: Tier 2: aggregate tables, checked by statistical disclosure control; costs no ε.
    AGGREGATE = 2
    #: Tier 3: differentially private queries; costs the ε (and δ) they ask for.
    PRIVATE_QUERY = 3
    #: Tier 4: differentially private model training (DP-SGD); costs ε and δ.
    TRAINING = 4
    #: Tier 5: code the enterprise reviewed and approved, its output checked before release.
    CODE = 5

    @property
    def label(self) -> str:
        """The tier's short name, as the console shows it (translate it at the edge)."""
        return _LABELS[self]


_LABELS: Final[dict[Tier, str]] = {
    Tier.CATALOG: N_("catalog"),
    Tier.MOCK: N_("mock data"),
    Tier.AGGREGATE: N_("aggregates (SDC-checked)"),
    Tier.PRIVATE_QUERY: N_("private queries (DP)"),
    Tier.TRAINING: N_("private training (DP)"),
    Tier.CODE: N_("reviewed code"),
}

CATALOG_TIER: Final = Tier.CATALOG
MOCK_TIER: Final = Tier.MOCK
AGGREGATE_TIER: Final = Tier.AGGREGATE
PRIVATE_QUERY_TIER: Final = Tier.PRIVATE_QUERY
TRAINING_TIER: Final = Tier.TRAINING
CODE_TIER: Final = Tier.CODE

#: Every tier a grant may give.
ALL_TIERS: Final = frozenset(Tier)
#: The tiers that are jobs (submitted, decided, debited, run); 0 and 1 are plain reads.
JOB_TIERS: Final = (AGGREGATE_TIER, PRIVATE_QUERY_TIER, TRAINING_TIER, CODE_TIER)
#: Tiers whose releases are differentially private: confidential columns are allowed there.
DP_TIERS: Final = frozenset({PRIVATE_QUERY_TIER, TRAINING_TIER})

__all__ = [
    "AGGREGATE_TIER",
    "ALL_TIERS",
    "CATALOG_TIER",
    "CODE_TIER",
    "DP_TIERS",
    "JOB_TIERS",
    "MOCK_TIER",
    "PRIVATE_QUERY_TIER",
    "TRAINING_TIER",
    "Tier",
]
