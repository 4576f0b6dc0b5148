"""Every command and option of ``veil`` has help, in English and in Chinese.

The whole Click tree is walked, so a command or option added later is covered too: give it
a docstring or ``help=``, and its Chinese in a ``.po`` file (this test prints the entries
to fill in).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest

import sandbox.cli  # noqa: F401 - registers every command on the app
from sandbox.cli import language
from sandbox.cli.app import app

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def in_language() -> Iterator[None]:
    yield
    language.set_language("en")  # the next test reads English


def walk(command: click.Command, path: str = "veil") -> Iterator[tuple[str, str | None]]:
    """(where, help) of ``command``, its parameters and everything under it."""
    yield path, command.help
    for param in command.params:
        yield f"{path} {param.opts[0] if param.opts else param.name}", getattr(param, "help", None)
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, f"{path} {name}")


@pytest.mark.usefixtures("in_language")
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_every_command_and_option_has_help(lang: str) -> None:
    language.set_language("en")
    english = dict(walk(language.build(app)))
    language.set_language(lang)
    shown = list(walk(language.build(app)))
    assert len(shown) > 150  # the whole tree was walked
    missing = [where for where, text in shown if not (text or "").strip()]
    assert not missing, f"no help text on: {', '.join(missing)}"
    if lang == "zh-CN":
        untranslated = [(w, english[w]) for w, text in shown if not CJK.search(text or "")]
        stubs = "\n".join(f'# {where}\nmsgid "{text}"\nmsgstr ""\n' for where, text in untranslated)
        assert not untranslated, f"help without a Chinese translation (add to a .po):\n{stubs}"


@pytest.mark.usefixtures("in_language")
def test_click_and_typer_speak_the_chosen_language(capsys: pytest.CaptureFixture[str]) -> None:
    for lang, words in [
        ("zh-CN", ["用法", "选项", "显示此帮助信息并退出", "（必填）"]),  # noqa: RUF001
        ("en", ["Usage:", "Options", "Show this message and exit.", "[required]"]),
    ]:
        language.set_language(lang)
        command = language.build(app)
        grants = command.commands["grants"].commands["create"]  # type: ignore[attr-defined]
        with click.Context(grants, info_name="create") as ctx:
            grants.get_help(ctx)  # Typer prints Rich help itself
        shown = capsys.readouterr().out
        assert all(word in shown for word in words), shown
