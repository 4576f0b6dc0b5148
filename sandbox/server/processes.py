"""Several API processes on one address (``veil serve --processes N``), each accepting its own
share of the connections.

uvicorn's workers listen on one shared socket, and whichever process wakes first accepts
what is waiting (its event loop takes many connections in one go): the connections that arrive
together, as a proxy's keep-alive pool or a load test opens them, can all land in one
process, which then serves them on one core while the others wait.  Measured with
``bench/submit_bench.py`` (2 processes, 50 connections): the two processes' shares of the
CPU ranged from 50/50 to 100/0 from one run to the next, and the rate with them.

Here each process listens on a socket of its own, bound to the same address with
``SO_REUSEPORT``, and the kernel hands each new connection to one of them by a hash of its
addresses: an even share, whenever the connections arrive.  uvicorn still starts, watches
and restarts the processes.  The parent binds the address first (so an address in use fails
at once, as before) and never listens on it.  Only processes of the same user may bind a
port another holds with ``SO_REUSEPORT``.  Where the option does not exist, or uvicorn is to
serve a Unix socket or an inherited descriptor, the processes share one socket as before.
"""

from __future__ import annotations

import functools
import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess


def serve(app: str, processes: int, **options: Any) -> None:
    """Serve ``app`` (an import string; ``options`` are ``uvicorn.run``'s) in ``processes``
    processes, each listening on its own socket."""
    shared = options.get("uds") or options.get("fd")  # uvicorn's own sockets: shared
    if processes < 2 or not hasattr(socket, "SO_REUSEPORT") or shared:
        uvicorn.run(app, workers=processes, **options)
        return
    config = uvicorn.Config(app, workers=processes, **options)
    address = _bound(config.host, config.port)  # never listened on: each process binds its own
    try:
        Multiprocess(config, functools.partial(_serve_own, config), [address]).run()
    finally:
        address.close()


def _bound(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other processes of this user may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _serve_own(config: uvicorn.Config, sockets: list[socket.socket] | None = None) -> None:
    """One process: serve on a socket of its own, bound to the parent's address (its port
    too when ``config`` asked for any free one)."""
    assert sockets, "uvicorn passes the parent's socket"
    host, port = sockets[0].getsockname()[:2]
    for inherited in sockets:
        inherited.close()
    uvicorn.Server(config).run(sockets=[_bound(host, port)])
