"""National data classification of an enterprise's columns (数据分类分级).

Veil's column classes (public, internal, confidential, secret) decide what may leave the
sandbox.  Chinese enterprises must also classify their data by the national standards:

- **level** (分级), GB/T 43697-2024《数据安全技术 数据分类分级规则》: 核心数据, 重要数据, and
  一般数据, which may be graded further (1级 to 4级, from no harm to serious harm to the
  enterprise or individuals if leaked, tampered with or destroyed);
- **domain** (分类), MIIT《工业数据分类分级指南(试行)》: 研发数据域, 生产数据域 (control
  data, operating states, 工艺参数), 运维数据域, 管理数据域, 外部数据域.

Each column's level defaults from its Veil class (``DEFAULT_LEVEL``); the enterprise sets
the domain and may override the level (``docs/classification.md``).  Important and core
data must be confidential or secret in Veil, so that only DP results ever leave.  Stored
in ``datasets.classification`` (migration 0010) as ``{"columns": {name: {"domain": ...,
"level": ...}}, "updated_at": ...}``; only what the enterprise set is stored.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from analytics.column_names import normalise
from analytics.schema import ColumnClass, DatasetSchema
from i18n import N_, Msg
from policies import audit
from policies.capabilities import Capability, require
from policies.errors import InvalidRequest
from policies.principals import Principal
from sandbox.data.datasets import owned_dataset, schema_from_json, visible_dataset
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset


class Domain(enum.StrEnum):
    """The industrial data domains of MIIT's 工业数据分类分级指南(试行)."""

    RESEARCH = "research"  # 研发数据域: design, development and test data
    PRODUCTION = "production"  # 生产数据域: control, operating states, 工艺参数, logs
    OPERATIONS = "operations"  # 运维数据域: logistics, after-sales service
    MANAGEMENT = "management"  # 管理数据域: assets, customers, products, supply chain, statistics
    EXTERNAL = "external"  # 外部数据域: shared with or received from other parties


class Level(enum.StrEnum):
    """GB/T 43697-2024's levels, general data graded 1 to 4."""

    GENERAL_1 = "general-1"
    GENERAL_2 = "general-2"
    GENERAL_3 = "general-3"
    GENERAL_4 = "general-4"
    IMPORTANT = "important"
    CORE = "core"


DOMAIN_LABELS: Final = {
    Domain.RESEARCH: N_("研发数据域 (research and development)"),
    Domain.PRODUCTION: N_("生产数据域 (production, incl. 工艺参数)"),
    Domain.OPERATIONS: N_("运维数据域 (operation and maintenance)"),
    Domain.MANAGEMENT: N_("管理数据域 (management)"),
    Domain.EXTERNAL: N_("外部数据域 (external)"),
}
LEVEL_LABELS: Final = {
    Level.GENERAL_1: N_("一般数据 1级 (general data, level 1)"),
    Level.GENERAL_2: N_("一般数据 2级 (general data, level 2)"),
    Level.GENERAL_3: N_("一般数据 3级 (general data, level 3)"),
    Level.GENERAL_4: N_("一般数据 4级 (general data, level 4)"),
    Level.IMPORTANT: N_("重要数据 (important data)"),
    Level.CORE: N_("核心数据 (core data)"),
}
#: The level a column has until the enterprise sets one.  Secret columns (recipes, 工艺参数)
#: default to important data, so that the catalogue errs on listing; core data is only
#: ever what the enterprise marks.
DEFAULT_LEVEL: Final = {
    ColumnClass.PUBLIC: Level.GENERAL_1,
    ColumnClass.INTERNAL: Level.GENERAL_2,
    ColumnClass.CONFIDENTIAL: Level.GENERAL_3,
    ColumnClass.SECRET: Level.IMPORTANT,
}
#: Important and core data may only be used through DP (or not at all).
_GUARDED: Final = frozenset({ColumnClass.CONFIDENTIAL, ColumnClass.SECRET})
LISTED: Final = frozenset({Level.IMPORTANT, Level.CORE})


@dataclass(frozen=True)
class ColumnClassification:
    """One column's classes: Veil's, the MIIT domain and the GB/T 43697 level."""

    name: str
    column_class: ColumnClass
    domain: Domain | None
    level: Level
    level_set: bool  # False: the default of its Veil class

    @property
    def domain_label(self) -> str | None:
        """The domain's label, to translate (``N_``); None when unset."""
        return DOMAIN_LABELS[self.domain] if self.domain else None

    @property
    def level_label(self) -> str:
        return LEVEL_LABELS[self.level]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": str(self.column_class),
            "domain": str(self.domain) if self.domain else None,
            "level": str(self.level),
            "level_source": "enterprise" if self.level_set else "default",
        }


def columns_of(dataset: Dataset) -> list[ColumnClassification]:
    """Every declared column of ``dataset`` with its domain and level (defaults filled)."""
    schema = schema_from_json(dataset.declaration)
    stored = (dataset.classification or {}).get("columns", {})
    found = []
    for spec in schema.columns:
        entry = stored.get(spec.name, {})
        level = entry.get("level")
        found.append(
            ColumnClassification(
                spec.name,
                spec.column_class,
                Domain(entry["domain"]) if entry.get("domain") else None,
                Level(level) if level else DEFAULT_LEVEL[spec.column_class],
                level is not None,
            )
        )
    return found


def visible_columns(veil: Veil, caller: Principal, dataset_id: str) -> list[ColumnClassification]:
    """The classification of every column, for its owner and for a provider whose grant
    names the dataset (like the catalog's schema, tier 0: names and classes, no data)."""
    require(caller, Capability.READ_DATASETS)
    return columns_of(visible_dataset(veil, caller, dataset_id))


def parse_columns(
    schema: DatasetSchema, given: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, str]]:
    """The stored form of ``given`` ({column: {"domain": ..., "level": ...}}), checked:
    declared columns, known domains and levels, important/core only on guarded columns."""
    problems: list[dict[str, Any]] = []
    stored: dict[str, dict[str, str]] = {}
    for given_name, entry in given.items():
        name = normalise(given_name)
        if name not in schema.names:
            problems.append({"column": name, "expected": Msg("a declared column")})
            continue
        out: dict[str, str] = {}
        domain, level = entry.get("domain") or None, entry.get("level") or None
        if domain is not None:
            if domain not in {str(d) for d in Domain}:
                choices = ", ".join(str(d) for d in Domain)
                problems.append({"column": name, "expected": Msg("a domain: {c}", c=choices)})
            else:
                out["domain"] = domain
        if level is not None:
            if level not in {str(v) for v in Level}:
                choices = ", ".join(str(v) for v in Level)
                problems.append({"column": name, "expected": Msg("a level: {c}", c=choices)})
            elif Level(level) in LISTED and schema.column(name).column_class not in _GUARDED:
                problems.append(
                    {
                        "column": name,
                        "expected": Msg(
                            "the class confidential or secret for important or core data "
                            "(change the column's class, or choose a general-data level)"
                        ),
                    }
                )
            else:
                out["level"] = level
        if out:
            stored[name] = out
    if problems:
        invalid = InvalidRequest(Msg("the classification needs a correction"))
        invalid.problems = problems  # type: ignore[attr-defined]
        raise invalid
    return stored


def classify(
    veil: Veil,
    enterprise: Principal,
    dataset_id: str,
    given: Mapping[str, Mapping[str, Any]],
    *,
    replace: bool = False,
) -> list[ColumnClassification]:
    """Set the domain and level of some columns (``replace``: of all, the rest to defaults)."""
    require(enterprise, Capability.CLASSIFY_DATA)
    with veil.db.transaction() as session:
        dataset = owned_dataset(session, enterprise, dataset_id)
        schema = schema_from_json(dataset.declaration)
        changes = parse_columns(schema, given)
        columns = {} if replace else dict((dataset.classification or {}).get("columns", {}))
        for name, entry in changes.items():
            columns[name] = {**columns.get(name, {}), **entry}
        now = veil.clock()
        dataset.classification = {"columns": columns, "updated_at": now.isoformat()}
        audit.record(
            session,
            "dataset.classified",
            actor=enterprise,
            tenant_id=enterprise.id,
            resource=f"dataset:{dataset_id}",
            details={"columns": {n: columns.get(n, {}) for n in sorted(changes)}},
        )
        session.flush()
        return columns_of(dataset)
