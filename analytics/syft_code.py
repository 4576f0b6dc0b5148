"""Tier 5: reviewed code — a provider's PySyft syft function, checked, pinned and run.

A provider writes one syft function against a dataset's mock; the enterprise approves that
exact source (its SHA-256 is pinned); Veil runs it on the private frame through PySyft's
own execution model (dataset with a mock and a private asset, code request, approval,
execution) inside an isolated sandbox process, then checks the output
(``analytics.output_checks``).  The sandbox is the barrier; the checks here are defence in
depth.  The convention the source must follow is in docs/reviewed-code.md::

    import syft as sy

    @sy.syft_function_single_use(data=asset)
    def mean_temperature(data):
        import pandas as pd
        return data.groupby("machine")["temperature"].mean()

``asset`` is the one name the decorator may use: Veil binds it to the uploaded asset.
PySyft runs the function body alone (module-level names do not exist there), so every
import other than ``syft`` goes inside the function.

``parse_submission`` only parses (it never executes anything); ``run_syft_function``
launches an in-process datasite whose state lives under ``workdir``.  PySyft 0.9.5 keeps
a datasite's database and blobs in ``tempfile.gettempdir()/$SYFT_TEMP_ROOT/<server id>``
and ``orchestra.launch`` takes no folder, so ``LocalDatasite`` points ``tempfile.tempdir``
at ``workdir`` (and ``SYFT_TEMP_ROOT`` at ``syft``) while it is up, and checks where the
state went.  That is process-wide: one datasite at a time per process.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import itertools
import linecache
import logging
import os
import re
import secrets
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed
import polars as pl

from analytics import syft_dp
from analytics.column_names import is_column_name, normalise
from i18n import Msg

MAX_SOURCE_BYTES: Final = 64_000
#: Modules a function may import (inside its body); ``syft`` only at module level.
ALLOWED_IMPORTS: Final = frozenset({"pandas", "numpy", "math", "statistics", syft_dp.MODULE_NAME})
#: The name the decorator uses for the dataset's asset; Veil binds it.
ASSET_NAME: Final = "asset"
_SYFT_ALIASES: Final = frozenset({"syft", "sy"})
_DECORATORS: Final = frozenset({"syft_function_single_use", "syft_function"})
#: Built-ins that reach the interpreter, files, or the console.
FORBIDDEN_NAMES: Final = frozenset(
    [
        "__import__",
        "breakpoint",
        "compile",
        "delattr",
        "dir",
        "eval",
        "exec",
        "exit",
        "getattr",
        "globals",
        "help",
        "input",
        "locals",
        "memoryview",
        "open",
        "print",
        "quit",
        "setattr",
        "vars",
    ]
)
#: Attributes that read or write files or reach the system (pandas/numpy I/O and escapes).
FORBIDDEN_ATTRIBUTES: Final = frozenset(
    [
        "builtins",
        "ctypeslib",
        "distutils",
        "eval",
        "f2py",
        "fromfile",
        "fromregex",
        "genfromtxt",
        "importlib",
        "io",
        "load",
        "loadtxt",
        "memmap",
        "os",
        "save",
        "savetxt",
        "savez",
        "savez_compressed",
        "subprocess",
        "sys",
        "to_clipboard",
        "to_csv",
        "to_excel",
        "to_feather",
        "to_gbq",
        "to_hdf",
        "to_html",
        "to_json",
        "to_latex",
        "to_markdown",
        "to_orc",
        "to_parquet",
        "to_pickle",
        "to_sql",
        "to_stata",
        "to_xml",
        "tofile",
    ]
)
#: Parameter names PySyft's call path or execution reserves.
_RESERVED_PARAMETERS: Final = frozenset(
    {"args", "asset", "blocking", "communication_protocol", "context", "datasite", "kwargs"}
    | {"result_id", "self", "uid"}
)
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_MUST_BE_INSIDE: Final = Msg("PySyft runs the function body alone")


class CodeError(Exception):
    """Submitted code Veil refuses, or a run that failed; says what to fix, never a data value."""


@dataclass(frozen=True)
class SyftCode:
    """A checked submission: its exact source, function and parameter name, and SHA-256."""

    source: str
    function_name: str
    parameter: str
    sha256: str


def source_sha256(source: str) -> str:
    """The hex SHA-256 of the exact UTF-8 source: what an approval pins."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def verify_pinned(code: SyftCode, approved_sha256: str) -> None:
    """Raise CodeError unless ``code`` is exactly the source whose hash was approved."""
    if source_sha256(code.source) != code.sha256 or code.sha256 != approved_sha256:
        raise CodeError(
            Msg(
                "the code differs from the approved code (SHA-256 mismatch); "
                "submit it again for review"
            )
        )


# ---------------------------------------------------------------- parsing (never executes)


def parse_submission(source: str, max_bytes: int = MAX_SOURCE_BYTES) -> SyftCode:
    """Check ``source`` by its syntax tree alone and return it as a SyftCode.

    Raises CodeError naming the line and the fix.  See docs/reviewed-code.md for the rules.
    """
    tree = _parse(source, max_bytes)
    aliases, function = _module(tree)
    parameter = _decorator(function, aliases)
    _signature(function, parameter)
    for node in ast.walk(function):
        if node is not function:
            _check_node(node)
    return SyftCode(source, function.name, parameter, source_sha256(source))


def _parse(source: str, max_bytes: int) -> ast.Module:
    if not isinstance(source, str):
        raise CodeError(Msg("source: expected Python source text"))
    try:
        size = len(source.encode("utf-8"))
    except UnicodeEncodeError:
        raise CodeError(Msg("source: expected valid UTF-8 text")) from None
    if size > max_bytes:
        raise CodeError(
            Msg(
                "source: {size} bytes, expected at most {max_bytes}; shorten the code",
                size=size,
                max_bytes=max_bytes,
            )
        )
    try:
        return ast.parse(source)
    except SyntaxError as error:
        raise CodeError(
            Msg(
                "line {lineno}: not valid Python ({msg})",
                lineno=error.lineno,
                msg=error.msg,
            )
        ) from None
    except ValueError:
        raise CodeError(Msg("source: contains a null character; remove it")) from None


def _module(tree: ast.Module) -> tuple[frozenset[str], ast.FunctionDef]:
    """The names syft is imported as, and the one function; nothing else at module level."""
    aliases: set[str] = set()
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and _is_text(body[0].value):
        body = body[1:]  # a module docstring
    if not body or not isinstance(body[-1], ast.FunctionDef):
        raise CodeError(Msg("expected exactly one function, after the imports, at the end"))
    for node in body[:-1]:
        line = f"line {node.lineno}"
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            raise CodeError(
                Msg(
                    "{line}: expected exactly one function; merge them into one",
                    line=line,
                )
            )
        if not isinstance(node, ast.Import):
            raise CodeError(
                Msg(
                    "{line}: only `import syft as sy` and one function may be at "
                    "module level; move this into the function ({must_be_inside})",
                    line=line,
                    must_be_inside=_MUST_BE_INSIDE,
                )
            )
        for alias in node.names:
            if alias.name != "syft" or (alias.asname or "syft") not in _SYFT_ALIASES:
                raise CodeError(
                    Msg(
                        "{line}: at module level only `import syft as sy` is allowed; "
                        "import {name} inside the function ({must_be_inside})",
                        line=line,
                        name=alias.name,
                        must_be_inside=_MUST_BE_INSIDE,
                    )
                )
            aliases.add(alias.asname or "syft")
    if not aliases:
        raise CodeError(Msg("expected `import syft as sy` before the function"))
    return frozenset(aliases), body[-1]


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _syft_attribute(node: ast.expr, aliases: frozenset[str], names: frozenset[str]) -> str | None:
    """``attr`` if ``node`` is ``<syft alias>.attr`` with attr in ``names``."""
    if not (isinstance(node, ast.Attribute) and node.attr in names):
        return None
    value = node.value
    return node.attr if isinstance(value, ast.Name) and value.id in aliases else None


def _decorator(function: ast.FunctionDef, aliases: frozenset[str]) -> str:
    """The decorator's keyword for the asset, which must be the parameter's name."""
    expected = Msg(
        "line {line}: expected one decorator, `@sy.syft_function_single_use(<parameter>={asset})`",
        line=function.lineno,
        asset=ASSET_NAME,
    )
    if len(function.decorator_list) != 1 or not isinstance(function.decorator_list[0], ast.Call):
        raise CodeError(expected)
    call = function.decorator_list[0]
    kind = _syft_attribute(call.func, aliases, _DECORATORS)
    if kind is None or call.args:
        raise CodeError(expected)
    if kind == "syft_function_single_use":
        return _asset_keyword(call.keywords, expected)
    policies = {k.arg: k.value for k in call.keywords}
    if None in policies or not set(policies) <= {"input_policy", "output_policy"}:
        raise CodeError(
            Msg(
                "{expected}, or sy.syft_function(input_policy=..., output_policy=...)",
                expected=expected,
            )
        )
    output = policies.get("output_policy")
    single = frozenset({"SingleExecutionExactOutput"})
    if output is not None and not (
        isinstance(output, ast.Call)
        and _syft_attribute(output.func, aliases, single)
        and not output.args
        and not output.keywords
    ):
        raise CodeError(
            Msg(
                "{expected}; output_policy may only be sy.SingleExecutionExactOutput()",
                expected=expected,
            )
        )
    policy = policies.get("input_policy")
    exact = frozenset({"ExactMatch"})
    if not (
        isinstance(policy, ast.Call)
        and _syft_attribute(policy.func, aliases, exact)
        and not policy.args
    ):
        raise CodeError(
            Msg(
                "{expected}; input_policy must be sy.ExactMatch(<parameter>={asset_name})",
                expected=expected,
                asset_name=ASSET_NAME,
            )
        )
    return _asset_keyword(policy.keywords, expected)


def _asset_keyword(keywords: list[ast.keyword], expected: Msg) -> str:
    if len(keywords) != 1 or keywords[0].arg is None:
        raise CodeError(expected)
    value = keywords[0].value
    if not (isinstance(value, ast.Name) and value.id == ASSET_NAME):
        raise CodeError(expected)
    return keywords[0].arg


def _signature(function: ast.FunctionDef, parameter: str) -> None:
    line = f"line {function.lineno}"
    if not _NAME.fullmatch(function.name):
        raise CodeError(
            Msg(
                "{line}: name the function with letters, digits and _ (64 at most)",
                line=line,
            )
        )
    args = function.args
    extra = args.posonlyargs or args.vararg or args.kwonlyargs or args.kwarg or args.defaults
    if len(args.args) != 1 or extra:
        raise CodeError(
            Msg(
                "{line}: expected exactly one parameter (the data frame), no defaults",
                line=line,
            )
        )
    name = args.args[0].arg
    if name != parameter:
        raise CodeError(
            Msg(
                "{line}: the decorator's keyword {parameter} must be the parameter's name {name}",
                line=line,
                parameter=repr(parameter),
                name=repr(name),
            )
        )
    if not _NAME.fullmatch(name) or name in _RESERVED_PARAMETERS:
        raise CodeError(
            Msg(
                "{line}: rename the parameter {name} (e.g. data); PySyft reserves it",
                line=line,
                name=repr(name),
            )
        )
    if args.args[0].annotation is not None or function.returns is not None:
        raise CodeError(
            Msg(
                "{line}: remove the type annotations from the function's signature",
                line=line,
            )
        )


def _check_node(node: ast.AST) -> None:
    """Refuse what a reviewed function never needs (defence in depth; the sandbox is the wall)."""
    line = f"line {getattr(node, 'lineno', '?')}"
    if isinstance(node, ast.Import | ast.ImportFrom):
        _check_import(node, line)
    elif isinstance(node, ast.Name) and (node.id in FORBIDDEN_NAMES or _dunder(node.id)):
        raise CodeError(
            Msg(
                "{line}: {id} is not allowed in reviewed code",
                line=line,
                id=repr(node.id),
            )
        )
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise CodeError(
                Msg(
                    "{line}: attributes starting with _ (like .{attr}) are not allowed",
                    line=line,
                    attr=node.attr,
                )
            )
        if node.attr in FORBIDDEN_ATTRIBUTES or node.attr.startswith("read_"):
            raise CodeError(
                Msg(
                    "{line}: .{attr} reads or writes outside the data; remove it",
                    line=line,
                    attr=node.attr,
                )
            )
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "__" in node.value:
        raise CodeError(
            Msg(
                "{line}: strings containing __ are not allowed",
                line=line,
            )
        )
    elif isinstance(node, ast.Global | ast.Nonlocal):
        raise CodeError(
            Msg(
                "{line}: global and nonlocal are not allowed",
                line=line,
            )
        )
    elif isinstance(node, ast.ClassDef | ast.AsyncFunctionDef | ast.Await | ast.AsyncFor):
        raise CodeError(
            Msg(
                "{line}: classes and async code are not allowed; use plain functions",
                line=line,
            )
        )
    elif isinstance(node, ast.AsyncWith | ast.Yield | ast.YieldFrom):
        raise CodeError(
            Msg(
                "{line}: generators and async code are not allowed; return a value",
                line=line,
            )
        )
    else:
        name = _declared_name(node)
        if name is not None and _dunder(name):
            raise CodeError(
                Msg(
                    "{line}: names starting with __ are not allowed",
                    line=line,
                )
            )


def _declared_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.FunctionDef):
        return node.name
    if isinstance(node, ast.arg):
        return node.arg
    if isinstance(node, ast.keyword):
        return node.arg
    return None


def _dunder(name: str) -> bool:
    return name.startswith("__")


def _check_import(node: ast.Import | ast.ImportFrom, line: str) -> None:
    allowed = ", ".join(sorted(ALLOWED_IMPORTS))
    if isinstance(node, ast.ImportFrom):
        if node.level or node.module is None:
            raise CodeError(
                Msg(
                    "{line}: relative imports are not allowed",
                    line=line,
                )
            )
        modules, names = [node.module], [a.name for a in node.names]
    else:
        modules, names = [a.name for a in node.names], []
    for module in modules:
        parts = module.split(".")
        if parts[0] not in ALLOWED_IMPORTS:
            raise CodeError(
                Msg(
                    "{line}: import {parts} is not allowed; allowed: {allowed}",
                    line=line,
                    parts=repr(parts[0]),
                    allowed=allowed,
                )
            )
        names += parts[1:]
    aliases = [a.asname for a in node.names if a.asname is not None]
    for name in [*names, *aliases]:
        if name == "*":
            raise CodeError(
                Msg(
                    "{line}: import * is not allowed; import the names you use",
                    line=line,
                )
            )
        if name.startswith("_") or name in FORBIDDEN_ATTRIBUTES or name.startswith("read_"):
            raise CodeError(
                Msg(
                    "{line}: importing {name} is not allowed in reviewed code",
                    line=line,
                    name=repr(name),
                )
            )


# ---------------------------------------------------------------- columns


def _function(code: SyftCode) -> ast.FunctionDef:
    node = ast.parse(code.source).body[-1]
    if not isinstance(node, ast.FunctionDef):
        raise CodeError(Msg("expected a parsed submission (see parse_submission)"))
    return node


def _body_nodes(code: SyftCode) -> Iterator[ast.AST]:
    for statement in _function(code).body:
        yield from ast.walk(statement)


def columns_read(code: SyftCode, available: Sequence[str]) -> tuple[str, ...]:
    """The columns of ``available`` the function names: sorted, each once.

    A column is read if a string literal in the body equals its name (``df["a"]``,
    ``df[["a", "b"]]``, ``groupby("a")``, ``agg({"a": ...})``) or an attribute that is not
    called has its name (``df.a``, but not ``df.a()``).  Names built at run time are not
    seen: they fail on the private run, whose frame holds only the columns found here.
    """
    names = set(available)
    found = {normalise(n) for n in _literals(code) if normalise(n) in names}
    found |= {n for n in _plain_attributes(code) if n in names}
    return tuple(sorted(found))


def columns_named(code: SyftCode) -> tuple[str, ...]:
    """Every string literal in the body that looks like an identifier, sorted, each once.

    Also ``"sum"`` or ``"mean"`` in ``agg("sum")``: the caller intersects these with the
    dataset's declared names and refuses a declared column the grant does not give.
    """
    return tuple(sorted({normalise(n) for n in _literals(code) if is_column_name(n)}))


def string_literals(code: SyftCode) -> frozenset[str]:
    """Every string literal in the function's body: the labels its output may show (the
    enterprise read them in the code it approved; the data cannot change them)."""
    return frozenset(_literals(code))


def _literals(code: SyftCode) -> set[str]:
    return {
        node.value
        for node in _body_nodes(code)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def _plain_attributes(code: SyftCode) -> set[str]:
    nodes = list(_body_nodes(code))
    called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
    return {n.attr for n in nodes if isinstance(n, ast.Attribute) and id(n) not in called}


def to_pandas(frame: pl.DataFrame) -> pd.DataFrame:
    """A polars frame as the pandas frame a syft function receives (NumPy-backed columns)."""
    return frame.to_pandas()


# ---------------------------------------------------------------- running through PySyft

_ADMIN_EMAIL: Final = "info@openmined.org"  # PySyft's built-in root account
_ADMIN_PASSWORD: Final = "changethis"  # noqa: S105 - in-process server, no network port
_USER_CODE_LOGGER: Final = "syft.service.code.user_code"
_SHADOW_INDEX: Final = 2**62


def run_syft_function(
    code: SyftCode, private: pd.DataFrame, mock: pd.DataFrame, workdir: Path
) -> object:
    """Run ``code`` on ``private`` through a fresh datasite under ``workdir``; its output.

    The caller checks the pin first (``verify_pinned``).  The installed ``veil_dp``, if
    any, computes on ``private`` while the function runs.  Raises CodeError if PySyft
    refuses the code or the function fails (naming only the exception's type).
    """
    with LocalDatasite(workdir) as site:
        return site.run(code, private, mock)


def run_on_mock(code: SyftCode, mock: pd.DataFrame, workdir: Path) -> object:
    """``run_syft_function`` with the mock as the private data: what the enterprise reviews.

    Errors here carry the exception's message too: the mock holds nothing secret.
    """
    with LocalDatasite(workdir) as site:
        return site.run(code, mock, mock, reveal_errors=True)


class LocalDatasite:
    """An in-process PySyft datasite whose state lives under ``workdir``; a context manager.

    Each ``run`` uploads a new dataset with one asset (private data and mock), registers a
    new data-scientist account, submits the function as its code request, approves it as
    the admin after checking PySyft got the approved code, and executes it.
    """

    def __init__(self, workdir: Path) -> None:
        self._workdir = Path(workdir)
        self._stack: contextlib.ExitStack | None = None
        self._handle: Any = None
        self._admin: Any = None
        self._runs = itertools.count(1)

    def __enter__(self) -> LocalDatasite:
        sy = _syft()
        self._workdir.mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(_state_under(self._workdir))
            with _quiet():
                handle = sy.orchestra.launch(
                    name=f"veil-{uuid.uuid4().hex[:16]}", reset=True, dev_mode=False
                )
                stack.callback(_land, handle)
                self._check_state(handle)
                self._admin = handle.login(email=_ADMIN_EMAIL, password=_ADMIN_PASSWORD)
        except BaseException:
            stack.close()
            raise
        self._stack, self._handle = stack, handle
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack, self._stack, self._handle, self._admin = self._stack, None, None, None
        if stack is not None:
            with _quiet():
                stack.close()

    @property
    def state_dir(self) -> Path:
        """Where this datasite keeps its database and blobs (under ``workdir``)."""
        return Path(self._require().python_server.get_temp_dir())

    def _require(self) -> Any:
        if self._handle is None:
            raise RuntimeError("the datasite is not running; use it in a with block")
        return self._handle

    def _check_state(self, handle: Any) -> None:
        state = Path(handle.python_server.get_temp_dir()).resolve()
        if not state.is_relative_to(self._workdir.resolve()):
            raise RuntimeError("PySyft put its state outside the work folder")  # pragma: no cover

    def run(
        self,
        code: SyftCode,
        private: pd.DataFrame,
        mock: pd.DataFrame,
        *,
        reveal_errors: bool = False,
    ) -> object:
        """Run ``code`` on ``private`` (mock: ``mock``) through this datasite; its output."""
        handle = self._require()
        _check_code(code)
        if not isinstance(private, pd.DataFrame) or not isinstance(mock, pd.DataFrame):
            raise TypeError("private and mock: expected pandas DataFrames (see to_pandas)")
        number = next(self._runs)
        shadow = _shadow(mock, private)
        with _quiet(), _failures() as failures, syft_dp.bound_to(private, shadow):
            client, asset = self._upload(handle, private, shadow, number)
            function = _build(code, asset, number)
            request = _syft_step(lambda: client.code.request_code_execution(function), "submit")
            self._approve(request.id, code)
            try:
                kwargs = {code.parameter: asset}
                result = client.api.services.code.call(uid=request.code.id, **kwargs)
                return _unwrap(result)
            except _syft().SyftException:
                raise CodeError(_failure(code, failures, reveal_errors)) from None

    def _upload(self, handle: Any, private: pd.DataFrame, mock: pd.DataFrame, number: int) -> Any:
        sy = _syft()
        name = f"veil-dataset-{number}"
        asset = sy.Asset(name="data", data=private, mock=mock)
        _syft_step(lambda: self._admin.upload_dataset(sy.Dataset(name=name, asset_list=[asset])))
        email = f"provider-{number}-{secrets.token_hex(4)}@example.org"
        password = secrets.token_urlsafe(24)
        _syft_step(
            lambda: self._admin.register(
                name="provider", email=email, password=password, password_verify=password
            )
        )
        client = handle.login(email=email, password=password)
        return client, client.datasets[name].assets["data"]

    def _approve(self, request_id: Any, code: SyftCode) -> None:
        """Approve the request as the admin, if PySyft holds exactly the approved function."""
        request = self._admin.api.services.request.get_by_uid(request_id)
        submitted = request.code
        if submitted.service_func_name != code.function_name or _dump(submitted.raw_code) != _dump(
            _function_text(code)
        ):
            raise CodeError(Msg("PySyft received other code than the approved code; nothing ran"))
        _syft_step(lambda: request.approve(disable_warnings=True), "approve")


def _shadow(mock: pd.DataFrame, private: pd.DataFrame) -> pd.DataFrame:
    """The mock with an index no private frame has, so veil_dp can tell PySyft's runs apart.

    PySyft runs an approved function on the private data and then on the mock; DP helper
    calls on the mock must not be charged (see analytics.syft_dp).
    """
    start = _SHADOW_INDEX
    while True:
        index = pd.RangeIndex(start, start + len(mock))
        if not index.equals(private.index) or len(mock) == 0:
            return mock.set_axis(index, axis="index")
        start += len(mock)  # pragma: no cover - a private frame indexed from 2**62


def _syft() -> Any:
    # Imported on first use: it takes seconds, and parsing needs none of it.
    import syft  # type: ignore[import-untyped]

    return syft


def preload() -> None:
    """Import PySyft now (about 6 s), e.g. in a sandbox waiting for a tier-5 task."""
    _syft()


def _check_code(code: SyftCode) -> None:
    """Re-check the source: a SyftCode not made by parse_submission cannot slip through."""
    parsed = parse_submission(code.source)
    if parsed != code:
        raise CodeError(Msg("the code does not match its parsed form or hash; parse it again"))


def _function_text(code: SyftCode) -> str:
    """The function as ``inspect.getsource`` gives it to PySyft: decorator to last line."""
    function = _function(code)
    start = min(d.lineno for d in function.decorator_list)
    lines = code.source.splitlines(keepends=True)
    return "".join(lines[start - 1 : function.end_lineno])


def _dump(source: str) -> str:
    try:
        return ast.dump(ast.parse(source))
    except SyntaxError:
        return ""


def _build(code: SyftCode, asset: Any, number: int) -> Any:
    """The SubmitUserCode of ``code``, its decorator bound to ``asset``.

    Executing the module runs only ``import syft`` and the decorator (parse_submission
    allows nothing else at module level); the body runs inside PySyft.  PySyft reads the
    function's source with ``inspect.getsource``, so the source is put in ``linecache``.
    """
    syft = _syft()
    filename = f"<veil-submission-{number}>"
    lines = code.source.splitlines(keepends=True)
    linecache.cache[filename] = (len(code.source), None, lines, filename)
    namespace: dict[str, Any] = {"__builtins__": {"__import__": _import_syft}, ASSET_NAME: asset}
    try:
        _syft_step(lambda: exec(compile(code.source, filename, "exec"), namespace), "submit")  # noqa: S102
    except CodeError:
        raise
    except Exception as error:
        raise CodeError(
            Msg(
                "PySyft could not build the syft function ({error})",
                error=type(error).__name__,
            )
        ) from None
    finally:
        linecache.cache.pop(filename, None)
    function = namespace.get(code.function_name)
    if not isinstance(function, syft.service.code.user_code.SubmitUserCode):
        raise CodeError(
            Msg("the decorator did not make a syft function; see docs/reviewed-code.md")
        )
    return function


def _import_syft(name: str, *args: Any, **kwargs: Any) -> Any:
    if name != "syft":
        raise ImportError("only syft may be imported at module level")
    return _syft()


def _syft_step(step: Callable[[], Any], stage: str | None = None) -> Any:
    """Run one PySyft call, turning its refusal into a CodeError.

    At a code ``stage`` ("submit", "approve") PySyft's message is about the code and is
    kept; otherwise (storing the data, accounts) it is replaced by a generic one.
    """
    try:
        return step()
    except _syft().SyftException as error:
        if stage is None:
            raise CodeError(Msg("PySyft could not set up the data for this run")) from None
        message = str(getattr(error, "public_message", "") or type(error).__name__)
        raise CodeError(
            Msg(
                "PySyft refused to {stage} the function: {message}",
                stage=stage,
                message=message[:500],
            )
        ) from None


def _unwrap(result: Any) -> object:
    """The plain Python value of PySyft's result (an ActionObject around it)."""
    syft = _syft()
    value: object = result
    for _ in range(8):
        if not isinstance(value, syft.ActionObject):
            break
        value = value.get()
    if isinstance(value, syft.SyftError):
        raise CodeError(Msg("PySyft returned an error instead of the function's output"))
    return value


def _failure(code: SyftCode, failures: list[BaseException], reveal: bool) -> Msg:
    if not failures:
        return Msg(
            "PySyft could not run {function} or return its output; return "
            "numbers, strings, lists, dicts or pandas objects",
            function=code.function_name,
        )
    error = failures[-1]
    function, kind = code.function_name, type(error).__name__
    if reveal or isinstance(error, syft_dp.DpError):  # veil_dp's messages hold no data
        return Msg(
            "{function} raised {error}: {message}",
            function=function,
            error=kind,
            message=str(error)[:500],
        )
    return Msg(
        "{function} raised {error} on the data (its message may quote data, so it is "
        "withheld); run it on the mock",
        function=function,
        error=kind,
    )


class _Failures(logging.Filter):
    """Keeps the exception PySyft logs when a function fails, and drops the log record.

    PySyft logs the traceback (which can quote data values) from inside its ``except``
    block, so ``sys.exc_info`` is the function's exception.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[BaseException] = []

    def filter(self, record: logging.LogRecord) -> bool:
        error = sys.exc_info()[1]
        if error is not None:
            self.seen.append(error)
        return False


@contextlib.contextmanager
def _failures() -> Iterator[list[BaseException]]:
    logger = logging.getLogger(_USER_CODE_LOGGER)
    keep, level = _Failures(), logger.level
    logger.addFilter(keep)
    logger.setLevel(logging.ERROR)  # PySyft sets the root logger to CRITICAL
    try:
        yield keep.seen
    finally:
        logger.removeFilter(keep)
        logger.setLevel(level)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """PySyft prints banners and progress bars, and the function's prints: none of it leaves."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@contextlib.contextmanager
def _state_under(workdir: Path) -> Iterator[None]:
    """PySyft's temp folder (its state) under ``workdir`` while inside."""
    saved_tempdir, saved_root = tempfile.tempdir, os.environ.get("SYFT_TEMP_ROOT")
    tempfile.tempdir = str(workdir)
    os.environ["SYFT_TEMP_ROOT"] = "syft"
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_root is None:
            os.environ.pop("SYFT_TEMP_ROOT", None)
        else:
            os.environ["SYFT_TEMP_ROOT"] = saved_root


def _land(handle: Any) -> None:
    handle.land()
    with contextlib.suppress(Exception):  # close the SQLite files so workdir can be removed
        handle.python_server.db.engine.dispose()
