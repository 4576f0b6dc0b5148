"""Catalogs, the reader's language, and translating a message for them.

Catalogs are gettext ``.po`` files under ``i18n/locale/<locale>/LC_MESSAGES/``; every
file of a locale is merged into one table (each area of Veil keeps its own file:
``console.po``, ``api.po``, ``cli.po``…). English is the source language and needs no
catalog. ``tests/test_i18n.py`` fails when a marked message has no translation.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from i18n import Msg

#: The languages Veil speaks, as BCP 47 tags; the first is the default.
LANGUAGES = ("en", "zh-CN")
DEFAULT = "en"
#: Where the catalogs are; one directory per non-English language (gettext's names).
LOCALE_DIR = Path(__file__).parent / "locale"
_GETTEXT_NAMES = {"zh-CN": "zh_CN"}

_current: ContextVar[str] = ContextVar("veil_language", default=DEFAULT)


def normalize(tag: str | None) -> str | None:
    """The supported language a tag or locale name means, or None.

    ``zh``, ``zh-CN``, ``zh_CN.UTF-8``, ``zh-Hans``, ``zh-TW`` all mean zh-CN (the only
    Chinese Veil has; closer to a Chinese reader than English); ``en-GB``, ``C`` and
    ``POSIX`` mean en.
    """
    if not tag:
        return None
    tag = tag.strip().split(".")[0].split("@")[0].replace("_", "-").lower()
    if tag in ("c", "posix"):
        return "en"
    primary = tag.split("-")[0]
    if primary == "zh":
        return "zh-CN"
    if primary == "en":
        return "en"
    return None


def negotiate(accept_language: str | None) -> str:
    """The language to answer in for an ``Accept-Language`` header (RFC 9110 q-values)."""
    choices: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        language = normalize(tag)
        if language is not None and quality > 0:
            choices.append((-quality, position, language))
    return min(choices)[2] if choices else DEFAULT


def from_environment(environ: dict[str, str] | None = None) -> str:
    """The language of a terminal: ``VEIL_LANG``, then gettext's ``LANGUAGE``,
    ``LC_ALL``, ``LC_MESSAGES`` and ``LANG``, in that order."""
    env = os.environ if environ is None else environ
    for name in ("VEIL_LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name)
        if value:
            language = normalize(value.split(":")[0])
            if language is not None:
                return language
    return DEFAULT


def babel_locale(language: str) -> Locale:
    """Babel's locale for number, date and time formats."""
    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")


def catalog(language: str) -> Catalog:
    """Every ``.po`` file of ``language`` merged into one catalog (empty for English)."""
    merged = Catalog(locale=_GETTEXT_NAMES.get(language, "en"))
    name = _GETTEXT_NAMES.get(language)
    if name is None:
        return merged
    for path in sorted((LOCALE_DIR / name / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as handle:
            part = read_po(handle, locale=name)
        for message in part:
            if message.id and message.string and not message.fuzzy:
                merged.add(message.id, message.string)
    return merged


@functools.cache
def translations(language: str) -> NullTranslations:
    """gettext translations for ``language``, built from the ``.po`` files at first use."""
    if language not in _GETTEXT_NAMES:
        return NullTranslations()
    buffer = io.BytesIO()
    write_mo(buffer, catalog(language))
    buffer.seek(0)
    return Translations(buffer)


def gettext(text: str, language: str | None = None) -> str:
    return translations(language or _current.get()).gettext(text)


def ngettext(singular: str, plural: str, n: int, language: str | None = None) -> str:
    return translations(language or _current.get()).ngettext(singular, plural, n)


def translate(value: Any, language: str | None = None) -> str:
    """``value`` for a reader of ``language`` (default: the current one).

    A :class:`Msg` is translated by its template, then filled with its parameters (a
    parameter that is a :class:`Msg` is translated as well). A plain string is looked up
    as a whole (a literal message); anything else is ``str(value)``.
    """
    language = language or _current.get()
    if isinstance(value, Msg):
        template = gettext(value.template, language)
        params = {
            k: translate(v, language) if isinstance(v, Msg) else v for k, v in value.params.items()
        }
        try:
            return template.format(**params) if params else template
        except (KeyError, IndexError, ValueError):  # a broken translation: keep the English
            return str(value)
    if isinstance(value, str):
        return gettext(value, language) if value else value
    return str(value)


def current() -> str:
    """The language of the request or command being served."""
    return _current.get()


@contextlib.contextmanager
def use(language: str) -> Iterator[None]:
    """Serve in ``language`` within this block (this thread or task only)."""
    token = _current.set(language if language in LANGUAGES else DEFAULT)
    try:
        yield
    finally:
        _current.reset(token)


def set_language(language: str) -> None:
    """Serve in ``language`` from now on in this context (a CLI run)."""
    _current.set(language if language in LANGUAGES else DEFAULT)


def _(text: str) -> str:
    """Translate a literal ``text`` into the current language (the gettext idiom)."""
    return gettext(text)
