"""The command line of one job sandbox: what it sees, who it runs as, and its limits.

``sandbox_command`` builds ``prlimit … bwrap … [setpriv …] python entry``:

* **What it sees** (``visible_paths``): the system's shared libraries and their loader,
  Python's standard library, the virtualenv's packages, Veil's ``analytics`` and ``i18n``
  packages and the entry script — each bound read-only at its own path, nothing else of the host (no
  ``/etc``, no ``/usr/bin``, no data directory, no other file of Veil's checkout).  The
  root is a tmpfs remounted read-only; only a private ``/tmp`` in memory is writable.
* **Who it runs as**: never root.  When Veil runs as root, bubblewrap keeps only the
  capabilities to change identity and ``setpriv`` switches to a host uid drawn for this
  sandbox from ``UID_RANGE`` (no user's; one per sandbox, so that the process limit counts
  this sandbox alone), with every capability dropped, the bounding set emptied and
  ``no_new_privs`` set.  Otherwise bubblewrap maps the job to uid 65534 in a user
  namespace of its own and forbids creating more.
* **Its limits**: address space, CPU time, file size, core dumps and the number of
  processes and threads (``RLIMIT_NPROC``), set with ``prlimit`` before bubblewrap starts,
  and the seccomp filter of ``sandbox.isolation.seccomp``, loaded by bubblewrap from a pipe.

Namespaces: PID, network (only its own loopback), IPC, UTS (hostname ``veil-job``) and
cgroup are new; the session is new (no terminal injection); the environment is empty
but for the few variables set here.  Bubblewrap reports the PID namespace's init on
``--info-fd``: the sandbox is killed through it (``sandbox.isolation.namespace``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import analytics
import i18n
from sandbox.isolation import child, seccomp

if TYPE_CHECKING:
    from sandbox.config.settings import Settings

#: The sandbox's private /tmp (a tmpfs inside the sandbox, not the host's /tmp).
SANDBOX_TMP: Final = "/tmp"  # noqa: S108
#: Host uids job sandboxes run as when Veil runs as root (one drawn per sandbox).
UID_RANGE: Final = range(1_000_000_000, 1_001_000_000)
#: The uid a job has inside its user namespace when Veil does not run as root.
NAMESPACE_UID: Final = 65534
#: Top-level links of a merged-/usr system, recreated as links inside the sandbox.
_TOP_LINKS: Final = ("/lib", "/lib64", "/lib32", "/libx32")


class SandboxUnavailable(Exception):
    """The sandbox cannot be built on this machine; the message says what is missing."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpu_s: int
    wall_s: float
    tmpfs_mb: int
    processes: int = 512

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.job_memory_mb, settings.job_cpu_s, settings.job_wall_s,
                   settings.job_tmpfs_mb, settings.job_processes)  # fmt: skip


def system_library_paths() -> tuple[Path, ...]:
    """The directories of shared libraries (and the dynamic loader) Python links against.

    On a multiarch system (Debian) that is ``/usr/lib/<triplet>`` and ``/usr/lib64`` (the
    loader's link), plus the C.UTF-8 locale; elsewhere all of ``/usr/lib``.  Top-level
    ``/lib*`` directories that are not links to ``/usr`` are bound too.
    """
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    names = [f"/usr/lib/{multiarch}", "/usr/lib64", "/usr/lib/locale"] if multiarch else []
    if not multiarch or not Path(names[0]).is_dir():
        names = ["/usr/lib", "/usr/lib64"]
    names += [name for name in _TOP_LINKS if not Path(name).is_symlink()]
    return tuple(Path(name) for name in names if Path(name).is_dir())


def python_paths() -> tuple[Path, ...]:
    """What the job process needs of Python and Veil, each bound read-only at its own path:
    the standard library, the virtualenv's packages and its ``pyvenv.cfg``, the
    interpreter, ``libpython`` when shared, ``analytics``, ``i18n`` (the messages of
    analytics' errors: no dependency of its own) and ``sandbox/isolation/child.py``."""
    scheme = sysconfig.get_paths()
    paths = {Path(scheme[name]) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.add(Path(sys.executable))
    if sys.prefix != sys.base_prefix:
        paths.add(Path(sys.prefix) / "pyvenv.cfg")
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        library = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("LDLIBRARY")
        paths |= {library, library.resolve()}
    paths.add(Path(analytics.__file__).resolve().parent)
    paths.add(Path(i18n.__file__).resolve().parent)
    paths.add(Path(child.__file__).resolve())
    return tuple(sorted(p for p in paths if p.exists()))


def visible_paths(entry: Path | None = None) -> tuple[Path, ...]:
    """Every host path bound into a sandbox (read-only), outermost first."""
    paths = {*system_library_paths(), *python_paths()}
    if entry is not None:
        paths.add(entry)
    setpriv = _setpriv() if os.geteuid() == 0 else None
    if setpriv is not None:
        paths.add(Path(setpriv))
    return tuple(sorted(paths, key=lambda p: (len(p.parts), str(p))))


def _import_root() -> Path:
    """The directory holding the ``analytics`` package (put first on the child's path)."""
    return Path(analytics.__file__).resolve().parent.parent


def _setpriv() -> str:
    found = shutil.which("setpriv")
    if found is None:
        raise SandboxUnavailable(
            "the job sandbox cannot start: setpriv (Debian: util-linux) is not installed"
        )
    return str(Path(found).resolve())


def _binds(paths: tuple[Path, ...]) -> list[str]:
    """bwrap options binding ``paths`` read-only, their parent directories made 0755 (a
    parent bubblewrap created itself would copy the host's mode: /root is 0700)."""
    argv: list[str] = []
    made: set[Path] = {Path("/"), Path(SANDBOX_TMP)}
    bound: list[Path] = []
    for path in paths:
        if any(path.is_relative_to(outer) for outer in bound):
            continue  # already visible through an outer bind
        for parent in reversed(path.parents):
            if parent not in made:
                argv += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        argv += ["--ro-bind", str(path), str(path)]
        bound.append(path)
        made.add(path)
    return argv


def _identity(uid: int) -> tuple[list[str], list[str]]:
    """bwrap options and a command prefix that run the job as an unprivileged uid."""
    if os.geteuid() == 0:
        options = [
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--cap-drop", "ALL",
            # Only to change identity; setpriv drops them (and the bounding set) at once.
            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
        ]  # fmt: skip
        prefix = [
            _setpriv(), f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--",
        ]  # fmt: skip
        return options, prefix
    options = ["--unshare-all", "--uid", str(NAMESPACE_UID), "--gid", str(NAMESPACE_UID),
               "--disable-userns", "--cap-drop", "ALL"]  # fmt: skip
    return options, []


def sandbox_command(
    limits: Limits,
    seccomp_fd: int,
    info_fd: int,
    entry: Path | None = None,
    serve: bool = False,
    uid: int | None = None,
    code: bool = False,
) -> list[str]:
    """The ``prlimit … bwrap … python entry`` command line of one sandbox.

    ``seccomp_fd``: a descriptor the started process inherits, holding the filter
    (``seccomp_pipe``).  ``info_fd``: one it inherits to report the sandbox's init on
    (``sandbox.isolation.namespace.SandboxInit``).  ``serve``: the warm worker that forks
    a process per job.
    ``uid``: the host uid to run as when Veil is root (default: drawn from ``UID_RANGE``).
    ``code``: for tier 5 only (the process imports PySyft ahead, not torch).
    """
    bwrap, prlimit = shutil.which("bwrap"), shutil.which("prlimit")
    if bwrap is None or prlimit is None:
        missing = "bwrap (Debian: bubblewrap)" if bwrap is None else "prlimit (util-linux)"
        raise SandboxUnavailable(f"the job sandbox cannot start: {missing} is not installed")
    entry = entry or Path(child.__file__).resolve()
    memory = limits.memory_mb * 2**20
    options, prefix = _identity(uid if uid is not None else _draw_uid())
    argv = [
        prlimit, f"--as={memory}", f"--cpu={limits.cpu_s}:{limits.cpu_s + 5}", "--core=0",
        f"--fsize={limits.tmpfs_mb * 2**20}", f"--nproc={limits.processes}", "--",
        bwrap, *options, "--die-with-parent", "--new-session", "--clearenv",
        "--hostname", "veil-job", "--seccomp", str(seccomp_fd), "--info-fd", str(info_fd),
    ]  # fmt: skip
    for name in _TOP_LINKS:
        if Path(name).is_symlink():
            argv += ["--symlink", os.readlink(name), name]
    # The private /tmp first: binds below it (a checkout under /tmp) must stay visible.
    argv += ["--perms", "1777", "--size", str(limits.tmpfs_mb * 2**20), "--tmpfs", SANDBOX_TMP]
    argv += _binds(visible_paths(entry))
    argv += [
        "--proc", "/proc", "--dev", "/dev",
        "--remount-ro", "/",  # the root's own tmpfs too: only /tmp is writable
        "--chdir", SANDBOX_TMP,
        "--setenv", "HOME", SANDBOX_TMP, "--setenv", "TMPDIR", SANDBOX_TMP,
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONPATH", str(_import_root()),
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        *prefix, sys.executable, "-s", str(entry), *(["--serve"] if serve else []),
        *(["--code"] if code else []),
    ]  # fmt: skip
    return argv


def _draw_uid() -> int:
    return UID_RANGE.start + secrets.randbelow(len(UID_RANGE))


@contextlib.contextmanager
def seccomp_pipe() -> Iterator[int]:
    """A readable descriptor holding the seccomp filter, for ``bwrap --seccomp``; closed
    on exit (the started process keeps its own copy)."""
    try:
        program = seccomp.program()
    except seccomp.SeccompUnavailable as exc:
        raise SandboxUnavailable(f"the job sandbox cannot start: {exc}") from None
    read, write = os.pipe()
    try:
        os.write(write, program)  # a few hundred bytes: far below a pipe's buffer
    finally:
        os.close(write)
    try:
        yield read
    finally:
        os.close(read)
