"""What a source gives Veil, whatever its kind: batches of field values.

Each kind (``sql``, ``opcua``, ``mqtt``) is a module with three functions: ``check_config``
(the declared settings' problems, as messages naming the setting, never a value),
``continuous`` (whether its sources hold what they receive between reads) and
``open_source`` (a ``Source`` from checked settings and the source's credentials). A
source reads its own fields under its own names; mapping them onto the dataset's
declared columns, validating and storing them is the caller's part, the same for all
kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl


@dataclass(frozen=True)
class Batch:
    """What one read returned.

    ``rows`` has one column per source field, under the field's own name (a source's
    timestamps included). ``cursor`` is where the next read starts (the largest value of
    an incremental column, a sequence number), opaque to the caller, who stores it only
    once the rows are stored, so a read whose rows are lost is read again; ``None`` when
    the source keeps no position. ``devices`` says, for each device or endpoint the
    source watches, whether it answered during this read: the equipment online rate
    (设备联网率) is counted from it. ``problems`` says what the source received but could
    not read (e.g. messages that were not JSON), each naming the setting and a count, never
    a value: the run records them with the version it stores.
    """

    rows: pl.DataFrame
    cursor: str | None = None
    devices: Mapping[str, bool] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


class SourceError(Exception):
    """The source could not be read (unreachable, refused, a reply not understood).

    The run is retried later with back-off; its message is shown to the enterprise, so it
    names the source's setting or the server's error, never a data value.
    """


class Source(Protocol):
    """An open source. ``read`` returns what is new since ``cursor``; a continuous source
    (subscriptions) returns what arrived since its last read. ``close`` releases its
    connections; reading a closed source is an error."""

    def read(self, cursor: str | None) -> Batch: ...

    def close(self) -> None: ...


class Kind(Protocol):
    """A kind of source, as its module provides it. ``continuous``: whether a source of
    these settings receives between reads and holds what it received until a run stores
    it (``sandbox.sources.held``): such a source has one reader, the scheduler that holds
    its lease (``docs/sources.md``, "The scheduler")."""

    def check_config(self, config: Mapping[str, Any]) -> list[str]: ...

    def continuous(self, config: Mapping[str, Any]) -> bool: ...

    def open_source(self, config: Mapping[str, Any], secrets: Mapping[str, str]) -> Source: ...
