"""Handing a query's data to OpenDP as a file scan instead of a frame in memory.

OpenDP's Polars API passes every plan to its Rust core as a serialized ``LazyFrame``; a
frame held in memory is serialized with all its rows, again for each plan and each call
(for a million rows, about 0.3 s each time and 1.5 s per query on a 2-vCPU machine).  A
scan of an Arrow IPC file serializes as its path, so the rows are written once and read
back (memory-mapped) only when a plan is collected.

The file is plaintext, so ``scratch`` must be memory, never a disk: the job sandbox's
private ``/tmp`` (a tmpfs that disappears with the sandbox), or ``/dev/shm`` for an
in-process run.  It is removed as soon as the query has run.  Where the rows do not fit
(free space of the tmpfs, or the process's file-size limit, which would kill it), the
frame stays in memory and the query runs as before, only slower.
"""

from __future__ import annotations

import contextlib
import os
import resource
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import polars as pl

# Room kept free beyond the frame's estimated size: the IPC layout adds offsets and padding.
_HEADROOM = 1.25


@contextlib.contextmanager
def scanned(data: pl.LazyFrame, scratch: Path | None) -> Iterator[pl.LazyFrame]:
    """``data`` as a scan of an Arrow IPC file in ``scratch``, removed on exit; ``data``
    itself when there is no scratch directory, it is not in memory, or it has no room."""
    if scratch is None or not in_memory(scratch):
        yield data
        return
    frame = data.collect()
    if not _fits(scratch, frame.estimated_size()):
        yield frame.lazy()
        return
    fd, name = tempfile.mkstemp(prefix="query-", suffix=".arrow", dir=scratch)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            frame.write_ipc(out, compression="uncompressed")
        del frame
        yield pl.scan_ipc(path, glob=False)
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def parquet_file(data: bytes, scratch: Path) -> Iterator[Path | None]:
    """Parquet ``data`` written as it is to a file in ``scratch``, removed on exit; None when
    ``scratch`` is not in memory or has no room.  Scanned from there, only the columns a
    query reads are ever decoded, and the rows are not held as a frame besides."""
    with scratch_file(scratch, len(data), lambda out: out.write(data)) as path:
        yield path


@contextlib.contextmanager
def scratch_file(
    scratch: Path, size: int, write: Callable[[BinaryIO], object], suffix: str = ".parquet"
) -> Iterator[Path | None]:
    """A new file in ``scratch`` that ``write`` fills with ``size`` bytes, removed on exit
    (also when ``write`` fails); None, and ``write`` not called, when ``scratch`` is not in
    memory or has no room for them.  A job process writes its data here as it arrives on
    its pipe, so that no copy of it is held in the process's own memory besides."""
    if not (in_memory(scratch) and _fits(scratch, size)):
        yield None
        return
    fd, name = tempfile.mkstemp(prefix="data-", suffix=suffix, dir=scratch)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        yield path
    finally:
        path.unlink(missing_ok=True)


def in_memory(path: Path) -> bool:
    """Whether ``path`` lies on a tmpfs or ramfs (by the longest mount point above it)."""
    target = str(path.resolve())
    best, kind = "", ""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[1].replace("\\040", " ")
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best):
                best, kind = point, fields[2]
    return kind in ("tmpfs", "ramfs")


def _fits(scratch: Path, size: float) -> bool:
    needed = int(size * _HEADROOM) + (1 << 20)
    stats = os.statvfs(scratch)
    free = stats.f_bavail * stats.f_frsize
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return needed <= free and (limit == resource.RLIM_INFINITY or needed <= limit)
