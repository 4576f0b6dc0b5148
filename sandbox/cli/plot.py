"""``--plot FILE.svg``: a released result's histograms and group-by statistics as an image.

The drawing is the console's (``sandbox.console.result_charts``, which needs no web
framework).  The file name is checked when the command line is
read, so a refused name (a ``.png``, a missing folder) costs no job and no budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from i18n import Msg
from i18n.catalog import translate
from sandbox.cli.output import Output, err_console
from sandbox.console.result_charts import PlotError, check_plot_path, write_plot


def _checked(value: Path | None) -> Path | None:
    if value is None:
        return None
    try:
        return check_plot_path(value)
    except PlotError as error:
        raise typer.BadParameter(translate(error.args[0])) from None


Plot = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        metavar="FILE.svg",
        callback=_checked,
        help="Also draw the result's histograms and group-by statistics, each value with its "
        "95% interval, into this SVG file (SVG only: PNG is refused)",
    ),
]


def write_result_plot(result: dict[str, Any], path: Path | None, out: Output) -> None:
    """Write ``result``'s charts to ``path`` (if given) and say so on stderr."""
    if path is None:
        return
    drawn = write_plot(result, path)
    if out.as_json:
        return
    if drawn:
        note = Msg("wrote {count} chart(s) to {path}", count=drawn, path=str(path))
    else:
        note = Msg(
            "nothing to plot: only histograms and grouped statistics of a private query "
            "(tier 3) are drawn; {path} was not written",
            path=str(path),
        )
    err_console.print(translate(note), highlight=False)
