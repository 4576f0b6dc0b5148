"""Which marked messages lack a translation: the catalog check, and a helper to fill it.

``python -m i18n.check`` prints every untranslated message as ``.po`` entries (to paste
into the right ``i18n/locale/zh_CN/LC_MESSAGES/<area>.po`` and translate) and exits 1
when there is any; ``tests/test_i18n.py`` runs the same check.
"""

from __future__ import annotations

import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract
from jinja2.ext import babel_extract

from i18n.catalog import LANGUAGES, catalog

ROOT = Path(__file__).resolve().parent.parent
#: The code whose messages a reader can see.
SOURCES = ("sandbox", "policies", "analytics", "keys", "i18n", "node")
KEYWORDS = DEFAULT_KEYWORDS | {"Msg": None, "N_": None, "_l": None}
JINJA_OPTIONS = {"trimmed": "true", "extensions": "jinja2.ext.i18n"}


@dataclass(frozen=True)
class Found:
    text: str
    where: str  # path:line


def messages() -> Iterator[Found]:
    """Every marked message in the sources: Python, console templates and scripts."""
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix == ".py":
                method, options = "python", {}
            elif path.suffix == ".html" and "templates" in path.parts:
                method, options = babel_extract, JINJA_OPTIONS  # type: ignore[assignment]
            elif path.suffix == ".js":
                method, options = "javascript", {}
            else:
                continue
            with path.open("rb") as handle:
                for line, text, _comments, _context in extract(
                    method, handle, keywords=KEYWORDS, options=options
                ):
                    for part in text if isinstance(text, tuple) else (text,):
                        if part:
                            yield Found(part, f"{path.relative_to(ROOT)}:{line}")


def fields(text: str) -> set[str]:
    """The ``{placeholders}`` of a template (``str.format`` syntax)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError:
        return {"<malformed>"}


def problems(language: str) -> list[tuple[Found, str]]:
    """(message, what is wrong) for every marked message ``language`` cannot show."""
    table = catalog(language)
    found: list[tuple[Found, str]] = []
    seen: set[str] = set()
    for message in messages():
        if message.text in seen:
            continue
        seen.add(message.text)
        entry = table.get(message.text)
        if entry is None or not entry.string:
            found.append((message, "untranslated"))
            continue
        translated = entry.string if isinstance(entry.string, str) else entry.string[0]
        if fields(translated) != fields(message.text):
            found.append((message, "placeholders differ"))
    return found


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def main() -> int:
    status = 0
    for language in LANGUAGES[1:]:
        for message, what in problems(language):
            status = 1
            print(f"#: {message.where}  ({language}: {what})")
            print(f"msgid {_quote(message.text)}")
            print('msgstr ""\n')
    return status


if __name__ == "__main__":
    sys.exit(main())
