"""The isolated runner: code inside the sandbox cannot reach out, and limits hold.

Each test runs code inside a real bubblewrap sandbox with the same command line,
view of the file system and limits as a job, through ``tests/sandbox/probe_child.py``
(which runs the code it is sent instead of an analytics task).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.config.settings import Settings
from sandbox.isolation.child import Task
from sandbox.isolation.pool import SandboxCancelled, SandboxError, SandboxPool

PROBE = Path(__file__).with_name("probe_child.py")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory with another tenant's object and a database file in it."""
    (tmp_path / "objects" / "other-tenant").mkdir(parents=True)
    (tmp_path / "objects" / "other-tenant" / "dataset.veil").write_bytes(b"ciphertext")
    (tmp_path / "veil.db").write_bytes(b"SQLite format 3\x00")
    return tmp_path


@pytest.fixture
def pool(data_dir: Path) -> Iterator[SandboxPool]:
    settings = Settings(
        data_dir=data_dir, job_memory_mb=1024, job_cpu_s=3, job_wall_s=20, job_tmpfs_mb=16
    )
    pool = SandboxPool(settings, entry=PROBE)
    yield pool
    pool.close()


def run(pool: SandboxPool, code: str, data: bytes = b"rows") -> object:
    """Run ``code`` in a sandbox; its ``result``."""
    answer = pool.take().run(Task("probe", None, None, extra={"code": code}), data)
    return answer.message["result"]


def attempt(action: str) -> str:
    """Code that tries ``action`` and reports "done" or the error's type."""
    body = "\n".join("    " + line for line in action.splitlines())
    report = "except Exception as exc:\n    result = type(exc).__name__"
    return f"try:\n{body}\n    result = 'done'\n{report}"


def test_the_data_arrives_and_the_answer_comes_back(pool: SandboxPool) -> None:
    assert run(pool, "result = [len(data), data[:2].decode()]", b"x" * 3_000_000) == [
        3_000_000,
        "xx",
    ]


def test_the_sandbox_sees_no_host_files_beyond_programs_and_libraries(
    pool: SandboxPool, data_dir: Path
) -> None:
    seen = run(pool, "import os\nresult = sorted(os.listdir('/'))")
    assert isinstance(seen, list)
    assert {"tmp", "usr", "proc", "dev"} <= set(seen)
    assert not {"etc", "home", "var", "srv", "opt", "mnt"} & set(seen)
    # The data directory's parent is not visible at all (no database, no objects).
    assert run(pool, f"import os\nresult = os.path.exists({str(data_dir)!r})") is False


def test_opening_a_socket_is_blocked(pool: SandboxPool) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the timeout: nothing came
            accepted.append(server.accept())

    listener = threading.Thread(target=accept)
    listener.start()
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
    outside = attempt(code)
    assert run(pool, outside) == "ConnectionRefusedError"  # its own empty loopback
    listener.join()
    server.close()
    assert accepted == []  # nothing reached the host's listener
    assert run(pool, attempt("import socket\nsocket.getaddrinfo('example.com', 443)")) != "done"


def test_another_tenants_directory_and_the_database_cannot_be_read(
    pool: SandboxPool, data_dir: Path
) -> None:
    for target in (data_dir / "objects" / "other-tenant" / "dataset.veil", data_dir / "veil.db"):
        assert run(pool, attempt(f"open({str(target)!r}, 'rb').read()")) == "FileNotFoundError"
    assert run(pool, attempt(f"import os\nos.listdir({str(data_dir / 'objects')!r})")) == (
        "FileNotFoundError"
    )


def test_writing_outside_the_private_tmpfs_is_blocked(pool: SandboxPool, tmp_path: Path) -> None:
    import analytics

    package = Path(analytics.__file__).parent
    for target in (package / "planted.py", Path("/usr/planted"), Path("/planted")):
        assert run(pool, attempt(f"open({str(target)!r}, 'w').write('x')")) in (
            "OSError",
            "PermissionError",
        )
        assert not target.exists()
    # Its own /tmp works, is private, and is bounded by job_tmpfs_mb (16 MiB here).
    assert run(pool, attempt("open('/tmp/scratch', 'w').write('x')")) == "done"
    assert not Path("/tmp/scratch").exists()
    assert run(pool, attempt("open('/tmp/big', 'wb').write(b'0' * 64 * 2**20)")) == "OSError"


def test_exceeding_the_memory_limit_fails_the_job_with_a_clear_reason(pool: SandboxPool) -> None:
    with pytest.raises(SandboxError, match=r"memory limit of 1024 MiB \(VEIL_JOB_MEMORY_MB\)"):
        run(pool, "hog = bytearray(2 * 2**30)")
    assert run(pool, "result = 'still fine'") == "still fine"


def test_running_forever_is_stopped_by_the_cpu_limit(pool: SandboxPool) -> None:
    with pytest.raises(SandboxError, match=r"CPU-time limit of 3 s \(VEIL_JOB_CPU_S\)"):
        run(pool, "while True: pass")
    assert run(pool, "result = 'still fine'") == "still fine"


def test_sleeping_forever_is_stopped_by_the_wall_clock_limit(data_dir: Path) -> None:
    pool = SandboxPool(Settings(data_dir=data_dir, job_wall_s=2), entry=PROBE)
    try:
        with pytest.raises(SandboxError, match=r"wall-clock limit of 2 s \(VEIL_JOB_WALL_S\)"):
            run(pool, "import time\ntime.sleep(3600)")
    finally:
        pool.close()


def test_a_cancelled_job_is_killed(pool: SandboxPool) -> None:
    box = pool.take()
    task = Task("probe", None, None, extra={"code": "import time\ntime.sleep(3600)"})
    with pytest.raises(SandboxCancelled):
        box.run(task, b"", should_stop=lambda: True)
    assert not box.alive


def test_each_sandbox_serves_one_job_and_a_spare_is_kept_ready(pool: SandboxPool) -> None:
    first = pool.take()
    second = pool.take()
    assert first is not second and first.alive and second.alive
    first.kill()
    second.kill()


def test_without_bubblewrap_jobs_fail_closed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap to be found
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(SandboxError, match=r"bwrap \(Debian: bubblewrap\) is not installed"):
        SandboxPool(settings, warm=False).take()


@pytest.mark.parametrize("ahead", [True, False])
def test_the_job_worker_starts_its_warm_sandbox_ahead_by_default(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, ahead: bool
) -> None:
    from types import SimpleNamespace

    from sandbox.jobs.workers import close_pools, open_pools

    monkeypatch.delenv("VEIL_JOB_SANDBOX_AHEAD")  # tests/conftest.py turns it off
    settings = (
        Settings(data_dir=data_dir)
        if ahead
        else Settings(data_dir=data_dir, job_sandbox_ahead=False)
    )
    assert settings.job_sandbox_ahead is ahead
    veil = SimpleNamespace(settings=settings, sandboxes=None, code_sandboxes=None)
    pools = open_pools(veil)  # type: ignore[arg-type]
    try:
        started = pools[0]._spare
        assert (started is not None and started.alive) is ahead
        assert pools[1]._spare is None  # tier 5's: from its first job on
    finally:
        close_pools(veil, pools)  # type: ignore[arg-type]


def test_the_warm_worker_forks_a_process_per_job_and_survives_a_failed_one(
    data_dir: Path,
) -> None:
    import io

    import polars as pl

    from analytics.query_document import parse_query
    from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema

    schema = DatasetSchema(
        (
            ColumnSpec("k", ColumnType.STRING, ColumnClass.PUBLIC, categories=("a", "b")),
            ColumnSpec("x", ColumnType.FLOAT, ColumnClass.INTERNAL, 0.0, 10.0),
        )
    )
    buffer = io.BytesIO()
    pl.DataFrame({"k": ["a", "b"] * 500, "x": [5.0] * 1000}).write_parquet(buffer)
    query = Task("query", schema, parse_query({"aggregates": [{"kind": "count"}]}), 1.0)
    pool = SandboxPool(Settings(data_dir=data_dir), reusable=True)
    try:
        worker = pool.take()
        first = worker.run(query, buffer.getvalue()).message["result"]
        with pytest.raises(SandboxError, match="internal error"):
            worker.run(Task("no-such-kind", schema, None), buffer.getvalue())
        assert pool.take() is worker and worker.alive  # the failure ended its process only
        second = worker.run(query, buffer.getvalue()).message["result"]
        assert first["tier"] == second["tier"] == 3  # the worker serves job after job
        assert 900 < first["rows"][0]["values"][0]["value"] < 1100
    finally:
        pool.close()
    assert not worker.alive


def test_the_warm_worker_waits_for_a_job_process_after_its_answer(data_dir: Path) -> None:
    """The answer comes back before the job process's exit is seen (``finish``, which the
    job worker calls after the release; else the next ``run``): the process still ends."""
    import io

    import polars as pl

    from analytics.query_document import parse_query
    from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema

    schema = DatasetSchema(
        (ColumnSpec("k", ColumnType.STRING, ColumnClass.PUBLIC, categories=("a", "b")),)
    )
    buffer = io.BytesIO()
    pl.DataFrame({"k": ["a", "b"] * 50}).write_parquet(buffer)
    query = Task("query", schema, parse_query({"aggregates": [{"kind": "count"}]}), 1.0)
    pool = SandboxPool(Settings(data_dir=data_dir), reusable=True)
    try:
        worker = pool.take()
        worker.run(query, buffer.getvalue())
        assert worker._unsettled  # answered; its end not waited for yet
        worker.finish()
        assert not worker._unsettled and worker._exit_seen and worker.alive
        worker.run(query, buffer.getvalue())
        worker.run(query, buffer.getvalue())  # waits for the previous one's end first
        assert worker._exit_seen is False and worker._unsettled
    finally:
        pool.close()
    assert not worker.alive


# ---------------------------------------------------------------- who the job runs as


def test_the_job_runs_as_an_unprivileged_uid_without_capabilities(pool: SandboxPool) -> None:
    code = (
        "import os\n"
        "status = dict(line.split(':\\t', 1) for line in open('/proc/self/status'))\n"
        "result = [os.getuid(), os.geteuid(), os.getgid(), os.getgroups(),\n"
        "          *(status[k].strip() for k in ('CapEff', 'CapPrm', 'CapBnd', 'NoNewPrivs'))]"
    )
    uid, euid, gid, groups, effective, permitted, bounding, no_new_privs = run(pool, code)  # type: ignore[misc]
    assert uid != 0 and euid != 0 and gid != 0 and groups == []
    assert effective == permitted == bounding == "0000000000000000"
    assert no_new_privs == "1"  # setuid programs cannot give privileges back


def test_each_sandbox_gets_a_uid_of_its_own(pool: SandboxPool) -> None:
    uids = {run(pool, "import os\nresult = os.getuid()") for _ in range(3)}
    assert len(uids) == 3


# ---------------------------------------------------------------- the seccomp filter

#: System calls that an unprivileged process may make on this host unless a filter
#: refuses them (so that a refusal is the filter's, not the kernel's permission check).
_FILTERED_CALLS = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
nr = NUMBERS
def call(name, *args):
    ctypes.set_errno(0)
    value = libc.syscall(nr[name], *[ctypes.c_long(a) for a in args])
    if value == 0 and name == 'clone':
        os._exit(0)  # the child of a clone that went through
    return errno.errorcode.get(ctypes.get_errno(), 'ok') if value == -1 else 'ok'
buf = ctypes.create_string_buffer(8)
iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
params = ctypes.create_string_buffer(120)
result = {
    'ptrace': call('ptrace', 0, 0, 0, 0),  # PTRACE_TRACEME
    'process_vm_readv': call('process_vm_readv', os.getpid(), ctypes.addressof(iov), 1,
                             ctypes.addressof(iov), 1, 0),
    'keyctl': call('keyctl', 0, -2, 1),  # KEYCTL_GET_KEYRING_ID of the process keyring
    'unshare': call('unshare', 0x10000000),  # CLONE_NEWUSER
    'clone': call('clone', 0x10000000 | 17, 0, 0, 0, 0),  # CLONE_NEWUSER | SIGCHLD
    'io_uring_setup': call('io_uring_setup', 1, ctypes.addressof(params)),
    'clone3': call('clone3', 0, 0),
    'seccomp': open('/proc/self/status').read().split('Seccomp:')[1].split()[0],
}
"""


def test_the_seccomp_filter_refuses_what_a_job_never_needs(pool: SandboxPool) -> None:
    from sandbox.isolation import seccomp

    refused = run(pool, _FILTERED_CALLS.replace("NUMBERS", repr(seccomp.numbers())))
    assert refused == {
        "ptrace": "EPERM",
        "process_vm_readv": "EPERM",
        "keyctl": "EPERM",
        "unshare": "EPERM",
        "clone": "EPERM",
        "io_uring_setup": "EPERM",
        "clone3": "ENOSYS",  # the C library then falls back to clone, which is checked
        "seccomp": "2",  # a filter is loaded
    }
    # Ordinary work still runs: threads, a forked process, files in /tmp.
    code = (
        "import os, threading\nt = threading.Thread(target=lambda: None)\nt.start()\nt.join()\n"
        "pid = os.fork()\nif pid == 0:\n    os._exit(7)\n"
        "result = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])"
    )
    assert run(pool, code) == 7


def _bpf(program: bytes, number: int, arch: int, arg0: int = 0) -> int:
    """What the filter returns for one system call (a classic-BPF interpreter of the
    four instructions it uses)."""
    import struct

    data = struct.pack("<iIQ6Q", number, arch, 0, arg0, 0, 0, 0, 0, 0)
    code = [struct.unpack("<HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    accumulator, pc = 0, 0
    while True:
        op, true, false, k = code[pc]
        if op == 0x20:
            (accumulator,) = struct.unpack_from("<I", data, k)
        elif op == 0x06:
            return k
        else:
            taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: accumulator & k}[op]
            pc += true if taken else false
        pc += 1


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_filter_program_refuses_exactly_its_list(machine: str) -> None:
    from sandbox.isolation import seccomp

    arch, table, _ = seccomp.ARCHITECTURES[machine]
    program = seccomp.program(machine)
    eperm, enosys, allow = 0x50000 | 1, 0x50000 | 38, 0x7FFF0000
    denied = {table[name] for name in seccomp.DENIED}
    for number in range(600):
        expected = eperm if number in denied else allow
        if number == table["clone3"]:
            expected = enosys
        assert _bpf(program, number, arch) == expected, number
    assert _bpf(program, table["clone"], arch, arg0=17) == allow  # a plain fork
    for flag in (0x10000000, 0x20000000, 0x40000000, 0x00020000, 0x02000000):
        assert _bpf(program, table["clone"], arch, arg0=flag | 17) == eperm
    assert _bpf(program, 0, arch ^ 1) == 0x80000000  # another ABI: killed
    if machine == "x86_64":
        assert _bpf(program, 0x40000000 | 1, arch) == eperm  # the x32 ABI


def test_a_fork_bomb_stops_at_the_process_limit(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, job_processes=32, job_wall_s=30)
    pool = SandboxPool(settings, entry=PROBE, warm=False)
    code = (
        "import os, time\nchildren = []\n"
        "try:\n    for _ in range(200):\n        pid = os.fork()\n"
        "        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n"
        "        children.append(pid)\n"
        "    result = ['all forked', len(children)]\n"
        "except OSError as exc:\n    result = [type(exc).__name__, len(children)]\n"
        "for pid in children:\n    os.kill(pid, 9)"
    )
    try:
        outcome, forked = run(pool, code)  # type: ignore[misc]
    finally:
        pool.close()
    assert outcome == "BlockingIOError"  # EAGAIN from fork
    assert forked < 32


# ---------------------------------------------------------------- what the job sees


def test_the_sandbox_sees_only_what_the_imports_need(pool: SandboxPool) -> None:
    import sandbox

    checkout = Path(sandbox.__file__).resolve().parent.parent
    code = (
        "import os\n"
        f"checkout = {str(checkout)!r}\n"
        "result = {\n"
        "    'checkout': sorted(os.listdir(checkout)),\n"
        "    'sandbox': sorted(os.listdir(checkout + '/sandbox')),\n"
        "    'isolation': sorted(os.listdir(checkout + '/sandbox/isolation')),\n"
        "    'usr': sorted(os.listdir('/usr')),\n"
        "    'usr/bin': sorted(os.listdir('/usr/bin')) if os.path.isdir('/usr/bin') else [],\n"
        "    'etc': os.path.exists('/etc'),\n"
        "}"
    )
    seen = run(pool, code)
    assert isinstance(seen, dict)
    # Of Veil's checkout: the analytics package and i18n (its messages), the job's entry
    # script, the virtualenv's packages (when it lives in the checkout) — no other package,
    # test, doc or .git.
    assert set(seen["checkout"]) <= {"analytics", "i18n", "sandbox", "tests", ".venv"}
    assert seen["sandbox"] == ["isolation"]
    assert seen["isolation"] == ["child.py"]
    assert "policies" not in seen["checkout"] and "keys" not in seen["checkout"]
    assert set(seen["usr"]) <= {"lib", "lib64", "bin"}  # shared libraries (and setpriv)
    assert set(seen["usr/bin"]) <= {"setpriv"}
    assert seen["etc"] is False
