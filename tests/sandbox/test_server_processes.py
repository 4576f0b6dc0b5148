"""``sandbox.server.processes``: N API processes on one address, each listening on its own
socket, so that connections arriving together are spread over all of them.

A small ASGI app (``pid_app``) answers each request with its process id: the test opens many
connections at once, as a proxy's pool or a load test does, and asks on each which process
took it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.local import stop_processes
from keys.bao import free_port

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 2
CONNECTIONS = 64

SERVE = """
import sys
from sandbox.server.processes import serve
serve("tests.sandbox.pid_app:app", int(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]),
      log_level="warning")
"""


def _ask(sock: socket.socket) -> int:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: veil\r\n\r\n")
    answer = b""
    while not (b"\r\n\r\n" in answer and answer.endswith(b"\n") and answer[-2:] != b"\r\n"):
        chunk = sock.recv(4096)
        assert chunk, f"the connection closed after {answer!r}"
        answer += chunk
    return int(answer.split(b"\r\n\r\n", 1)[1])  # the body: the process id and "\n"


@contextlib.contextmanager
def _served(processes: int, log: Path) -> Iterator[int]:
    port = free_port()
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(port), str(processes)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(_listening(port)) < processes:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        yield port
    finally:
        stop_processes([server])


def _listening(port: int) -> list[str]:
    """The listening TCP sockets on ``port`` (IPv4), as the kernel lists them: one line each."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return [
        row
        for row in rows
        if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A"  # LISTEN
    ]


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="Linux: SO_REUSEPORT")
def test_each_process_listens_on_its_own_socket_and_takes_a_share(tmp_path: Path) -> None:
    with _served(PROCESSES, tmp_path / "serve.log") as port:
        # One listening socket per process (uvicorn's own workers share a single one).
        assert len(_listening(port)) == PROCESSES
        # Connections opened together, all before the first request.
        connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
        try:
            served = Counter(_ask(c) for c in connections)
            again = Counter(_ask(c) for c in connections)  # keep-alive: each stays with its own
        finally:
            for c in connections:
                c.close()
    assert len(served) == PROCESSES, served
    # The kernel's hash spreads them: with 64, a share under 8 has odds below 1e-9.
    assert min(served.values()) >= CONNECTIONS // 8, served
    assert again == served


def test_one_process_serves_as_uvicorn_does(tmp_path: Path) -> None:
    with (
        _served(1, tmp_path / "serve.log") as port,
        socket.create_connection(("127.0.0.1", port)) as c,
    ):
        assert _ask(c) > 0


def test_an_address_in_use_fails_at_once(tmp_path: Path) -> None:
    """The parent binds the address before starting any process: a port already taken (here
    by a socket without SO_REUSEPORT) stops it, as uvicorn does."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", SERVE, str(port), str(PROCESSES)],
            env=os.environ | {"PYTHONPATH": str(ROOT)}, cwd=ROOT,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode != 0
    assert "Address already in use" in done.stderr, done.stderr[-2000:]
