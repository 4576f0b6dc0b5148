"""Errors of the policy layer, shared by the layers above.

The API maps each class to one HTTP status in one table (``sandbox/api/errors.py``).
Messages say what was wrong and how to fix it, and never contain data values. They are
:class:`i18n.Msg` templates, so the API, console and CLI show them in the reader's
language; ``code`` is the stable, machine-readable name of the error (the class's by
default, a more specific one where a caller may act on it, e.g. ``tier_not_granted``).
"""

from __future__ import annotations

import re

from i18n import Msg

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class VeilError(Exception):
    """Base class of domain errors raised by ``policies`` and ``sandbox``."""

    #: The stable code of this class of errors (snake case of the class name by default).
    default_code: str | None = None

    def __init__(self, message: str = "", *args: object, code: str | None = None) -> None:
        super().__init__(message, *args)
        self.code = code or self.default_code or _CAMEL.sub("_", type(self).__name__).lower()

    @property
    def message(self) -> str:
        """The English message (an :class:`i18n.Msg` when it can be translated)."""
        return self.args[0] if self.args and isinstance(self.args[0], str) else str(self)


class InvalidRequest(VeilError):
    """The request is malformed or inconsistent (422)."""


class Unauthenticated(VeilError):
    """No valid credentials (401)."""

    def __init__(
        self, message: str = Msg("a valid API token is required"), *, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)


#: What each kind of thing is called in "… not found" (a Msg, so it is translated).
KINDS = {
    "dataset": Msg("dataset"),
    "job": Msg("job"),
    "provider": Msg("provider"),
    "enterprise": Msg("enterprise"),
    "principal": Msg("principal"),
    "token": Msg("token"),
    "grant": Msg("grant"),
    "commitment letter": Msg("commitment letter"),
    "code request": Msg("code request"),
    "receipt": Msg("receipt"),
    "page": Msg("page"),
    "collaboration": Msg("collaboration"),
    "collaboration run": Msg("collaboration run"),
    "KPI contract": Msg("KPI contract"),
    "KPI verdict": Msg("KPI verdict"),
    "evaluation period": Msg("evaluation period"),
    "scorecard": Msg("scorecard"),
    "exit proposal": Msg("exit proposal"),
    "assessor": Msg("assessor"),
    "data source": Msg("data source"),
}


class NotFound(VeilError):
    """Unknown, or another tenant's: never confirm which (404)."""

    def __init__(self, kind: str, ident: str, *, code: str | None = None) -> None:
        super().__init__(
            Msg("{kind} '{ident}' not found", kind=KINDS.get(kind, kind), ident=ident), code=code
        )
        self.kind = kind


class Forbidden(VeilError):
    """The caller's role may not do this (403)."""


class Denied(VeilError):
    """The policy engine refused a request; ``reasons`` says why (403)."""

    def __init__(
        self, reasons: tuple[str, ...], job_id: str | None = None, *, code: str | None = None
    ) -> None:
        super().__init__(Msg("denied: {reasons}", reasons="; ".join(reasons)), code=code)
        self.reasons = reasons
        self.job_id = job_id


class Conflict(VeilError):
    """The request clashes with the current state (409)."""
