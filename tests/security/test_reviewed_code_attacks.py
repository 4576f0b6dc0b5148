"""Tier 5 under attack: provider code that is approved but hostile, run for real.

Each class of attack the audit used, tried with code of our own that passes the source
filter (the filter is a help to reviewers, not the wall):

* **the data a process holds** — the function walks Python frames up from a running
  generator expression and counts the columns of every frame it can reach; and, below
  PySyft, a process scans its own memory for values of columns it was not granted;
* **forging DP** — a function given a confidential column returns raw values where DP
  values are required, after trying to slip them into whatever record it can reach;
* **encoding** — confidential values as digit strings, internal values after an affine
  transform and split into lists under the row-level limit;
* **data-dependent shape** — DP values placed by a condition on the data.

Real PySyft, bubblewrap and OpenBao; each job runs its two sandboxes (the private run
and the reference run on the mock).  The tests share one Veil, each with a world of its own.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from keys import LocalKeyServer
from sandbox.client import ApiError
from sandbox.config.settings import Settings
from sandbox.isolation.child import Task
from sandbox.isolation.pool import SandboxPool
from sandbox.jobs.code_runs import granted_rows
from sandbox.runtime.veil import Veil
from sandbox.store.models import CodeRequest
from tests.sandbox.conftest import PURPOSE, World, make_world, shared_veil

PROBE = Path(__file__).parents[1] / "sandbox" / "probe_child.py"


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, key_server: LocalKeyServer
) -> Iterator[tuple[Veil, str, str]]:
    with shared_veil(tmp_path_factory.mktemp("tier5"), key_server) as running:
        yield running


@pytest.fixture
def veil(shared: tuple[Veil, str, str]) -> Veil:
    return shared[0]


@pytest.fixture
def coder(shared: tuple[Veil, str, str]) -> World:
    veil, url, operator = shared
    return make_world(veil, url, rows=600, epsilon=5.0, tiers=[0, 1, 5], operator_token=operator)


def approved(world: World, source: str) -> str:
    code = world.provider.submit_code(world.dataset_id, PURPOSE, source)
    world.acme.approve_code(code["id"], "approved (in this test: by a careless reviewer)")
    return str(code["id"])


def run(world: World, source: str, epsilon: float = 0.0) -> dict[str, object]:
    code_id = approved(world, source)
    job = world.provider.submit_code_job(world.dataset_id, PURPOSE, code_id, epsilon)
    return world.provider.wait_for_job(str(job["id"]), timeout=300)


# ---------------------------------------------------------------- the data a process holds

FRAME_WALK = """import syft as sy


@sy.syft_function_single_use(data=asset)
def count_reachable_columns(data):
    import pandas as pd

    gen = None
    gen = (gen.gi_frame.f_back for _ in [0])
    frame = next(gen)
    names = set()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            try:
                names.update(str(name) for name in value.columns)
            except Exception:
                pass
        frame = frame.f_back
    seen = len(data[["machine", "cycle_time_s"]]) * 0 + len(names)
    return {"columns_seen": seen}
"""


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_frames_reachable_from_provider_code_hold_only_the_granted_columns(
    coder: World,
) -> None:
    job = run(coder, FRAME_WALK)
    assert job["status"] == "held", job  # an unrecognised number: for the enterprise only
    with pytest.raises(ApiError) as refused:
        coder.provider.held_output(str(job["id"]))
    assert refused.value.status == 403
    seen = coder.acme.held_output(str(job["id"]))["output"]["columns_seen"]
    # The walk reached frames holding frames (not vacuous), and every frame it could reach
    # held the request's two columns and nothing else: not the other granted ones, not
    # the ungranted or secret ones the dataset has.
    assert seen == 2


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


MEMORY_SCAN = """
import re
found = set()
with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
    for line in maps:
        start, end = (int(x, 16) for x in line.split()[0].split('-'))
        if 'r' not in line.split()[1] or end - start > 2**31:
            continue
        try:
            mem.seek(start)
            chunk = mem.read(end - start)
        except (OSError, ValueError, OverflowError):
            continue
        found.update(m.decode() for m in re.findall(rb'CANARY-[A-Z]+', chunk))
result = sorted(found)
"""


def test_a_process_is_sent_no_column_it_was_not_granted(tmp_path: Path) -> None:
    rows = 500
    data = _parquet(
        pl.DataFrame(
            {
                "machine": ["CANARY-" + "GRANTED"] * rows,
                "recipe": ["CANARY-" + "SECRET"] * rows,
                "supplier": ["CANARY-" + "UNGRANTED"] * rows,
            }
        )
    )
    _, payload = granted_rows(data, ("machine",))
    pool = SandboxPool(Settings(data_dir=tmp_path, job_wall_s=120), entry=PROBE, warm=False)
    try:
        answer = pool.take().run(Task("probe", None, None, extra={"code": MEMORY_SCAN}), payload)
    finally:
        pool.close()
    # Its whole address space holds the granted column's values, and no other column's.
    assert answer.message["result"] == ["CANARY-GRANTED"]


# ---------------------------------------------------------------- forging DP

FORGED_DP = """import syft as sy


@sy.syft_function_single_use(data=asset)
def raw_yield_as_dp(data):
    import veil_dp

    honest = veil_dp.count(data, epsilon=0.5)
    raw = float(data["yield_pct"].mean())
    output = {"$d": [["yield_pct", raw]]}
    forged = {"type": "result", "result": {"tier": 5, "output": output},
              "details": {"epsilon_spent": 0.5}, "dp_values": [raw], "blobs": 0}
    gen = None
    gen = (gen.gi_frame.f_back for _ in [0])
    frame = next(gen)
    while frame is not None:
        channel = frame.f_locals.get("channel")
        if channel is not None:
            channel.send(forged)
            break
        frame = frame.f_back
    return {"rows": honest, "yield_pct": raw}
"""


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_a_function_cannot_forge_a_dp_value(coder: World) -> None:
    job = run(coder, FORGED_DP, epsilon=1.0)
    assert job["status"] == "failed", job
    assert "confidential columns need DP output" in str(job["error"])


DIGITS = """import syft as sy


@sy.syft_function_single_use(data=asset)
def yields_as_text(data):
    import veil_dp

    text = "d" + "-".join(str(int(v)) for v in data["yield_pct"].head(40))
    return {"rows": veil_dp.count(data, epsilon=0.5), "note": text}
"""


@pytest.mark.slow
def test_confidential_values_as_text_are_blocked(coder: World) -> None:
    job = run(coder, DIGITS, epsilon=1.0)
    assert job["status"] == "failed", job
    assert "free text" in str(job["error"])


DATA_DEPENDENT_DP = """import syft as sy


@sy.syft_function_single_use(data=asset)
def placed_by_the_data(data):
    import veil_dp

    value = veil_dp.mean(data, "yield_pct", epsilon=0.5)
    if len(data) > 300:
        return {"many": value}
    return {"few": value}
"""


@pytest.mark.parametrize(
    "reference",
    ["stored at submission", pytest.param("run with the job", marks=pytest.mark.slow)],
)
@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_dp_values_placed_by_the_data_are_blocked(coder: World, veil: Veil, reference: str) -> None:
    code_id = approved(coder, DATA_DEPENDENT_DP)
    if reference == "run with the job":  # a request from before references were kept
        with veil.db.transaction() as session:
            request = session.get(CodeRequest, code_id)
            assert request is not None and request.reference is not None
            request.reference = None
    job = coder.provider.submit_code_job(coder.dataset_id, PURPOSE, code_id, 1.0)
    done = coder.provider.wait_for_job(str(job["id"]), timeout=300)
    # 600 rows of data, 200 of mock: the DP value lands under another key on each.
    assert done["status"] == "failed", done
    assert "shape" in str(done["error"])


# ---------------------------------------------------------------- encoding internal values

FAHRENHEIT_PARTS = """import syft as sy


@sy.syft_function_single_use(data=asset)
def temperatures_in_parts(data):
    values = [float(t) * 1.8 + 32 for t in data["temperature_c"]]
    return {"part" + str(i): values[i::40] for i in range(40)}
"""


@pytest.mark.slow
def test_internal_values_transformed_and_split_are_held_never_released(coder: World) -> None:
    job = run(coder, FAHRENHEIT_PARTS)
    assert job["status"] == "held", job
    reasons = " ".join(coder.acme.held_output(str(job["id"]))["checks"]["reasons"])
    assert "not values Veil can recompute" in reasons
    assert coder.provider.get_job(str(job["id"])).get("result") is None
