"""The enterprise pages' forms: read them (uploads in memory), detect columns, build requests.

Uploads are parsed here rather than by Starlette, whose form parser spools files
over 1 MiB to a temporary file: a dataset's plaintext must never touch the disk
(``docs/datasets.md``).  Every check raises :class:`InvalidRequest` in plain words
with the column it is about, and never quotes a value of the data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fastapi import Request

from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema, PrivacyUnit
from i18n import Msg
from i18n.catalog import gettext
from policies.errors import InvalidRequest
from policies.grants import Grant, GrantChange, GrantTerms
from sandbox.console.timezone import current_zone, current_zone_name

#: How much of a chosen file the page's script sends for detection (CSV; Parquet is sent whole).
SAMPLE_BYTES: Final = 1 << 20
_SAMPLE_ROWS: Final = 10_000
#: A text column with at most this many distinct values (each repeated) looks like a category.
_CATEGORY_LIMIT: Final = 50
_MAX_FIELDS: Final = 5_000
_BOOLEANS: Final = frozenset({"true", "false", "yes", "no"})
MINUTE_FORMAT: Final = "%Y-%m-%dT%H:%M"


class Fields:
    """A form's text fields: each name with all its values, in order."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in items:
            self._values.setdefault(key, []).append(value)

    def one(self, name: str, default: str = "") -> str:
        """The first value of ``name``, stripped; ``default`` when absent."""
        values = self._values.get(name)
        return values[0].strip() if values else default

    def all(self, name: str) -> list[str]:
        return [v.strip() for v in self._values.get(name, []) if v.strip()]

    def has(self, name: str) -> bool:
        return name in self._values


async def form_fields(request: Request) -> Fields:
    """A URL-encoded form (the console's small forms: no files, so nothing is spooled)."""
    form = await request.form()
    return Fields((k, v) for k, v in form.multi_items() if isinstance(v, str))


def number(value: float | None) -> str:
    """A number as an input shows it: ``20``, ``0.5``; empty for none."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ---------------------------------------------------------------- the declaration


@dataclass(frozen=True)
class Declaration:
    name: str
    schema: DatasetSchema
    epsilon_cap: float | None
    delta_cap: float | None
    #: Per column the MIIT domain and GB/T 43697 level chosen (sandbox.data.classification).
    classification: dict[str, dict[str, str]] = field(default_factory=dict)


def declaration(fields: Fields) -> Declaration:
    """The dataset declaration the upload form describes (one fieldset per column)."""
    if not fields.has("columns"):
        raise InvalidRequest(
            Msg("choose a file first: Veil detects its columns for you to classify")
        )
    problems: list[dict[str, Any]] = []
    name = fields.one("name")
    if not 1 <= len(name) <= 200:
        problems.append({"field": "name", "expected": Msg("a dataset name of 1-200 characters")})
    count = parse_int(fields.one("columns"), Msg("the number of columns"), 1, 500)
    columns = [_column(fields, i, problems) for i in range(count)]
    id_column = fields.one("id_column") or None
    per_id = parse_int(fields.one("max_rows_per_id", "1"), Msg("rows per individual"), 1, 1000)
    if problems:
        invalid = InvalidRequest(Msg("some fields need a correction before the upload"))
        invalid.problems = problems  # type: ignore[attr-defined]
        raise invalid
    schema = DatasetSchema(tuple(c for c in columns if c), PrivacyUnit(id_column, per_id))
    epsilon_cap = (
        parse_float(fields.one("epsilon_cap"), Msg("the ε cap"))
        if fields.one("epsilon_cap")
        else None
    )
    delta_cap = (
        parse_float(fields.one("delta_cap"), Msg("the δ cap")) if fields.one("delta_cap") else None
    )
    national = {}
    for i, column in enumerate(columns):
        chosen = {k: fields.one(f"col-{i}-{k}") for k in ("domain", "level")}
        if column is not None and any(chosen.values()):
            national[column.name] = {k: v for k, v in chosen.items() if v}
    return Declaration(name, schema, epsilon_cap, delta_cap, national)


def _column(fields: Fields, i: int, problems: list[dict[str, Any]]) -> ColumnSpec | None:
    name = fields.one(f"col-{i}-name")
    try:
        kind = ColumnType(fields.one(f"col-{i}-type"))
        klass = ColumnClass(fields.one(f"col-{i}-class"))
    except ValueError:
        expected = Msg("a type and a class chosen from the lists")
        problems.append({"column": name, "expected": expected})
        return None
    lower = upper = None
    if kind in (ColumnType.INTEGER, ColumnType.FLOAT):
        try:
            lower = parse_float(fields.one(f"col-{i}-lower"), "")
            upper = parse_float(fields.one(f"col-{i}-upper"), "")
        except InvalidRequest:
            expected = Msg("a lowest and a highest value (numbers)")
            problems.append({"column": name, "expected": expected})
    categories = None
    if kind is ColumnType.STRING:
        text = fields.one(f"col-{i}-categories")
        categories = tuple(c.strip() for c in text.split(",") if c.strip()) or None
    nullable = fields.has(f"col-{i}-nullable")
    return ColumnSpec(name, kind, klass, lower, upper, categories, nullable)


# ---------------------------------------------------------------- values


def parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(Msg("{what}: enter a number, such as 0.5", what=what)) from None
    if not math.isfinite(value):
        raise InvalidRequest(Msg("{what}: enter a finite number", what=what))
    return value


def parse_int(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(_whole(what, low, high)) from None
    if not low <= value <= high:
        raise InvalidRequest(_whole(what, low, high))
    return value


def _whole(what: str, low: int, high: int) -> Msg:
    return Msg("{what}: enter a whole number from {low} to {high}", what=what, low=low, high=high)


def parse_minute(text: str, what: str) -> datetime:
    """A ``datetime-local`` value, read in the reader's time zone (the pages name it next to
    each such field), as UTC."""
    zone = current_zone()
    try:
        local = datetime.strptime(text, MINUTE_FORMAT).replace(tzinfo=zone)
    except ValueError:
        raise InvalidRequest(
            Msg(
                "{what}: enter a date and time ({zone}), such as 2027-01-31 18:00",
                what=what,
                zone=current_zone_name(),
            )
        ) from None
    return local.astimezone(UTC)


def minute(value: datetime) -> str:
    """A moment as a ``datetime-local`` field shows it, in the reader's time zone."""
    return value.astimezone(current_zone()).strftime(MINUTE_FORMAT)


def split_list(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


# ---------------------------------------------------------------- grants


def grant_terms(fields: Fields, now: datetime) -> GrantTerms:
    """The terms of the "New grant" form."""
    if not fields.one("provider_id"):
        raise InvalidRequest(Msg("choose the provider to grant access to"))
    try:
        tiers = tuple(int(t) for t in fields.all("tiers"))
    except ValueError:
        raise InvalidRequest(Msg("tiers: choose from the tiers listed")) from None
    min_group = fields.one("min_group_size")
    return GrantTerms(
        provider_id=fields.one("provider_id"),
        dataset_ids=tuple(fields.all("dataset_ids")),
        columns=tuple(fields.all("columns")),
        tiers=tiers,
        purposes=tuple(split_list(fields.one("purposes"))),
        valid_from=now,
        valid_until=parse_minute(fields.one("valid_until"), Msg("valid until")),
        epsilon=parse_float(fields.one("epsilon"), Msg("ε budget")),
        delta=parse_float(fields.one("delta", "0") or "0", Msg("δ budget")),
        min_group_size=(
            parse_int(min_group, Msg("minimum group size"), 1, 10**6) if min_group else None
        ),
    )


def grant_form(grant: Grant) -> Fields:
    """A grant's terms as its "Change" form shows them."""
    budget = grant.budget()
    items = [(name, str(v)) for name in ("columns", "tiers") for v in getattr(grant, name)]
    items += [
        ("purposes", ", ".join(grant.purposes)),
        ("epsilon", number(budget["epsilon"])),
        ("delta", number(budget["delta"])),
        ("valid_until", minute(grant.valid_until)),
        ("min_group_size", str(grant.min_group_size)),
    ]
    return Fields(items)


def grant_change(fields: Fields, grant: Grant) -> GrantChange:
    """What the "Change" form changes: only fields that differ from the grant as shown."""
    shown = grant_form(grant)

    def changed(name: str) -> bool:
        return fields.one(name) != shown.one(name)

    def listed(name: str, values: list[str]) -> tuple[str, ...] | None:
        return tuple(values) if set(values) != set(shown.all(name)) else None

    purposes = split_list(fields.one("purposes"))
    try:
        tiers = listed("tiers", fields.all("tiers"))
        tier_values = tuple(int(t) for t in tiers) if tiers is not None else None
    except ValueError:
        raise InvalidRequest(Msg("tiers: choose from the tiers listed")) from None
    return GrantChange(
        columns=listed("columns", fields.all("columns")),
        tiers=tier_values,
        purposes=tuple(purposes) if set(purposes) != set(grant.purposes) else None,
        epsilon=parse_float(fields.one("epsilon"), Msg("ε budget")) if changed("epsilon") else None,
        delta=parse_float(fields.one("delta"), Msg("δ budget")) if changed("delta") else None,
        valid_until=(
            parse_minute(fields.one("valid_until"), Msg("valid until"))
            if changed("valid_until")
            else None
        ),
        min_group_size=(
            parse_int(fields.one("min_group_size"), Msg("minimum group size"), 1, 10**6)
            if changed("min_group_size")
            else None
        ),
    )


def receipt_period(fields: Fields, now: datetime) -> tuple[datetime, datetime]:
    """``since`` (start of that UTC day) and ``until`` (end of that day, at most now)."""
    until = now
    if fields.one("until"):
        until = min(now, _day(fields.one("until"), Msg("until")) + timedelta(days=1))
    since = (
        _day(fields.one("since"), Msg("since"))
        if fields.one("since")
        else until - timedelta(days=30)
    )
    return since, until


def _day(text: str, what: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequest(Msg("{what}: enter a date, such as 2026-01-31", what=what)) from None


def shown_json(value: Any, limit: int = 4000) -> str:
    """A JSON value as a reviewer reads it: indented, cut after ``limit`` characters."""
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "\n… " + gettext("(cut)")
