"""A killed sandbox leaves no process behind: not the job's, not the warm worker's.

A cancel, the wall-clock limit, a data stream that fails, the pool's shutdown: each kills
the sandbox, and then no process of it may live on, holding the job's data.  Each test runs
``tests/sandbox/probe_child.py`` from a path of its own, so that every process of its
sandbox (both bubblewraps, the job's, a warm worker's forked one) names that path on its
command line, and looks for them after the kill.

Bubblewrap's second process, the init of the sandbox's PID namespace, runs in a session of
its own (``--new-session``), out of reach of a signal to the first one's process group; the
job's processes run under it.  It follows the first with ``--die-with-parent`` only from
the end of its setup, after it has started the job; killed before that, it lived on, and
the job with it.  The ``gated`` tests hold the init at that point (a lock file that is a
FIFO: opening it waits for a writer) until the test has looked, so that the kill lands in
that window every time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.config.settings import Settings
from sandbox.isolation.child import Task
from sandbox.isolation.namespace import SandboxInit
from sandbox.isolation.pool import SandboxError, SandboxPool, SandboxProcess

PROBE = Path(__file__).with_name("probe_child.py")
SLEEP = Task("probe", None, None, extra={"code": "progress()\nimport time\ntime.sleep(3600)"})
#: Generous: the machine may be busy with other tests.
DEADLINE_S = 60.0


def processes_of(entry: Path) -> list[int]:
    """Live processes whose command line names ``entry`` (zombies have none)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if str(entry).encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


def wait_until(condition: Callable[[], bool], failure: Callable[[], str]) -> None:
    """Poll ``condition`` until it holds; fail with ``failure()`` after ``DEADLINE_S``."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"{failure()} after {DEADLINE_S:g} s"
        time.sleep(0.05)


def assert_none_left(entry: Path) -> None:
    """No process of the sandbox is left (polled: the check must not race the kill)."""

    def left() -> str:
        names = []
        for pid in processes_of(entry):
            with contextlib.suppress(OSError):
                names.append(f"{pid} {Path(f'/proc/{pid}/comm').read_text().strip()}")
        return ", ".join(names)

    wait_until(lambda: not processes_of(entry), lambda: f"the killed sandbox's {left()} live on")


@pytest.fixture
def entry(tmp_path: Path) -> Iterator[Path]:
    """The probe, at a path of this test's own; whatever is left of its sandboxes is
    killed afterwards (a failing test leaves no sleeping job behind)."""
    path = tmp_path / "probe_child.py"
    shutil.copy(PROBE, path)
    yield path
    for pid in processes_of(path):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


class Gate:
    """Holds each sandbox's init, once it has started the job and before it follows its
    parent (``--die-with-parent``), until opened: ``bwrap`` on the path is a script that
    runs the real one with ``--lock-file`` on a FIFO, which the init opens first."""

    def __init__(self, folder: Path) -> None:
        real = shutil.which("bwrap")
        assert real is not None, "bubblewrap (Debian: bubblewrap) is not installed"
        self.fifo = folder / "gate"
        os.mkfifo(self.fifo)
        script = folder / "bwrap"
        inside = "/veil-test-gate"
        script.write_text(
            f'#!/bin/sh\nexec {real} --bind "{self.fifo}" {inside} --lock-file {inside} "$@"\n'
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def open(self) -> None:
        with contextlib.suppress(OSError):  # ENXIO: no init waits at it any more
            os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.fixture(params=[True, False], ids=["gated", "ungated"])
def gated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[bool]:
    """Whether the test's sandboxes are held at a ``Gate`` (opened after the test)."""
    if not request.param:
        yield False
        return
    folder = tmp_path / "gated"
    folder.mkdir()
    gate = Gate(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        yield True
    gate.open()


class Failing:
    """A job's data that fails while it is sent (a stored object that does not
    authenticate)."""

    size = 1000

    def write_to(self, out: object) -> None:
        raise ValueError("the stored object does not authenticate")


def settings(tmp_path: Path, wall_s: float = 600) -> Settings:
    return Settings(
        data_dir=tmp_path / "veil", job_memory_mb=1024, job_cpu_s=600, job_wall_s=wall_s,
        job_tmpfs_mb=16,
    )  # fmt: skip


def end(
    how: str,
    pool: SandboxPool,
    box: SandboxProcess,
    started: Callable[[], bool] = lambda: True,
    on_progress: Callable[[dict[str, object]], None] | None = None,
) -> None:
    """End the sandbox's job ``how``: every way there is to kill a sandbox.  A cancel
    comes once ``started`` says so."""
    if how == "pool closed":
        pool.close()
        return
    expected: type[Exception] = ValueError if how == "data fails" else SandboxError
    with pytest.raises(expected):
        box.run(
            SLEEP,
            Failing() if how == "data fails" else b"rows",
            on_progress=on_progress,
            should_stop=started if how == "cancelled" else None,
        )


@pytest.mark.parametrize("reusable", [False, True], ids=["single-use", "warm worker"])
@pytest.mark.parametrize("how", ["cancelled", "wall clock", "data fails", "pool closed"])
def test_a_killed_sandbox_leaves_no_process(
    tmp_path: Path, entry: Path, gated: bool, reusable: bool, how: str
) -> None:
    wall = 2.0 if how == "wall clock" else 600
    pool = SandboxPool(settings(tmp_path, wall), entry=entry, warm=True, reusable=reusable)
    try:
        pool.prepare()  # the spare, or the warm worker
        box = pool._spare
        assert box is not None and box.wait_ready(DEADLINE_S)
        progress: list[dict[str, object]] = []  # the job's code says it runs
        end(how, pool, box, started=lambda: bool(progress), on_progress=progress.append)
        assert not box.alive
        assert_none_left(entry)
    finally:
        pool.close()


@pytest.mark.parametrize("reused", [False, True], ids=["its init", "a reused pid"])
def test_the_reported_init_is_killed_only_while_in_the_reported_namespace(reused: bool) -> None:
    """Read at the kill, the report may be old: its pid, reused since, is then another
    process (in another namespace), which is left alone."""
    process = subprocess.Popen(["sleep", "600"])
    try:
        namespace = os.stat(f"/proc/{process.pid}/ns/pid").st_ino + (1 if reused else 0)
        init = SandboxInit()
        report = {"child-pid": process.pid, "pid-namespace": namespace}
        os.write(init.info_fd, json.dumps(report).encode())
        init.started()
        init.kill()
        assert (process.poll() is None) is reused  # waited for when killed: no race here
    finally:
        process.kill()
        process.wait()


def test_without_a_report_nothing_is_signalled() -> None:
    """Bubblewrap that fails before it makes the namespace reports nothing."""
    init = SandboxInit()
    init.started()  # and it ended: the report is empty
    init.kill()
