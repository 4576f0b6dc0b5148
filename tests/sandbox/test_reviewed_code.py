"""Tier 5 end to end: submit a syft function, review it, run it sandboxed, check its output.

Real PySyft, real bubblewrap, real OpenBao: each run on the mock (at submission) and on
the data (the job) happens in a job sandbox.  The tests share one Veil, each with a world of
its own: the job worker's spare sandbox, PySyft imported, passes from one test to the next.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import update

from keys import LocalKeyServer
from sandbox.client import ApiError
from sandbox.client import VeilClient as ApiClient
from sandbox.demo.data import MACHINES
from sandbox.runtime.veil import Veil
from sandbox.store.models import CodeRequest, Job
from tests.sandbox.conftest import PURPOSE, World, make_world, shared_veil

MEAN_CYCLE = """import syft as sy


@sy.syft_function_single_use(data=asset)
def mean_cycle_by_machine(data):
    return data.groupby("machine")["cycle_time_s"].mean()
"""

RAW_ROWS = """import syft as sy


@sy.syft_function_single_use(data=asset)
def just_the_rows(data):
    return data[["machine", "cycle_time_s"]]
"""

MAX_CYCLE = """import syft as sy


@sy.syft_function_single_use(data=asset)
def longest_cycle(data):
    return {"longest_cycle_s": float(data["cycle_time_s"].max())}
"""

DP_DEFECTS = """import syft as sy


@sy.syft_function_single_use(data=asset)
def mean_defects(data):
    import veil_dp

    return {"mean_defects": veil_dp.mean(data, "defects", epsilon=0.5)}
"""

RAW_DEFECTS = """import syft as sy


@sy.syft_function_single_use(data=asset)
def mean_defects_without_dp(data):
    return {"mean_defects": float(data["defects"].mean()) + 0.001}
"""


def said(error: pytest.ExceptionInfo[ApiError]) -> str:
    """Everything an API error says: its detail and its reasons."""
    return " ".join([error.value.detail, *error.value.reasons])


def reach_out(target: str) -> str:
    """Code that passes the submission checks but tries to leave the sandbox at run time
    (numpy's DataSource opens URLs and files); it does nothing to the mock."""
    return f'''import syft as sy


@sy.syft_function_single_use(data=asset)
def reach_out(data):
    import numpy as np

    if len(data) > 1000:
        np.DataSource(None).open("{target}").read()
    return data.groupby("machine")["cycle_time_s"].mean()
'''


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
    return make_world(veil, url, rows=2_000, epsilon=2.0, tiers=[0, 1, 5], operator_token=operator)


def audited(world: World, limit: int) -> set[str]:
    """The actions of the newest events on the world's enterprise (the Veil is shared)."""
    events = world.operator.audit_events(limit=limit, tenant_id=world.acme.me()["id"])
    return {e["action"] for e in events}


def approved(world: World, source: str) -> str:
    code = world.provider.submit_code(world.dataset_id, PURPOSE, source)
    assert code["status"] == "pending"
    world.acme.approve_code(code["id"], "reviewed: aggregates only")
    return str(code["id"])


def run(world: World, code_id: str, epsilon: float = 0.0) -> dict[str, object]:
    job = world.provider.submit_code_job(world.dataset_id, PURPOSE, code_id, epsilon)
    return world.provider.wait_for_job(str(job["id"]), timeout=240)


@pytest.mark.slow  # PySyft twice, ~30 s (make test-slow); tier 5 stays in make test below
def test_an_approved_benign_function_releases_its_aggregate(coder: World) -> None:
    # The provider first runs it here, through PySyft, on the mock (tier 1).
    local = coder.provider.try_code_on_mock(coder.dataset_id, MEAN_CYCLE)
    assert set(local.index) <= set(MACHINES) and len(local) > 0  # type: ignore[attr-defined]
    code = coder.provider.submit_code(coder.dataset_id, PURPOSE, MEAN_CYCLE)
    assert code["columns"] == ["cycle_time_s", "machine"]
    assert code["sha256"] and code["function_name"] == "mean_cycle_by_machine"
    # The enterprise sees the code, its columns and its output on the mock.
    review = coder.acme.get_code(code["id"])
    assert review["source"] == MEAN_CYCLE and review["mock_output"]["value"]
    assert coder.acme.list_code("pending")[0]["id"] == code["id"]
    coder.acme.approve_code(code["id"], "aggregates by machine are fine")
    job = run(coder, code["id"])
    assert job["status"] == "released", job["error"]
    result = coder.provider.get_result(str(job["id"]))
    assert result["checks"]["status"] == "pass" and result["code_sha256"] == code["sha256"]
    means = result["output"]  # a Series: {"index": [machine, ...], "values": [mean, ...]}
    assert set(means["index"]) <= set(MACHINES)
    assert means["index"] and all(10 <= v <= 90 for v in means["values"])
    # Released as tier 2 releases the same cells: perturbed by the cell-key method (close to
    # the exact means, never them), so tier-5 outputs cannot be differenced either.
    rows = pl.read_csv(io.BytesIO(coder.csv))
    exact = dict(rows.group_by("machine").agg(pl.col("cycle_time_s").mean()).iter_rows())
    released = dict(zip(means["index"], means["values"], strict=True))
    assert all(abs(released[m] - exact[m]) < 5 for m in released)
    assert all(released[m] != exact[m] for m in released)
    assert {"code.submitted", "code.approved", "job.released"} <= audited(coder, 50)


def held_at_rest(veil: Veil, job_id: str) -> tuple[Path, bytes]:
    """The job's held object (path, bytes on disk); the job row holds no output."""
    with veil.db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.result is None and job.artifact_path is not None
        path = veil.settings.objects_dir / job.artifact_path
    return path, path.read_bytes()


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_raw_rows_are_blocked_and_a_row_value_held_until_the_enterprise_decides(
    coder: World, veil: Veil
) -> None:
    rows = run(coder, approved(coder, RAW_ROWS))
    assert rows["status"] == "failed"
    assert str(rows["error"]).startswith("the output checks blocked the output")
    with pytest.raises(ApiError) as nothing:
        coder.provider.get_result(str(rows["id"]))
    assert nothing.value.status == 409

    held = run(coder, approved(coder, MAX_CYCLE))
    assert held["status"] == "held", held
    assert held["output_check"]["status"] == "held"
    with pytest.raises(ApiError):
        coder.provider.get_result(str(held["id"]))  # not released yet
    with pytest.raises(ApiError) as refused:
        coder.provider.held_output(str(held["id"]))  # only the enterprise may look
    assert refused.value.status == 403
    look = coder.acme.held_output(str(held["id"]))
    assert look["checks"]["reasons"]
    # At rest the held output is encrypted under the enterprise's key: neither the database
    # nor the object holds it in plaintext.
    longest = look["output"]["longest_cycle_s"]
    path, stored = held_at_rest(veil, str(held["id"]))
    assert repr(longest).encode() not in stored and b"longest_cycle_s" not in stored
    database = b"".join(p.read_bytes() for p in veil.settings.data_dir.glob("veil.db*"))
    assert repr(longest).encode() not in database
    released = coder.acme.release_held(str(held["id"]), "these counts are not sensitive")
    assert released["output_check"]["status"] == "held"
    assert released["status"] == "released"
    result = coder.provider.get_result(str(held["id"]))
    assert result["checks"]["released_by_hand"] == "these counts are not sensitive"
    # The same approved code again: held again, and this time rejected.
    again = run(coder, str(held["query"]["code_request_id"]))
    assert again["status"] == "held"
    again_path, _ = held_at_rest(veil, str(again["id"]))
    rejected = coder.acme.reject_held(str(again["id"]), "a maximum is a row's value")
    assert rejected["status"] == "failed" and "rejected" in str(rejected["error"])
    assert not again_path.exists()  # a rejected output is deleted
    assert not path.exists()  # and one released by hand lives on as the result only
    with pytest.raises(ApiError):
        coder.provider.get_result(str(again["id"]))
    assert {"job.held", "job.rejected", "job.released"} <= audited(coder, 100)


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_confidential_columns_need_dp_output_and_the_spend_is_reported(coder: World) -> None:
    dp = run(coder, approved(coder, DP_DEFECTS), epsilon=0.5)
    assert dp["status"] == "released", dp
    result = coder.provider.get_result(str(dp["id"]))
    assert result["epsilon"] == 0.5 and 0 <= result["output"]["mean_defects"] <= 50
    assert coder.provider.get_grant(coder.grant_id)["budget"]["epsilon_spent"] == 0.5

    raw = approved(coder, RAW_DEFECTS)
    with pytest.raises(ApiError) as denied:
        coder.provider.submit_code_job(coder.dataset_id, PURPOSE, raw, 0.0)
    assert "confidential" in said(denied) and "epsilon > 0" in said(denied)
    blocked = run(coder, raw, epsilon=0.2)  # paid for, but computed without veil_dp
    assert blocked["status"] == "failed"
    assert "use veil_dp" in str(blocked["error"])


@pytest.mark.slow
def test_a_function_changed_after_approval_or_denied_never_runs(coder: World, veil: Veil) -> None:
    code_id = approved(coder, MEAN_CYCLE)
    with veil.db.transaction() as session:  # someone edits the stored source afterwards
        session.execute(
            update(CodeRequest)
            .where(CodeRequest.id == code_id)
            .values(source=MEAN_CYCLE.replace('"machine"', '"shift"'))
        )
    with pytest.raises(ApiError) as changed:
        coder.provider.submit_code_job(coder.dataset_id, PURPOSE, code_id)
    assert "changed after its approval" in said(changed)

    denied = coder.provider.submit_code(coder.dataset_id, PURPOSE, RAW_ROWS)
    coder.acme.deny_code(denied["id"], "returns rows")
    with pytest.raises(ApiError) as refused:
        coder.provider.submit_code_job(coder.dataset_id, PURPOSE, denied["id"])
    assert refused.value.status == 403 and "denied, not approved" in said(refused)
    pending = coder.provider.submit_code(coder.dataset_id, PURPOSE, MAX_CYCLE)
    with pytest.raises(ApiError) as waiting:
        coder.provider.submit_code_job(coder.dataset_id, PURPOSE, pending["id"])
    assert "pending, not approved" in said(waiting)
    with pytest.raises(ApiError) as again:
        coder.acme.approve_code(denied["id"], "changed my mind")
    assert again.value.status == 409


@pytest.mark.slow
def test_code_that_tries_to_leave_the_sandbox_fails(coder: World, veil: Veil) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(1.0)
    accepted: list[object] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            accepted.append(server.accept())

    listener = threading.Thread(target=accept)
    listener.start()
    port = server.getsockname()[1]
    network = run(coder, approved(coder, reach_out(f"http://127.0.0.1:{port}/rows.csv")))
    database = run(coder, approved(coder, reach_out(str(veil.settings.data_dir / "veil.db"))))
    listener.join()
    server.close()
    assert accepted == []
    for job in (network, database):
        assert job["status"] == "failed"
        assert "reach_out" in str(job["error"])  # names the function and the error type only


@pytest.mark.slow
def test_the_cli_submits_reviews_and_runs_code(coder: World, tmp_path: Path) -> None:
    def veil(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "VEIL_URL": coder.url, "VEIL_TOKEN": token}
        return subprocess.run(
            [sys.executable, "-m", "sandbox.cli", "code", *args],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip

    def token(client: ApiClient) -> str:
        return str(client._http.headers["Authorization"]).removeprefix("Bearer ")

    source = tmp_path / "mean_cycle.py"
    source.write_text(MEAN_CYCLE)
    provider, acme = token(coder.provider), token(coder.acme)
    submitted = veil(provider, "submit", str(source), "--dataset", coder.dataset_id,
                     "--purpose", PURPOSE, "--json")  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    code_id = json.loads(submitted.stdout)["id"]
    pending = json.loads(veil(acme, "list", "--status", "pending", "--json").stdout)
    assert [c["id"] for c in pending] == [code_id]
    shown = veil(acme, "show", code_id)
    assert "mean_cycle_by_machine" in shown.stdout and 'groupby("machine")' in shown.stdout
    assert veil(acme, "approve", code_id, "--reason", "aggregates only").returncode == 0
    ran = veil(provider, "run", code_id, "--dataset", coder.dataset_id, "--purpose", PURPOSE,
               "--json")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["checks"]["status"] == "pass" and result["output"]["index"]
    denied = veil(acme, "deny", code_id, "--reason", "too late")
    said_ = " ".join((denied.stdout + denied.stderr).split())  # rich wraps long lines
    assert denied.returncode != 0 and "was already approved" in said_
