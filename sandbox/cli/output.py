"""How the CLI prints: readable tables for people, ``--json`` for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from i18n.catalog import translate

console = Console()
#: Errors and warnings are not wrapped by Rich (the terminal wraps them): a path or a
#: command in them stays whole, to copy.
err_console = Console(stderr=True, soft_wrap=True)
#: Where progress goes under --json: nowhere (a disabled Rich progress still ends a line).
silent_console = Console(quiet=True)


class Output:
    """Prints results either as tables and sentences, or as JSON documents.

    Titles and column names are looked up whole in the catalogs (``cli.po``): a fixed
    title or a field name is shown in the reader's language; JSON keeps the API's names.
    """

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def data(self, value: Any) -> None:
        """Print ``value`` as JSON (scripts) — used by every command in --json mode."""
        console.print_json(json.dumps(value, default=str))

    def table(
        self, title: str, rows: Iterable[dict[str, Any]], columns: Sequence[str], raw: Any = None
    ) -> None:
        rows = list(rows)
        if self.as_json:
            self.data(raw if raw is not None else rows)
            return
        table = Table(title=translate(title), title_justify="left")
        for column in columns:
            table.add_column(translate(column.replace("_", " ")), overflow="fold")
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        console.print(table)

    def record(self, title: str, value: dict[str, Any]) -> None:
        if self.as_json:
            self.data(value)
            return
        table = Table(title=translate(title), title_justify="left", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, item in value.items():
            table.add_row(translate(key.replace("_", " ")), _cell(item))
        console.print(table)

    def say(self, text: str) -> None:
        """A sentence for people (none under --json), in the reader's language."""
        if not self.as_json:
            console.print(translate(text), highlight=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)
