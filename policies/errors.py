"""Errors of the policy layer, shared by the layers above.

The API maps each class to one HTTP status in one table (``sandbox/api/errors.py``).
Messages say what was wrong and how to fix it, and never contain data values.
"""

from __future__ import annotations


class VeilError(Exception):
    """Base class of domain errors raised by ``policies`` and ``sandbox``."""


class InvalidRequest(VeilError):
    """The request is malformed or inconsistent (422)."""


class Unauthenticated(VeilError):
    """No valid credentials (401)."""

    def __init__(self, message: str = "a valid API token is required") -> None:
        super().__init__(message)


class NotFound(VeilError):
    """Unknown, or another tenant's: never confirm which (404)."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} '{ident}' not found")


class Forbidden(VeilError):
    """The caller's role may not do this (403)."""


class Denied(VeilError):
    """The policy engine refused a request; ``reasons`` says why (403)."""

    def __init__(self, reasons: tuple[str, ...], job_id: str | None = None) -> None:
        super().__init__("denied: " + "; ".join(reasons))
        self.reasons = reasons
        self.job_id = job_id


class Conflict(VeilError):
    """The request clashes with the current state (409)."""
