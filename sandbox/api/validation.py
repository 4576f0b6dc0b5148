"""Schema validation problems as sentences in the reader's language, never echoing input.

FastAPI reports a body or parameter that does not match its schema as pydantic errors:
a ``type`` (``greater_than_equal``, ``missing``…), a location, a context (``ge: 0``) and
an English ``msg`` that sometimes quotes the input. Each known ``type`` becomes a
:class:`i18n.Msg` sentence built from the context only (limits, lengths, allowed values
from the schema), so ``budget: must be at least 0`` reads the same in every language and
no value the caller sent comes back; an unknown ``type`` gets a generic sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from i18n import Msg
from i18n.catalog import translate

#: The first element of a location that only says where FastAPI looked.
_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})

Context = Mapping[str, Any]


def _plain(number: Any) -> Any:
    """``0.0`` -> ``0`` (a float bound of a whole number reads as one)."""
    if isinstance(number, float) and number.is_integer():
        return int(number)
    return number


def _limit(key: str) -> Callable[[Context], dict[str, Any]]:
    return lambda ctx: {"limit": _plain(ctx.get(key, "?"))}


_NUMBER = Msg("must be a number")
_WHOLE = Msg("must be a whole number")
_TIME = Msg("must be a date and time in ISO 8601 form, e.g. 2026-01-31T12:00:00Z")
_BOOL = Msg("must be true or false")
_TEXT = Msg("must be text")
_OBJECT = Msg("must be an object of named fields")
_LIST = Msg("must be a list")

# type -> (template, how its parameters come from the context). Templates are literal so
# that the catalog check extracts them; parameters are limits from the schema.
_SENTENCES: dict[str, tuple[str, Callable[[Context], dict[str, Any]] | None]] = {
    "missing": (Msg("is required"), None),
    "extra_forbidden": (Msg("is not a field of this request: remove it"), None),
    "greater_than_equal": (Msg("must be at least {limit}"), _limit("ge")),
    "greater_than": (Msg("must be greater than {limit}"), _limit("gt")),
    "less_than_equal": (Msg("must be at most {limit}"), _limit("le")),
    "less_than": (Msg("must be less than {limit}"), _limit("lt")),
    "multiple_of": (Msg("must be a multiple of {limit}"), _limit("multiple_of")),
    "string_too_short": (Msg("must have at least {limit} characters"), _limit("min_length")),
    "string_too_long": (Msg("must have at most {limit} characters"), _limit("max_length")),
    "too_short": (Msg("must have at least {limit} items"), _limit("min_length")),
    "too_long": (Msg("must have at most {limit} items"), _limit("max_length")),
    "string_pattern_mismatch": (Msg("does not have the expected form"), None),
    "string_type": (_TEXT, None),
    "string_unicode": (_TEXT, None),
    "int_parsing": (_WHOLE, None),
    "int_type": (_WHOLE, None),
    "int_from_float": (_WHOLE, None),
    "int_parsing_size": (Msg("is too large a number"), None),
    "float_parsing": (_NUMBER, None),
    "float_type": (_NUMBER, None),
    "decimal_parsing": (_NUMBER, None),
    "finite_number": (Msg("must be a finite number"), None),
    "bool_parsing": (_BOOL, None),
    "bool_type": (_BOOL, None),
    "enum": (Msg("must be one of {expected}"), lambda ctx: {"expected": ctx.get("expected")}),
    "literal_error": (
        Msg("must be one of {expected}"),
        lambda ctx: {"expected": ctx.get("expected")},
    ),
    "json_invalid": (Msg("is not valid JSON"), None),
    "json_type": (Msg("must be a JSON document"), None),
    "dict_type": (_OBJECT, None),
    "model_type": (_OBJECT, None),
    "model_attributes_type": (_OBJECT, None),
    "list_type": (_LIST, None),
    "tuple_type": (_LIST, None),
    "set_type": (_LIST, None),
    "datetime_parsing": (_TIME, None),
    "datetime_from_date_parsing": (_TIME, None),
    "datetime_type": (_TIME, None),
    "date_parsing": (Msg("must be a date in ISO 8601 form, e.g. 2026-01-31"), None),
    "timezone_aware": (Msg("must include a time zone, e.g. Z or +08:00"), None),
    "uuid_parsing": (Msg("must be a UUID"), None),
    "url_parsing": (Msg("must be a URL"), None),
    "none_required": (Msg("must be null"), None),
    "union_tag_invalid": (
        Msg("has a kind that is not one of {expected}"),
        lambda ctx: {"expected": ctx.get("expected_tags")},
    ),
}
_FALLBACK = Msg("has a value this field does not accept: see the API reference at /docs")


def field_name(location: Sequence[Any]) -> str:
    """``("body", "columns", 0, "name")`` -> ``columns[0].name``; the whole body: ``body``."""
    parts = list(location)
    if len(parts) > 1 and parts[0] in _SOURCES:
        parts = parts[1:]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += ("." if name else "") + str(part)
    return name or "body"


def expected(error: Mapping[str, Any]) -> Msg:
    """What the field should have been, as a sentence (English; a Msg to translate)."""
    kind = str(error.get("type", ""))
    ctx: Context = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        # Our own validators raise ValueError(Msg(...)): their sentence is safe to show.
        # Anything else may quote the input, so it gets the generic sentence.
        cause = ctx.get("error")
        reason = cause.args[0] if isinstance(cause, Exception) and cause.args else None
        return reason if isinstance(reason, Msg) else _FALLBACK
    template, params = _SENTENCES.get(kind, (_FALLBACK, None))
    if params is None:
        return Msg(template)
    try:
        return Msg(template, **params(ctx))
    except (KeyError, IndexError, ValueError):
        return _FALLBACK


def problems(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The 422 body's ``problems``, translated into the current language.

    Each problem has its ``location`` (the dotted path, as before), the ``field`` a reader
    knows, what was ``expected`` and the whole sentence as ``message``.
    """
    found = []
    for error in errors:
        location = error.get("loc", ())
        field = field_name(location)
        sentence = translate(expected(error))
        found.append(
            {
                "location": ".".join(str(p) for p in location),
                "field": field,
                "expected": sentence,
                "message": translate(Msg("{field}: {expected}", field=field, expected=sentence)),
            }
        )
    return found
