"""The node protocol's OpenAPI schema: the ``/node/v1`` paths of Veil's schema, and the
components they use (``docs/nodes-openapi.json``, written by ``scripts/node-openapi``)."""

from __future__ import annotations

import json
from typing import Any


def node_openapi() -> dict[str, Any]:
    from sandbox.config.settings import Settings
    from sandbox.server.app import create_app

    full = create_app(Settings()).openapi()
    paths = {p: v for p, v in full["paths"].items() if p.startswith("/node/v1/")}
    used = set()
    text = json.dumps(paths)
    schemas = full.get("components", {}).get("schemas", {})
    pending = [name for name in schemas if f"#/components/schemas/{name}" in text]
    while pending:  # the schemas the paths use, and those they use in turn
        name = pending.pop()
        if name in used:
            continue
        used.add(name)
        inner = json.dumps(schemas[name])
        pending += [n for n in schemas if f"#/components/schemas/{n}" in inner]
    return {
        "openapi": full["openapi"],
        "info": {
            "title": "Veil node protocol (veil-node-1)",
            "version": full["info"]["version"],
            "description": "Every request but /node/v1/enrol is signed by the node "
            "(headers Veil-Node, Veil-Timestamp, Veil-Nonce, Veil-Signature; docs/nodes.md).",
        },
        "paths": paths,
        "components": {"schemas": {n: schemas[n] for n in sorted(used)}},
    }
