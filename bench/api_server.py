"""A server process for ``bench/api_bench.py``: Veil's API, or a bare FastAPI baseline.

The load generator must not share a GIL with the server, so each server runs
in its own process, started by the benchmark:

- ``api_server.py veil --port P [--profile FILE]``: the real Veil (settings from
  ``VEIL_*``; embedded OpenBao, SQLite) **without the job worker**, so submitted
  jobs only queue.  It creates the first operator and writes its token to
  ``<data_dir>/bench-operator-token`` (mode 0600) for the benchmark to set up
  its world.  With ``--profile``, every thread of the server (the event loop
  and the thread pool running the sync routes) is profiled with cProfile and
  the merged statistics are written to FILE when the server stops
  (``--profile-clock cpu``: each thread's CPU time instead of wall time).
- ``api_server.py veil --processes N``: the same, as N uvicorn worker processes on one
  port (``veil serve --processes N``'s way: the key server started, the database
  migrated and the operator made once here, then each process builds its app from the
  environment), for a shared database (``VEIL_DATABASE_URL``).  With ``--profile``,
  each process writes its own cProfile to FILE.<pid>.
- ``api_server.py bare --port P --get-body F --post-body F``: a bare FastAPI app
  whose ``GET /v1/grants/{id}`` and ``POST /v1/jobs`` return those bytes, with
  no authentication and no database (``bare-sync``: the same with ``def``
  routes, run in the thread pool like Veil's).

Both serve with uvicorn's defaults (uvloop and httptools when installed) and
no access log, like ``ApiThread``; SIGTERM stops them cleanly.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Response

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOKEN_FILE = "bench-operator-token"  # noqa: S105 - a file name, not a token


def bare_app(get_body: bytes, post_body: bytes, *, sync: bool = False) -> FastAPI:
    """The baseline: the same JSON bytes, no auth, no database (async routes unless ``sync``)."""
    app = FastAPI()

    def read() -> Response:
        return Response(get_body, media_type="application/json")

    def submit() -> Response:
        return Response(post_body, status_code=202, media_type="application/json")

    async def read_async() -> Response:
        return read()

    async def submit_async() -> Response:
        return submit()

    app.get("/v1/grants/{grant_id}")(read if sync else read_async)
    app.post("/v1/jobs")(submit if sync else submit_async)
    return app


class _AllThreads:
    """cProfile in the main thread and in every thread started later, merged at the end."""

    def __init__(self, clock: str = "wall") -> None:
        # "cpu": each thread's own CPU time, so waiting (locks, I/O, the GIL) does not count.
        self.timer = time.thread_time if clock == "cpu" else time.perf_counter
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_in_this_thread(self, *_: Any) -> None:
        profile = cProfile.Profile(self.timer)
        with self._lock:
            self.profiles.append(profile)
        profile.enable()  # replaces this bootstrap hook for the rest of the thread

    def start(self) -> None:
        threading.setprofile(self._start_in_this_thread)
        self._start_in_this_thread()

    def dump(self, path: Path) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        with self._lock:
            profiles = list(self.profiles)
        for profile in profiles:
            profile.disable()  # only stops the calling thread's; the others' stats still merge
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(str(path))


def _exit_quietly(*_: Any) -> None:
    raise SystemExit(0)


def _serve(app: FastAPI, port: int, profile: Path | None, clock: str = "wall") -> None:
    # uvicorn stops on SIGTERM, then raises the signal again: exiting then (not dying) runs the
    # ``finally`` blocks, which write the profile and stop the embedded key server.
    signal.signal(signal.SIGTERM, _exit_quietly)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    profiler = _AllThreads(clock) if profile else None
    if profiler:
        profiler.start()
    try:
        uvicorn.Server(config).run()
    finally:
        if profiler and profile:
            profiler.dump(profile)


def _write_token(data_dir: Path, token: str | None) -> None:
    if token is None:
        raise SystemExit("an operator exists already: start from an empty VEIL_DATA_DIR")
    fd = os.open(data_dir / TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)


def _veil(port: int, profile: Path | None, clock: str) -> None:
    from sandbox.config.settings import Settings
    from sandbox.server.app import create_app
    from sandbox.service import bootstrap_operator, open_veil

    settings = Settings()
    with open_veil(settings, worker=False) as veil:
        _write_token(settings.data_dir, bootstrap_operator(veil))
        _serve(create_app(settings, veil), port, profile, clock)


_PROFILE_ENV = "BENCH_API_PROFILE"


def process_app() -> Any:
    """One process of ``veil --processes N``: Veil's app without the job worker (uvicorn's
    factory, in each process); profiled into ``$BENCH_API_PROFILE.<pid>`` when set."""
    from contextlib import asynccontextmanager

    from sandbox.config.settings import Settings
    from sandbox.server.app import create_app
    from sandbox.service import open_veil

    settings = Settings()
    where, clock = os.environ.get(_PROFILE_ENV), os.environ.get(_PROFILE_ENV + "_CLOCK", "wall")
    profiler = _AllThreads(clock) if where else None
    app = create_app(settings, veil=None)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        with open_veil(settings, worker=False) as veil:
            app.state.veil = veil
            if profiler:
                profiler.start()
            try:
                yield
            finally:
                if profiler and where:
                    profiler.dump(Path(f"{where}.{os.getpid()}"))

    app.router.lifespan_context = lifespan
    return app


def _veil_processes(port: int, processes: int, profile: Path | None, clock: str) -> None:
    from keys import KeyService, LocalKeyServer
    from sandbox.config.settings import Settings
    from sandbox.server.processes import serve
    from sandbox.service import bootstrap_operator, open_veil

    settings = Settings()
    local = LocalKeyServer(settings.keyserver_home) if settings.embedded_key_server else None
    if local is not None:  # started here, so that the processes find it running
        config = local.start()
        KeyService.connect(config, profile=settings.crypto_profile)
    try:
        with open_veil(settings, worker=False) as veil:
            _write_token(settings.data_dir, bootstrap_operator(veil))
        if profile:
            os.environ[_PROFILE_ENV], os.environ[_PROFILE_ENV + "_CLOCK"] = str(profile), clock
        signal.signal(signal.SIGTERM, _exit_quietly)
        serve(
            "bench.api_server:process_app",
            processes,
            factory=True,
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    finally:
        if local is not None:
            local.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["veil", "bare", "bare-sync"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1, help="veil: API processes")
    parser.add_argument("--profile", type=Path, help="veil: write merged cProfile stats here")
    parser.add_argument("--profile-clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--get-body", type=Path, help="bare: the GET answer")
    parser.add_argument("--post-body", type=Path, help="bare: the POST answer")
    args = parser.parse_args()
    if args.kind == "veil" and args.processes > 1:
        _veil_processes(args.port, args.processes, args.profile, args.profile_clock)
        return
    if args.kind == "veil":
        _veil(args.port, args.profile, args.profile_clock)
        return
    if args.get_body is None or args.post_body is None:
        parser.error("bare needs --get-body and --post-body")
    app = bare_app(
        args.get_body.read_bytes(), args.post_body.read_bytes(), sync=args.kind == "bare-sync"
    )
    _serve(app, args.port, None)


if __name__ == "__main__":
    main()
