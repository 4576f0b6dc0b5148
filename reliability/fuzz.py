"""Fuzzing every API operation as every role with schemathesis, on a real Veil.

Veil runs as a real server in its own process (``bench/api_server.py veil``: embedded
OpenBao, SQLite, uvicorn, no job worker, so submitted jobs only queue; no rate limit, whose
429s would stand in for the routes).  The world: an operator, an enterprise with the demo
production log uploaded, a provider granted tiers 0 to 3 on it, and a security officer
overseeing the enterprise.  Then, for each role and each operation of ``/openapi.json``:

- generated requests, positive (fitting the schema) and negative (not); where the operation
  has path parameters, half of them name the world's real objects to get past the 404;
- schemathesis's coverage cases (boundary, missing and mistyped values);
- edges: each integer and date-time parameter and top-level JSON field at 2**63, -2**63 - 1
  and 10**20, or at times that leave years 1 to 9999 once in UTC.

Checked, with counts:

- no response is a server error (5xx);
- every response conforms to the schema: its status is documented and its body matches
  the documented schema (schemathesis's ``status_code_conformance``,
  ``content_type_conformance`` and ``response_schema_conformance``);
- no error body (status >= 400) contains a value of a non-public column of the uploaded
  dataset.  Floats are matched as numeric tokens; the integer and boolean columns' values
  (0 to 50, true/false) are too common to be evidence and are not matched.

A failure is reported by operation, role and status (or the check's title), never with the
generated data or a response body; on a 5xx the server's log is kept (``SERVER_LOG``).
Run alone: ``.venv/bin/python reliability/fuzz.py [--quick]`` (quick: 10 generated requests
per operation and role and every 8th coverage case; full: 50 and all of them).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import schemathesis
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api_bench import HOST, server  # noqa: E402
from bench.api_server import TOKEN_FILE  # noqa: E402
from reliability.report import Outcome, main  # noqa: E402
from sandbox.client import VeilClient  # noqa: E402
from sandbox.demo.data import DECLARATION, production_log  # noqa: E402

AREA = "fuzzing"
ROLES = ("provider", "enterprise", "security officer", "operator")  # the provider first: the
# others may revoke its grant or suspend it, which would end its coverage early.
PURPOSE = "process-optimization"
PUBLIC = {c["name"] for c in DECLARATION["columns"] if c["class"] == "public"}
CHECKS = (
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
)
SERVER_LOG = Path(tempfile.gettempdir()) / "veil-fuzz-server.log"
EDGE_INTEGERS = (2**63, -(2**63) - 1, 10**20)
EDGE_TIMES = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")
_NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.])")


@dataclass
class World:
    tokens: dict[str, str]
    ids: dict[str, str]  # path parameter name -> a real object's id
    private: dict[str, str]  # normalised private float -> its column


@dataclass
class Tally:
    requests: int = 0
    operations: set[str] = field(default_factory=set)
    server_errors: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    error_bodies: int = 0
    leaks: Counter[str] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)


def _private_values(data: bytes) -> dict[str, str]:
    """Each non-public float column's values, normalised, mapped to the column's name."""
    floats = {c["name"] for c in DECLARATION["columns"] if c["type"] == "float"} - PUBLIC
    found: dict[str, str] = {}
    for row in csv.DictReader(io.StringIO(data.decode())):
        for name in floats:
            found[repr(float(row[name]))] = name
    return found


def build_world(url: str, operator_token: str, rows: int) -> World:
    """Enterprise, provider and officer; the demo log uploaded; a tier 0-3 grant; one job."""
    with VeilClient(url, operator_token) as operator:
        ent = operator.create_enterprise("Fuzz Works", "fuzz-works")
        prov = operator.create_provider("Fuzz Analytics")
        officer = operator.create_security_officer("Fuzz Officer", [ent["id"]])
        tokens = {
            "operator": operator_token,
            "enterprise": operator.issue_token(ent["id"]),
            "provider": operator.issue_token(prov["id"]),
            "security officer": operator.issue_token(officer["id"]),
        }
    data = production_log(rows, seed=7)
    with VeilClient(url, tokens["enterprise"]) as enterprise:
        ds = enterprise.create_dataset(
            DECLARATION["name"], DECLARATION["columns"], epsilon_cap=100.0
        )
        enterprise.upload(ds["id"], data)
        granted = [c["name"] for c in DECLARATION["columns"] if c["class"] != "secret"]
        grant = enterprise.create_grant(
            prov["id"],
            [ds["id"]],
            granted,
            [0, 1, 2, 3],
            [PURPOSE],
            datetime.now(UTC) + timedelta(days=1),
            epsilon=100.0,
        )
    with VeilClient(url, tokens["provider"]) as provider:
        job = provider.submit_job(ds["id"], PURPOSE, 0.01, [{"kind": "count"}])
    ids = {
        "dataset_id": ds["id"],
        "grant_id": grant["id"],
        "job_id": job["id"],
        "principal_id": prov["id"],
        "provider_id": prov["id"],
    }
    return World(tokens, ids, _private_values(data))


def _leaked_columns(body: str, private: dict[str, str]) -> set[str]:
    columns = set()
    for token in _NUMBER.findall(body):
        column = private.get(repr(float(token)))
        if column is not None:
            columns.add(column)
    return columns


@dataclass
class Caller:
    """One role calling the server, counting into one tally."""

    url: str
    role: str
    world: World
    tally: Tally

    def send(self, case: Any, label: str) -> None:
        headers = {"Authorization": f"Bearer {self.world.tokens[self.role]}"}
        where = f"{label} as {self.role}"
        self.tally.requests += 1
        try:
            response = case.call(base_url=self.url, headers=headers, timeout=60)
        except Exception as exc:  # a dropped connection is counted, not raised
            self.tally.transport_errors[f"{where}: {type(exc).__name__}"] += 1
            return
        status = response.status_code
        if status >= 500:
            self.tally.server_errors[f"{where}: {status}"] += 1
        if status >= 400:
            self.tally.error_bodies += 1
            for column in _leaked_columns(response.text, self.world.private):
                self.tally.leaks[f"{where}: a value of {column}"] += 1
        try:
            case.validate_response(response, checks=list(CHECKS))
        except FailureGroup as group:
            for failure in group.exceptions:
                self.tally.violations[f"{where}: {status} {failure.title}"] += 1
        except Failure as failure:
            self.tally.violations[f"{where}: {status} {failure.title}"] += 1


def _drive(strategy: Any, examples: int, seed: int, send: Callable[[Any], None]) -> None:
    """Send up to ``examples`` cases drawn from ``strategy`` (no shrinking: nothing raises)."""

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(strategy)
    def one(case: Any) -> None:
        send(case)

    # Unsatisfiable: nothing to negate, in an operation without parameters or body.
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        one()


def _fuzz(operation: Any, caller: Caller, examples: int, seed: int) -> None:
    """Generated cases, positive and negative, half of them naming real objects if it can."""
    label = f"{operation.method.upper()} {operation.path}"
    names = [p.name for p in operation.path_parameters]
    real = {n: caller.world.ids[n] for n in names if n in caller.world.ids}
    strategies = [operation.as_strategy(mode) for mode in GenerationMode]
    if real:
        strategies += [operation.as_strategy(mode, path_parameters=real) for mode in GenerationMode]
    for strategy in strategies:
        _drive(strategy, max(1, examples // len(strategies)), seed, lambda c: caller.send(c, label))
    caller.tally.operations.add(label)


def _cover(operation: Any, caller: Caller, stride: int) -> None:
    """Schemathesis's coverage cases (boundaries, missing and mistyped values): every
    ``stride``-th, leaving out its probes of methods the operation does not have."""
    label = f"{operation.method.upper()} {operation.path}"
    schema = operation.schema
    config = schema.config.generation_for(operation=operation, phase="coverage")
    cases = schema.iter_coverage_cases(
        operation, generation_modes=list(GenerationMode), generation_config=config
    )
    mine = (c for c in cases if c.method.upper() == operation.method.upper())
    for case in itertools.islice(mine, 0, None, stride):
        caller.send(case, label)


def _edge_values(schema: dict[str, Any], spec: dict[str, Any]) -> list[Any]:
    kinds = [_resolve(schema, spec)]
    kinds += [_resolve(k, spec) for k in kinds[0].get("anyOf", [])]
    values: list[Any] = []
    if any(k.get("type") == "integer" for k in kinds):
        values += EDGE_INTEGERS
    if any(k.get("format") == "date-time" for k in kinds):
        values += EDGE_TIMES
    return values


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def _edges(operation: Any, caller: Caller, spec: dict[str, Any], seed: int) -> None:
    """Each integer and date-time parameter and top-level JSON field at the edges of what
    64-bit integers and years 1 to 9999 in UTC can hold, the rest generated (positive)."""
    label = f"{operation.method.upper()} {operation.path}"
    doc = spec["paths"][operation.path][operation.method.lower()]
    for parameter in doc.get("parameters", []):
        where = {"query": "query", "path": "path_parameters"}.get(parameter["in"])
        for value in _edge_values(parameter.get("schema", {}), spec) if where else []:
            fixed = {where: {parameter["name"]: str(value)}}
            strategy = operation.as_strategy(GenerationMode.POSITIVE, **fixed)
            _drive(strategy, 1, seed, lambda c: caller.send(c, label))
    content = doc.get("requestBody", {}).get("content", {}).get("application/json", {})
    fields = _resolve(content.get("schema", {}), spec).get("properties", {})
    for name, field_schema in fields.items():
        for value in _edge_values(field_schema, spec):

            def edge(case: Any, name: str = name, value: Any = value) -> None:
                if isinstance(case.body, dict):
                    case.body[name] = value
                    caller.send(case, label)

            _drive(operation.as_strategy(GenerationMode.POSITIVE), 1, seed, edge)


def _first(counter: Counter[str], limit: int = 5) -> str:
    shown = "; ".join(f"{k} (x{n})" for k, n in counter.most_common(limit))
    more = len(counter) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


def _outcomes(tally: Tally, seconds: float) -> list[Outcome]:
    ops = len(tally.operations)
    scope = f"{tally.requests} requests over {ops} operations × {len(ROLES)} roles"  # noqa: RUF001
    errors = sum(tally.server_errors.values()) + sum(tally.transport_errors.values())
    violations = sum(tally.violations.values())
    leaks = sum(tally.leaks.values())
    return [
        Outcome(
            AREA,
            f"{scope}: {errors} server errors",
            errors == 0 and tally.requests > 0,
            f"no 5xx and no dropped connection in {seconds:.0f} s"
            if errors == 0
            else f"{_first(tally.server_errors + tally.transport_errors)}; log: {SERVER_LOG}",
        ),
        Outcome(
            AREA,
            f"schema conformance of {tally.requests} responses: {violations} violations",
            violations == 0 and tally.requests > 0,
            "every status documented, every body as documented"
            if violations == 0
            else _first(tally.violations),
        ),
        Outcome(
            AREA,
            f"{tally.error_bodies} error bodies free of private values",
            leaks == 0 and tally.error_bodies > 0,
            "no value of an internal, confidential or secret float column"
            if leaks == 0
            else _first(tally.leaks),
        ),
    ]


def run(quick: bool = False) -> list[Outcome]:
    """Fuzz every operation as each role; report server errors, conformance and leaks."""
    examples, stride = (10, 8) if quick else (50, 1)
    started = time.monotonic()
    tally = Tally()
    # The upload operation's Parquet body is bytes like any other.
    schemathesis.serializer.alias("application/vnd.apache.parquet", "application/octet-stream")
    with tempfile.TemporaryDirectory(prefix="veil-fuzz-") as home_name:
        home = Path(home_name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
        # No rate limit: it would answer 429 (documented) in place of the routes under test.
        env |= {"VEIL_DATA_DIR": str(home / "veil"), "VEIL_RATE_LIMIT_PER_S": "0"}
        env |= {"PYTHONPATH": str(ROOT)}
        with server(["veil"], env, home / "server.log", "/v1/health") as veil:
            url = f"http://{HOST}:{veil.port}"
            world = build_world(url, (home / "veil" / TOKEN_FILE).read_text(), 500)
            schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
            spec = httpx.get(f"{url}/openapi.json").json()
            operations = []
            for result in schema.get_all_operations():
                if isinstance(result, Ok):
                    operations.append(result.ok())
                else:  # an operation schemathesis cannot read is itself a schema problem
                    tally.violations[f"an operation's schema: {type(result.err()).__name__}"] += 1
            for role in ROLES:
                caller = Caller(url, role, world, tally)
                for seed, operation in enumerate(operations):
                    _fuzz(operation, caller, examples, seed)
                    _cover(operation, caller, stride)
                    _edges(operation, caller, spec, seed)
        if tally.server_errors:  # the tracebacks, for whoever fixes them (request values only)
            shutil.copyfile(home / "server.log", SERVER_LOG)
    return _outcomes(tally, time.monotonic() - started)


if __name__ == "__main__":
    main(run)
