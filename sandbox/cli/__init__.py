"""The ``veil`` command line. Errors of every layer are caught in :func:`main`, in one place.

The language is chosen first (``--lang``, else the environment), so that help, Click's own
texts and every message are in it; then Click parses and runs the command without its own
error handling (``standalone_mode=False``), and :mod:`sandbox.cli.errors` prints whatever
failed once, as one line (or one JSON object under ``--json``). Exit statuses: 0 done, 1 an
error, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from i18n.catalog import gettext
from sandbox.cli import (
    assessors,
    attention,
    audit_verify,
    classification,
    collaborations,
    errors,
    keyaudit,
    kpi,
    language,
    letters,
    local,
    nodes,
    programme,
    receipts,
    remote,
    scorecards,
    sources,
    tokens,
)
from sandbox.cli.app import app
from sandbox.config.datadir import restrict_umask

_ = (
    assessors,
    attention,
    audit_verify,
    classification,
    collaborations,
    keyaudit,
    kpi,
    letters,
    local,
    nodes,
    programme,
    receipts,
    remote,
    scorecards,
    sources,
    tokens,
)  # their commands register on ``app``


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``veil`` script."""
    # First: what any command writes (the data directory, exports, downloads) and every
    # process it starts (the key server, API processes, job sandboxes) is the user's alone.
    restrict_umask()
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in (args[: args.index("--")] if "--" in args else args)
    sys.exit(run(args, as_json))


def run(args: list[str], as_json: bool) -> int:
    """Run ``veil ARGS``; the exit status. Every exception ends here."""
    try:
        chosen, args = language.choose(args, os.environ)
        language.set_language(chosen)
        command = language.build(app)
        status = command.main(args=args, prog_name="veil", standalone_mode=False)
    except click.exceptions.Exit as done:  # raised outside a command's context
        return done.exit_code
    except click.Abort:
        errors.report(errors.Failure("aborted", gettext("Aborted!")), as_json)
        return errors.ERROR
    except KeyboardInterrupt:
        return errors.INTERRUPTED
    except Exception as exc:
        failure = errors.describe(exc)
        if failure is None:
            errors.report_unexpected(exc, as_json)
            return errors.ERROR
        errors.report(failure, as_json)
        return failure.status
    return status if isinstance(status, int) else 0


__all__ = ["app", "main"]
