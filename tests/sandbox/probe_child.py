"""A stand-in job process for the sandbox's own tests: runs the code it is sent.

Bound into the sandbox by ``SandboxPool(entry=...)`` exactly like ``sandbox/isolation/child.py``
(same bubblewrap view, same limits).  The task's ``extra["code"]`` is executed with
``data`` (the bytes sent) and ``progress()`` (sends a progress message) in scope; whatever
it leaves in ``result`` is sent back.  Started with ``--serve`` (a reusable pool), it is a
warm worker like ``child.py``'s, forking one such process per task (``child._serve``).
"""

from __future__ import annotations

import os
import pickle
import sys

from sandbox.isolation import child


def run_one(channel: child._Channel) -> int:
    """Read one task and its data, run its code, answer; the exit status."""
    stdin = sys.stdin.buffer
    try:
        head = child.read_frame(stdin)
    except child.ProtocolError:
        return child.EXIT_NO_TASK  # the parent closed the pipe: no task
    task = pickle.loads(head)  # noqa: S301 - the test sent it
    data = bytearray()
    while chunk := child.read_frame(stdin):
        data += chunk
    scope: dict[str, object] = {
        "data": bytes(data),
        "progress": lambda: channel.send({"type": "progress"}),
    }
    try:
        exec(task.extra["code"], scope)  # noqa: S102 - the point of this probe
    except MemoryError:
        channel.send({"type": "error", "error": "MemoryError"})
        return 3
    channel.send({"type": "result", "result": scope.get("result")})
    return 0


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    channel = child._Channel(out)
    if "--serve" in sys.argv[1:]:
        child._serve(channel, run_one)
        return
    channel.send({"type": "ready"})
    sys.exit(run_one(channel))


if __name__ == "__main__":
    main()
