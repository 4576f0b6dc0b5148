"""The one rule for column names, wherever a name is declared, uploaded or referred to.

A column name is a Unicode identifier: letters of any script (``设备编号``, ``主轴温度``,
``temperature_c``), digits and underscores, not starting with a digit, at most 64
characters once NFC-normalised.  Invisible characters (controls, zero-width and bidi
formatting characters) are refused, since two names that look the same must be the same
name; so is a name mixing Latin, Greek and Cyrillic letters, whose look-alikes (Latin ``a``,
Cyrillic ``\u0430``) would make a confusable twin of another column, and so is one with
full-width Latin letters or digits (U+FF01 to U+FF5E, typed with a Chinese input method),
the twin of a half-width name.

Names are compared in their NFC form: :func:`normalise` is applied to a declaration's names,
an upload's header and every name a query, table, training spec or code request gives.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from i18n import Msg

MAX_LENGTH: Final = 64
#: For JSON Schema documents (ECMA-262 with Unicode property escapes); the parsers apply
#: :func:`column_name_problem`, which also refuses mixed scripts.
COLUMN_PATTERN: Final = r"^[\p{L}\p{Nl}_][\p{L}\p{Nl}\p{Mn}\p{Mc}\p{Nd}\p{Pc}]{0,63}$"
#: Unicode categories never allowed: controls, formatting (zero-width, bidi), surrogates,
#: private use and unassigned code points.
_INVISIBLE: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
#: Scripts whose letters look alike; a name may use at most one of them (Han, kana, digits
#: and ``_`` mix freely with any).
_CONFUSABLE_SCRIPTS: Final = ("LATIN", "GREEK", "CYRILLIC")


def normalise(name: str) -> str:
    """The NFC form of ``name``, the form in which names are stored and compared."""
    return unicodedata.normalize("NFC", name)


def column_name_problem(name: object) -> Msg | None:
    """What is wrong with ``name`` as a column name (a phrase after "expected"), or None.

    The name is checked in its NFC form; the phrase never quotes the name.
    """
    if not isinstance(name, str):
        return Msg("a column name (text)")
    text = normalise(name)
    if any(unicodedata.category(c) in _INVISIBLE for c in text):
        return Msg("a column name without invisible, control or formatting characters")
    if not 1 <= len(text) <= MAX_LENGTH or not text.isidentifier():
        return Msg(
            "a column name of 1 to {limit} letters (any script), digits or underscores, "
            "not starting with a digit",
            limit=MAX_LENGTH,
        )
    if any("\uff01" <= c <= "\uff5e" for c in text):  # an IME's full-width A-z, 0-9, _
        return Msg("a column name with half-width letters and digits (not full-width ones)")
    if len(_scripts(text)) > 1:
        return Msg("a column name whose letters are all Latin, all Greek or all Cyrillic")
    return None


def is_column_name(name: object) -> bool:
    """Whether ``name`` passes the rule (in its NFC form)."""
    return column_name_problem(name) is None


def column_name(name: object) -> str:
    """``name`` in NFC form; ``ValueError`` with the phrase of what was expected otherwise."""
    problem = column_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    assert isinstance(name, str)
    return normalise(name)


def _scripts(text: str) -> set[str]:
    found = set()
    for char in text:
        if char.isalpha():
            label = unicodedata.name(char, "").split(" ", 1)[0]
            if label in _CONFUSABLE_SCRIPTS:
                found.add(label)
    return found
