"""Messages that can be shown in the reader's language (English and Simplified Chinese).

Domain code writes English and marks it: ``Msg("unknown column {column}", column=name)``
is a ``str`` (the English sentence, so logs, ``str(exc)`` and tests read as before) that
remembers its template and parameters. The edges (API, console, CLI) translate it for the
reader with :func:`i18n.catalog.translate`. This module has no dependencies, so every
package of Veil may import it; Babel is only used by :mod:`i18n.catalog`.

Rules for a message (the catalog check in ``tests/test_i18n.py`` enforces the first two):

- the template is a literal string, never an f-string, so it can be extracted;
- a translation has exactly the template's ``{placeholders}``;
- parameters are names, ids and counts, never a data value.
"""

from __future__ import annotations

from typing import Any

__all__ = ["N_", "Msg"]


class Msg(str):
    """An English message that can be translated later: its template and parameters.

    A parameter that is itself a :class:`Msg` is translated too (``kind=Msg("dataset")``).
    """

    template: str
    params: dict[str, Any]

    def __new__(cls, template: str, /, **params: Any) -> Msg:
        text = template.format(**params) if params else template
        self = super().__new__(cls, text)
        self.template = template
        self.params = params
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.template, self.params))


def _rebuild(template: str, params: dict[str, Any]) -> Msg:
    return Msg(template, **params)


def N_(text: str) -> str:
    """Mark ``text`` for the catalog without translating it now (labels in tables)."""
    return text
