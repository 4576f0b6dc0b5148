"""A stand-in job process for the sandbox's own tests: runs the code it is sent.

Bound into the sandbox by ``SandboxPool(entry=...)`` exactly like ``sandbox/isolation/child.py``
(same bubblewrap view, same limits).  The task's ``extra["code"]`` is executed with
``data`` (the bytes sent) in scope; whatever it leaves in ``result`` is sent back.
"""

from __future__ import annotations

import json
import os
import pickle
import sys

from sandbox.isolation.child import read_frame, write_frame


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    task = pickle.loads(read_frame(sys.stdin.buffer))  # noqa: S301 - the test sent it
    data = bytearray()
    while chunk := read_frame(sys.stdin.buffer):
        data += chunk
    scope: dict[str, object] = {"data": bytes(data)}
    try:
        exec(task.extra["code"], scope)  # noqa: S102 - the point of this probe
    except MemoryError:
        write_frame(out, json.dumps({"type": "error", "error": "MemoryError"}).encode())
        out.flush()
        sys.exit(3)
    write_frame(out, json.dumps({"type": "result", "result": scope.get("result")}).encode())
    out.flush()


if __name__ == "__main__":
    main()
