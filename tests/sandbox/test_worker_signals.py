"""``veil worker``'s SIGINT/SIGTERM: a flag, never an exception raised wherever the
signal lands (one landed once in a callback where Python ignores exceptions, and the
worker ran on until killed)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sandbox import service
from sandbox.config.settings import Settings


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_sets_the_flag_and_the_code_it_lands_in_runs_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, number: signal.Signals
) -> None:
    ran_on: list[bool] = []

    def starting(settings: Settings, stop: threading.Event) -> None:
        os.kill(os.getpid(), number)  # delivered to this (the main) thread's next bytecodes
        deadline = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        ran_on.append(stop.is_set())  # reached: nothing was raised in here

    before = signal.getsignal(number)
    monkeypatch.setattr(service, "_run_worker", starting)
    service.run_worker(Settings(data_dir=tmp_path))
    assert ran_on == [True]
    assert signal.getsignal(number) == before  # the handlers are given back
