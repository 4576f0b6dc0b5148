"""The kinds of source Veil reads, by the name a declaration gives (``kind``).

Each is a module with ``check_config``, ``continuous`` and ``open_source``
(``sandbox.sources.base.Kind``). A new kind is its module and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from i18n import Msg
from policies.errors import InvalidRequest
from sandbox.sources import mqtt, opcua, sql
from sandbox.sources.base import Kind

KINDS: MappingProxyType[str, Kind] = MappingProxyType(
    {
        "mqtt": mqtt,
        "opcua": opcua,
        "sql": sql,
    }
)


def kind_named(name: str) -> Kind:
    """The kind called ``name``; 422 naming the kinds there are, for any other."""
    kind = KINDS.get(name)
    if kind is None:
        raise InvalidRequest(
            Msg("kind must be one of: {kinds}", kinds=", ".join(sorted(KINDS))),
        )
    return kind


def continuous(name: str, config: Mapping[str, Any]) -> bool:
    """Whether a source of kind ``name`` and these settings holds what it receives between
    reads (MQTT; OPC UA subscribed): one reader only. ``False`` for a kind not known."""
    kind = KINDS.get(name)
    return kind is not None and kind.continuous(config)
