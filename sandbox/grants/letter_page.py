"""A commitment letter's printable page, and reading a letter back from its JSON or its page.

Nothing here needs the server: ``veil letters verify`` reads a file with it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from i18n import Msg
from policies.letter_format import InvalidLetter, dumps


class _LetterJson(HTMLParser):
    """Finds the text of ``<pre id="signed-letter">`` in a letter's page."""

    def __init__(self) -> None:
        super().__init__()
        self.inside, self.text = False, ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.inside = self.inside or (tag == "pre" and ("id", "signed-letter") in attrs)

    def handle_endtag(self, tag: str) -> None:
        self.inside = self.inside and tag != "pre"

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text += data


def load_letter(text: str) -> dict[str, Any]:
    """A letter from its JSON, or from the signed JSON embedded in its page."""
    if text.lstrip().startswith("<"):
        parser = _LetterJson()
        parser.feed(text)
        text = parser.text
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidLetter(Msg("the file is not a commitment letter's JSON (or its page)"))
    return value


@functools.lru_cache(maxsize=1)
def _templates() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sandbox.grants", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _readable_time
    return env


def _readable_time(value: str | None) -> str:
    if value is None:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_html(letter: Mapping[str, Any]) -> str:
    """A self-contained, printable page of the letter (inline CSS, no script), in Chinese
    and English side by side, with the signed JSON at its end."""
    full = {"provider_signature": None, **letter}
    page: str = _templates().get_template("letter.html").render(l=full, signed_json=dumps(letter))
    return page
