"""The data directory, private to the user Veil runs as.

Everything Veil writes under ``VEIL_DATA_DIR`` is for its owner alone: directories 0700,
files 0600 — the database and SQLite's ``-wal``/``-shm``, the encrypted objects, the
embedded OpenBao's storage, config, log, audit log and credentials, the demo's exports.
Two layers, each enough on its own for what it covers:

- :func:`restrict_umask` at every entry point (the ``veil`` command, ``cluster/demo.py``,
  the API app factory), so that whatever the process and its children (OpenBao, uvicorn's
  workers, job sandboxes) create is private, including files Veil does not create itself.
- Explicit modes where Veil creates things itself (:func:`make_private_dirs`,
  :func:`open_private`, the SQLite file in ``sandbox.store.database``, the key server's files in
  ``keys``), so that a caller with another umask gets the same.

An existing data directory that others may enter is left as it is (its owner may have
meant it) but named at every start with its mode and the ``chmod`` that closes it.  Only
what Veil writes is restricted: the checkout and the virtualenv, which the job sandbox
reads, keep their modes (not even a bytecode cache is written there under the umask).
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
import sys
from pathlib import Path
from typing import BinaryIO, Final

log = logging.getLogger(__name__)

#: The umask of every Veil process: nothing it creates is open to group or others.
PRIVATE_UMASK: Final = 0o077
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600


def restrict_umask() -> None:
    """Make everything this process, and each process it starts, creates private to its user.

    From then on Python writes no bytecode caches, here or in the Python processes started
    from here (uvicorn's workers): they would be made private too, in the checkout or the
    virtualenv, which must stay readable (the job sandbox reads Python and ``analytics``,
    perhaps one day as another user).  pip and ``make venv`` compile them ahead.
    """
    os.umask(PRIVATE_UMASK)
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents, each mode 0700 whatever the umask
    (directories that exist already keep their mode)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it meanwhile: its mode stays
            continue
        os.chmod(directory, DIR_MODE)


def open_private(path: Path, *, append: bool = False) -> BinaryIO:
    """``path`` opened for writing with mode 0600, whatever the umask: created or truncated,
    or appended to (``append``)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "ab" if append else "wb")
    except BaseException:
        os.close(fd)
        raise


def open_to_others(path: Path) -> str | None:
    """Why ``path`` (an existing directory) is open to other users and how to close it; None
    when it is private (no group or other bits)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return None
    return (
        f"the data directory {path} is open to other users (mode {mode:04o}; Veil keeps it "
        f"0700): run `chmod -R go-rwx {shlex.quote(str(path))}`"
    )


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory (mode 0700), or warn when an existing one is open to others."""
    if not data_dir.exists():
        make_private_dirs(data_dir)
        return
    problem = open_to_others(data_dir)
    if problem is not None:
        log.warning(problem)
