"""The query page's SQL form: the text as typed, and what it becomes.

The SQL is handed to the same services as the API's (``sandbox.jobs.sql_jobs.explain``
for a translation, ``sandbox.jobs.submit`` for a preview or a job): nothing here parses
or translates SQL.  Like the API when ``dataset_id`` is left out, the submission names no
dataset: ``FROM`` does.  The form's ``dataset_id`` only says which dataset the page shows
(its purposes and remaining budget).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData

from i18n import Msg
from policies.errors import InvalidRequest
from policies.tiers import PRIVATE_QUERY_TIER
from sandbox.console.provider_forms import check_purpose, privacy_cost
from sandbox.jobs.submit import JobSubmission

#: What a blank SQL form starts from: a count of the chosen dataset's rows.
STARTER = 'SELECT COUNT(*)\nFROM "{name}"'


@dataclass(frozen=True)
class SqlForm:
    """The SQL form's fields, as typed (shown again, unchanged, next to an error)."""

    dataset_id: str
    sql: str = ""
    purpose: str = ""
    epsilon: str = "0.1"
    delta: str = "0"

    @classmethod
    def blank(cls, dataset_id: str, dataset_name: str, purpose: str) -> SqlForm:
        return cls(dataset_id, STARTER.format(name=dataset_name.replace('"', '""')), purpose)

    @classmethod
    def read(cls, form: FormData) -> SqlForm:
        """The fields of a submitted form; never raises (a wrong field is said by submission)."""
        sql = form.get("sql")
        return cls(
            dataset_id=_text(form, "dataset_id"),
            # A form sends a textarea's line breaks as CRLF: the job keeps plain line breaks
            # (and the translation's line and column count them as the provider sees them).
            sql=sql.replace("\r\n", "\n").strip() if isinstance(sql, str) else "",
            purpose=_text(form, "purpose"),
            epsilon=_text(form, "epsilon"),
            delta=_text(form, "delta") or "0",
        )

    def checked_sql(self) -> str:
        """The SQL, if there is some; InvalidRequest saying what to write otherwise (the
        translation says what is wrong with the rest, where, and how to fix it)."""
        if not self.sql:
            raise InvalidRequest(
                Msg("write the query in SQL: one SELECT statement, such as SELECT COUNT(*) FROM …")
            )
        return self.sql

    def submission(self) -> JobSubmission:
        """The tier-3 job this form asks for, as the API builds it from ``sql``."""
        sql = self.checked_sql()
        check_purpose(self.purpose)
        epsilon, delta = privacy_cost(self.epsilon, self.delta)
        return JobSubmission(
            dataset_id="",  # FROM names it (sandbox.jobs.sql_jobs.resolve_dataset)
            purpose=self.purpose,
            query={},
            tier=PRIVATE_QUERY_TIER,
            epsilon=epsilon,
            delta=delta,
            sql=sql,
        )


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


@dataclass(frozen=True)
class TranslationView:
    """What an SQL query translates to: the dataset FROM names and the query document."""

    dataset_id: str
    dataset_name: str
    document: str  # the JSON query document, indented

    @classmethod
    def of(cls, explained: dict[str, Any], names: dict[str, str]) -> TranslationView:
        """``explained`` is :func:`sandbox.jobs.sql_jobs.explain`'s answer."""
        dataset_id = str(explained["dataset_id"])
        document = json.dumps(explained["query"], indent=2, ensure_ascii=False)
        return cls(dataset_id, names.get(dataset_id, dataset_id), document)
