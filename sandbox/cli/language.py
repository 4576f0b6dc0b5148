"""The language of a ``veil`` run, chosen before any help is shown, and the command tree
in that language.

Help texts are the English strings of the commands (their docstrings, ``help=``) and are
looked up whole in the catalogs (``cli.po``) when the tree is built for a language, so the
commands themselves need no markers. Click and Typer write their own texts ("Usage:",
"Options", "Missing argument …") through the standard ``gettext`` module: those calls are
routed to Veil's catalogs, which hold Click's and Typer's messages too.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping, Sequence

import click
import typer
from typer.core import TyperGroup

from i18n import N_, Msg
from i18n.catalog import LANGUAGES, from_environment, gettext, ngettext, normalize, translate
from i18n.catalog import set_language as _set_language
from sandbox.cli.errors import USAGE, CliError, spaced

#: Click's and Typer's modules that call ``gettext`` (imported as ``_``) and ``ngettext``.
_GETTEXT_MODULES = (
    "click.core",
    "click.decorators",
    "click.exceptions",
    "click.formatting",
    "click.parser",
    "click.termui",
    "click.types",
    "typer.core",
    "typer.rich_utils",
)
#: Typer's texts computed when it is imported: kept in English, set per language.
_TYPER_TEXTS = (
    "DEPRECATED_STRING",
    "DEFAULT_STRING",
    "ENVVAR_STRING",
    "REQUIRED_LONG_STRING",
    "ARGUMENTS_PANEL_TITLE",
    "OPTIONS_PANEL_TITLE",
    "COMMANDS_PANEL_TITLE",
    "ERRORS_PANEL_TITLE",
    "ABORTED_TEXT",
    "RICH_HELP",
)
_ENGLISH: dict[str, str] = {}
#: Help for an argument declared without one, by its name: the ids every command takes.
ARGUMENT_HELP = {
    "dataset_id": N_("The dataset's id (ds_…)."),
    "grant_id": N_("The grant's id (gr_…)."),
    "job_id": N_("The job's id (job_…)."),
    "code_id": N_("The code request's id (code_…)."),
    "provider_id": N_("The provider's id."),
    "principal_id": N_("The id of the enterprise, provider, officer or operator."),
    "token_id": N_("The token's id (tok_…; not its secret)."),
    "name": N_("Its name, as people will read it."),
    "file": N_("The file (CSV or Parquet)."),
}


def choose(args: Sequence[str], environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """The language of this run and the arguments without ``--lang``.

    ``--lang X`` (or ``--lang=X``) anywhere before ``--`` wins; then ``VEIL_LANG``,
    ``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``. An unsupported ``--lang`` is a
    usage error.
    """
    rest: list[str] = []
    chosen: str | None = None
    items = iter(args)
    for arg in items:
        if arg == "--":
            rest.append(arg)
            rest.extend(items)
            break
        if arg == "--lang" or arg.startswith("--lang="):
            value = arg.partition("=")[2] if "=" in arg else next(items, "")
            chosen = normalize(value)
            if chosen is None:
                raise CliError(
                    Msg(
                        "unknown language '{value}' for --lang: use one of {languages}",
                        value=value,
                        languages=", ".join(LANGUAGES),
                    ),
                    code="usage",
                    status=USAGE,
                )
            continue
        rest.append(arg)
    return chosen or from_environment(dict(environ)), rest


def set_language(language: str) -> None:
    """Speak ``language`` from now on: Veil's messages, Click's and Typer's."""
    _set_language(language)
    for name in _GETTEXT_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "_"):
            module._ = gettext  # type: ignore[attr-defined]
        if hasattr(module, "ngettext"):
            module.ngettext = ngettext  # type: ignore[attr-defined]
    rich_utils = importlib.import_module("typer.rich_utils")
    for name in _TYPER_TEXTS:
        english = _ENGLISH.setdefault(name, getattr(rich_utils, name))
        setattr(rich_utils, name, gettext(english))


def localize(command: click.Command) -> click.Command:
    """``command`` and everything under it with help in the current language, and
    "did you mean" for a mistyped subcommand."""
    for attr in ("help", "short_help", "epilog"):
        text = getattr(command, attr, None)
        if text:
            setattr(command, attr, translate(text))
    for param in command.params:
        text = getattr(param, "help", None) or ARGUMENT_HELP.get(param.name or "")
        if text and hasattr(param, "help"):
            param.help = translate(text)
    if isinstance(command, click.Group):
        if type(command) is TyperGroup:
            # Every group of the tree suggests, also those added by other modules; the
            # subclass only overrides a method, so the object can take its class.
            command.__class__ = SuggestingGroup
        for sub in command.commands.values():
            localize(sub)
    return command


def build(app: typer.Typer) -> click.Command:
    """The Click command of ``app``, in the current language."""
    return localize(typer.main.get_command(app))


class SuggestingGroup(TyperGroup):
    """A group that answers a mistyped subcommand with the closest ones."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            name = args[0] if args else ""
            names = self.list_commands(ctx)
            if not name or name.startswith("-") or name in names:
                raise
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            close += [n for n in names if n.startswith(name) and n not in close]
            if not close:
                raise
            hint = Msg("Did you mean {names}?", names=", ".join(f"'{n}'" for n in close[:3]))
            raise click.UsageError(spaced(exc.message, translate(hint)), ctx) from None
