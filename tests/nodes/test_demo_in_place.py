"""`veil demo`'s data read in place (``sandbox.demo.in_place``), on a real node: the
simulated MES (SQLite) read twice incrementally, the simulated machine (a real asyncua
server) subscribed, the lag to the control plane measured, a DP query released.

The node runs in this process with its source scheduler; a thread plays its link."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from keys import LocalKeyServer
from node.setup.demo import published_version
from sandbox.demo.in_place import MES_FIRST, MES_NEW, read_in_place
from sandbox.demo.plant import SimulatedMachine
from sandbox.runtime.veil import Veil
from tests.nodes.conftest import NodeWorld, make_node_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # make test-slow: ~10 s or more


@contextmanager
def linked(world: NodeWorld) -> Iterator[None]:
    """The node's link rounds, as ``veil node run`` makes them, until the block ends."""
    stop = threading.Event()

    def rounds() -> None:
        while not stop.wait(0.1):
            world.sync()

    thread = threading.Thread(target=rounds, name="test-node-link", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def test_the_demo_reads_the_mes_and_the_machine_on_the_node(
    tmp_path: Path, veil: Veil, api: str, own_key_server: LocalKeyServer
) -> None:
    out = io.StringIO()
    console = Console(file=out, width=400, color_system=None)
    with (
        SimulatedMachine() as machine,
        make_node_world(tmp_path, veil, api, own_key_server, source_poll_s=0.2) as world,
        linked(world),
    ):
        began = time.monotonic()
        read_in_place(
            world.enterprise, world.provider, lambda grant_id: None, machine,
            tmp_path / "plant", lambda dataset: published_version(world.cp, dataset),
            [veil.settings.data_dir, world.node_dir], console,
        )  # fmt: skip
        took = time.monotonic() - began
    text = out.getvalue()
    print(f"{text}\nthe story took {took:.1f} s")  # shown with -s
    # The MES: a version per run, the second with only the new rows, the cursor moved on.
    assert f"version 1, {MES_FIRST:,} rows" in text, text
    assert f"cursor LOG_ID {MES_FIRST}" in text, text
    assert f"version 2, {MES_NEW} new rows read" in text, text
    assert f"{MES_FIRST + MES_NEW:,} in all; cursor LOG_ID {MES_FIRST + MES_NEW}" in text, text
    # The machine: versions as it runs, its last change stored and then queryable.
    assert re.search(r"the machine runs: version [2-9]\d*, \d+ rows", text), text
    lag = re.search(
        r"stored on Acme's node (\d+\.\d+) s later \(version (\d+), (\d+) rows.*queryable "
        r"through the control plane (\d+\.\d+) s later \(lathe-01 online\)",
        text,
    )
    assert lag is not None, text
    assert 0 < float(lag.group(1)) <= float(lag.group(4)) < 30
    assert int(lag.group(3)) == 1 + machine.changes
    assert "credentials: password: encrypted on Acme's node" in text, text
    assert "the machine's password in clear in 0 of the" in text, text
    # The provider's DP query ran on the version that held the machine's stop (or later).
    released = re.search(r"Acme's node runs the query on version (\d+) and releases", text)
    assert released is not None, text
    assert int(released.group(1)) >= int(lag.group(2))
    assert "mean(spindle_temp_c)" in text, text
