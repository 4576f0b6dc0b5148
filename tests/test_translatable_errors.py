"""Every domain error's message can be translated: no f-string, concatenation or %-format.

A message built with an f-string is English for good: the catalog cannot hold it and
``i18n.catalog.translate`` cannot find it. This walks the code whose errors reach users
and fails on ``raise SomeError(<built string>)``; write ``Msg("... {name} ...", name=x)``
(or a literal, which is looked up whole) instead.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import analytics.dp_catalog
import analytics.sdc
import analytics.syft_code
import analytics.syft_dp
import analytics.training_spec
import keys
import policies.errors
import sandbox.api.routes_datasets
import sandbox.oversight.receipt_format

ROOT = Path(__file__).resolve().parent.parent
#: The code whose error messages users read. The console, the CLI and ingestion are
#: checked by their own owners' tests.
PACKAGES = ("sandbox", "policies", "analytics", "keys", "node")
EXCLUDED = ("sandbox/console/", "sandbox/cli/", "sandbox/ingest")


def _subclasses(*bases: type) -> set[type]:
    found: set[type] = set()
    todo = list(bases)
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


def _error_names() -> set[str]:
    # The imports above load every module that defines one of these errors.
    assert sandbox.api.routes_datasets and sandbox.oversight.receipt_format
    classes = _subclasses(
        policies.errors.VeilError,
        keys.KeysError,
        analytics.dp_catalog.QueryError,
        analytics.sdc.SdcQueryError,
        analytics.training_spec.TrainingError,
        analytics.syft_code.CodeError,
        analytics.syft_dp.DpError,
    )
    return {cls.__name__ for cls in classes}


def _built(node: ast.expr) -> bool:
    """Whether ``node`` builds a string at run time (and so cannot be translated)."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr in ("format", "join")
    return False


def _called(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def untranslatable(source: str, names: set[str]) -> Iterator[tuple[int, str]]:
    """(line, error) of each ``raise Error(<built string>)`` in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        name = _called(node.exc.func)
        if name not in names:
            continue
        arguments = [*node.exc.args, *(k.value for k in node.exc.keywords if k.arg == "message")]
        if any(_built(a) for a in arguments):
            yield node.lineno, name


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(EXCLUDED):
                yield path


def test_no_domain_error_is_raised_with_a_built_message() -> None:
    names = _error_names()
    found = [
        f"{path.relative_to(ROOT)}:{line}: raise {name}(...) with an f-string, + or %"
        for path in _sources()
        for line, name in untranslatable(path.read_text(encoding="utf-8"), names)
    ]
    assert not found, "use Msg(template, **params) so it translates:\n" + "\n".join(found)


def test_the_check_finds_what_it_forbids() -> None:
    names = {"InvalidRequest"}
    source = """
def f(x):
    raise InvalidRequest(f"bad {x}")
def g(x):
    raise errors.InvalidRequest("bad " + x)
def h(x):
    raise InvalidRequest("bad %s" % x)
def ok(x):
    raise InvalidRequest(Msg("bad {x}", x=x))
def literal():
    raise InvalidRequest("bad")
def other(x):
    raise RuntimeError(f"bad {x}")
"""
    assert [line for line, _ in untranslatable(source, names)] == [3, 5, 7]
    assert {"InvalidRequest", "QueryError", "KeyServerUnavailable"} <= _error_names()
