"""The words the console shows for Veil's codes: statuses, classes, types, roles, tiers.

Codes (``released``, ``confidential``, ``security_officer``) stay codes in the database,
the API and the forms' values; pages show the word of this table in the reader's
language (the ``label`` filter of :mod:`sandbox.console.render`).  A code that is not
here is shown as it is.
"""

from __future__ import annotations

from typing import Final

from i18n import N_
from policies.tiers import Tier

LABELS: Final[dict[str, str]] = {
    # Jobs (sandbox.store.models.JobStatus), code reviews (CodeStatus), output checks.
    "denied": N_("denied"),
    "queued": N_("queued"),
    "running": N_("running"),
    "released": N_("released"),
    "failed": N_("failed"),
    "held": N_("held"),
    "pending": N_("pending"),
    "approved": N_("approved"),
    "pass": N_("pass"),
    "blocked": N_("blocked"),
    "suppressed": N_("suppressed"),
    "ok": N_("ok"),
    # Grants, tokens, principals.
    "active": N_("active"),
    "revoked": N_("revoked"),
    "expired": N_("expired"),
    "not yet valid": N_("not yet valid"),
    "suspended": N_("suspended"),
    # Roles.
    "operator": N_("operator"),
    "enterprise": N_("enterprise"),
    "provider": N_("provider"),
    "security_officer": N_("security officer"),
    "bureau": N_("industry bureau"),
    "assessor": N_("assessor"),
    # Size bands of enterprises (sandbox.accounts.categories.SizeBand).
    "micro": N_("micro"),
    "small": N_("small"),
    "medium": N_("medium"),
    "large": N_("large"),
    # Column classes and types (analytics.schema).
    "public": N_("public"),
    "internal": N_("internal"),
    "confidential": N_("confidential"),
    "secret": N_("secret"),
    "integer": N_("integer"),
    "float": N_("float"),
    "string": N_("string"),
    "boolean": N_("boolean"),
    # Statistics (analytics.schema.AggregateKind).
    "count": N_("count"),
    "sum": N_("sum"),
    "mean": N_("mean"),
    "quantile": N_("quantile"),
    "median": N_("median"),
    "histogram": N_("histogram"),
    # File formats.
    "csv": "CSV",
    "parquet": "Parquet",
}

#: The tiers of access, as the enterprise grants them.
TIERS: Final[dict[int, str]] = {int(tier): tier.label for tier in Tier}
