"""Translating messages that were stored as English text (a job's denial reasons).

A denial's reasons are kept on the job, in the audit log and in signed receipts as the
English sentences they were when decided: that record must not change with the reader.
The API translates them when it answers. A fresh reason is still an :class:`i18n.Msg`
and translates directly; a stored one has lost its template, so it is recognised: every
template of the catalog is turned into a pattern (its ``{placeholders}`` match any text)
and the most specific one that matches the whole sentence gives the template and its
parameters back. This needs no schema change and works for jobs stored before the
catalogs existed; a sentence that no template matches stays English.
"""

from __future__ import annotations

import functools
import re
import string
from typing import Any

from i18n import Msg
from i18n.catalog import catalog, current, translate


@functools.cache
def _patterns(language: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    """(pattern, template) for every template with placeholders, most literal letters first."""
    found = []
    for message in catalog(language):
        template = message.id
        if not isinstance(template, str) or "{" not in template or not message.string:
            continue
        pattern, literal, names = "", 0, set[str]()
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError:
            continue
        for text, name, spec, conversion in parts:
            pattern += re.escape(text)
            literal += sum(c.isalpha() for c in text)
            if name is None:
                continue
            if spec or conversion or not name.isidentifier() or name in names:
                break  # not a plain {name}: cannot be recognised reliably
            names.add(name)
            pattern += f"(?P<{name}>.+?)"
        else:
            if literal < 3:
                continue  # "{field}: {expected}" would match any sentence with a colon
            found.append((literal, re.compile(pattern + r"\Z", re.DOTALL), template))
    found.sort(key=lambda item: -item[0])
    return tuple((pattern, template) for _, pattern, template in found)


def recognise(text: str, language: str | None = None) -> Msg | str:
    """The :class:`Msg` a stored English sentence was made from, or the text unchanged."""
    if isinstance(text, Msg):
        return text
    for pattern, template in _patterns(language or current()):
        match = pattern.match(text)
        if match:
            return Msg(template, **match.groupdict())
    return text


def translate_stored(value: Any) -> str:
    """``value`` in the current language: a Msg by its template, stored English text by
    the whole sentence or, failing that, by the template it matches."""
    if not isinstance(value, str) or isinstance(value, Msg) or current() == "en":
        return translate(value)
    whole = translate(value)
    if whole != value:
        return whole
    return translate(recognise(value))
