"""The ``veil`` command line. Errors of every layer are caught in :func:`main`, in one place."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from keys import KeysError
from policies.errors import VeilError
from sandbox.cli import (
    attention,
    audit_verify,
    classification,
    keyaudit,
    local,
    receipts,
    remote,
    tokens,
)
from sandbox.cli.app import app
from sandbox.cli.output import err_console
from sandbox.client import ApiError
from sandbox.datadir import restrict_umask

_ = (
    attention,
    audit_verify,
    classification,
    keyaudit,
    local,
    receipts,
    remote,
    tokens,
)  # their commands register on ``app``


def main() -> None:
    """Entry point of the ``veil`` script."""
    # First: what any command writes (the data directory, exports, downloads) and every
    # process it starts (the key server, API processes, job sandboxes) is the user's alone.
    restrict_umask()
    try:
        app()
    except ApiError as exc:
        err_console.print(f"[red]error ({exc.status}):[/red] {exc.detail}", highlight=False)
        for reason in exc.reasons:
            err_console.print(f"  - {reason}", highlight=False)
        for problem in exc.problems[:20]:
            where = ", ".join(f"{k} {v}" for k, v in problem.items() if k != "expected" and v)
            err_console.print(f"  - {where}: expected {problem.get('expected')}", highlight=False)
        sys.exit(1)
    except (KeysError, VeilError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except ValidationError as exc:  # the settings (VEIL_... variables); values not shown
        err_console.print("[red]error:[/red] the settings are not valid:", highlight=False)
        for error in exc.errors():
            where = f"VEIL_{str(error['loc'][0]).upper()}" if error["loc"] else "settings"
            err_console.print(f"  - {where}: {error['msg']}", highlight=False)
        sys.exit(2)
    except ConnectionError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)


__all__ = ["app", "main"]
