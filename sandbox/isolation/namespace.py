"""A sandbox's PID namespace, and how all its processes are killed at once.

Bubblewrap runs as two processes: the one Veil starts, which stays outside the sandbox, and
its child, the init (PID 1) of the sandbox's PID namespace, under which every process of
the job runs.  The init is in a session of its own (``--new-session``), out of reach of a
signal to the first one's process group, and it follows the first (``--die-with-parent``)
only from the end of its setup, after it has started the job: a sandbox killed through its
first process alone, in that window, lived on and ran its job.

So a sandbox is killed through its init.  Bubblewrap reports the init's host pid, and the
namespace's inode, on ``--info-fd`` (JSON: ``child-pid``, ``pid-namespace``) as soon as it
has created it.  When a PID namespace's init dies, the kernel kills every other process in
the namespace, and the init is only seen to have exited once they are all gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import threading
import time
from typing import Final

log = logging.getLogger(__name__)

#: Longest wait for bubblewrap's report when a sandbox is killed right after it started.
REPORT_S: Final = 30.0
#: Longest wait for the namespace's processes to be gone after the init is signalled.
GONE_S: Final = 30.0


class SandboxInit:
    """The init of one sandbox's PID namespace, as bubblewrap reports it.

    ``info_fd`` is the write end of a pipe for ``bwrap --info-fd``: pass it to the started
    process (``pass_fds``), then call ``started`` to close this process's copy.
    """

    def __init__(self) -> None:
        read, self.info_fd = os.pipe()  # neither is inherited but through pass_fds
        self._report = open(read, "rb", buffering=0)  # noqa: SIM115 - closed once read
        self._info_open = True
        self._lock = threading.Lock()
        self._init: tuple[int, int] | None = None  # its host pid and its namespace's inode
        self._read = False
        self._gone = False

    def started(self) -> None:
        """The sandbox has its copy of the write end: close this one (else the report
        never ends)."""
        if self._info_open:
            self._info_open = False
            os.close(self.info_fd)

    def close(self) -> None:
        """The sandbox could not be started: close both ends."""
        self.started()
        self._report.close()

    def kill(self) -> None:
        """SIGKILL the init, and so every process of the namespace; return once they are
        gone.  Waits up to ``REPORT_S`` for bubblewrap's report if it is not in yet (a
        sandbox killed at once); without one (bubblewrap failed before it made the
        namespace), there is nothing to kill here."""
        with self._lock:
            if self._gone:
                return
            init = self._reported()
            if init is None:
                return
            pid, namespace = init
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:  # gone, and reaped
                self._gone = True
                return
            try:
                # The pid may have been reused, long after the namespace ended: then the
                # process the pidfd holds is not in it, and is left alone.  If it is alive
                # when signalled, it is the one whose namespace was read.
                if not _in_namespace(pid, namespace):
                    self._gone = True
                    return
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                # Readable once the init has exited, after the rest of its namespace.
                if _readable(pidfd, GONE_S):
                    self._gone = True
                else:
                    log.warning("a killed sandbox's init (pid %d) is still running", pid)
            finally:
                os.close(pidfd)

    def _reported(self) -> tuple[int, int] | None:
        """The init's pid and namespace inode from bubblewrap's report, read to its end."""
        if not self._read:
            self._read = True
            text = self._read_report()
            self._report.close()
            try:
                report = json.loads(text)
                pid, namespace = int(report["child-pid"]), int(report["pid-namespace"])
                if pid <= 0:
                    raise ValueError(pid)
                self._init = pid, namespace
            except (ValueError, KeyError, TypeError):
                if text:
                    log.warning("bubblewrap's report on its sandbox does not parse: %r", text)
        return self._init

    def _read_report(self) -> bytes:
        deadline = time.monotonic() + REPORT_S
        text = b""
        while (left := deadline - time.monotonic()) > 0:
            if not _readable(self._report.fileno(), left):
                break
            chunk = self._report.read(4096)
            if not chunk:
                return text  # bubblewrap closed it: all there is
            text += chunk
        log.warning("bubblewrap did not report its sandbox's init within %g s", REPORT_S)
        return text


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` is readable within ``timeout`` seconds (``poll``: any fd number)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _in_namespace(pid: int, namespace: int) -> bool:
    """Whether process ``pid`` is in the PID namespace whose inode is ``namespace``."""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino == namespace
    except OSError:  # ended meanwhile, or a zombie
        return False
