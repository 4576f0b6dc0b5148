"""Rows from an OPC UA server's values: their types, the polars frame of a read, and the
subscription's buffer of changes (``sandbox.sources.opcua`` reads; this makes the rows)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl
from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif

from sandbox.sources.base import Batch, SourceError

_log = logging.getLogger(__name__)


class Settings(Protocol):
    """What the rows need of a source's settings (``sandbox.sources.opcua.Settings``)."""

    @property
    def fields(self) -> tuple[Field, ...]: ...
    @property
    def timestamp(self) -> str: ...
    @property
    def buffer_rows(self) -> int: ...


_INTS = frozenset(
    {ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
     ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64}
)  # fmt: skip
DTYPES: dict[ua.VariantType, pl.DataType] = {
    ua.VariantType.Boolean: pl.Boolean(),
    ua.VariantType.Float: pl.Float64(),
    ua.VariantType.Double: pl.Float64(),
    ua.VariantType.String: pl.String(),
    ua.VariantType.LocalizedText: pl.String(),
    ua.VariantType.DateTime: pl.Datetime("us", "UTC"),
    **{t: pl.Int64() for t in _INTS},
    ua.VariantType.UInt64: pl.UInt64(),
}


@dataclass(frozen=True)
class Field:
    """A field of the source: its name, its variable's node id, the device it belongs to."""

    name: str
    node: ua.NodeId
    device: str


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Changes:
    """The subscription's handler: the rows of the changes not read yet.

    Called on the source's loop only, so it needs no lock.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._fields_of: dict[ua.NodeId, list[Field]] = {}
        for f in settings.fields:
            self._fields_of.setdefault(f.node, []).append(f)
        self._rows: deque[dict[str, Any]] = deque()
        self._state: dict[str, Any] = {}
        self._good: dict[str, bool] = {}
        self._waiting: set[str] = set()
        self._dropped = 0
        self.heard = asyncio.Event()

    def restart(self) -> None:
        """A new subscription: its first row is the state once every field has been heard."""
        self._state = {}
        self._waiting = {f.name for f in self._settings.fields}
        self.heard = asyncio.Event()

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        value: ua.DataValue = data.monitored_item.Value
        stamp = utc(value.SourceTimestamp or value.ServerTimestamp) or utcnow()
        good = not status(value).is_bad()
        for field in self._fields_of.get(node.nodeid, ()):
            try:
                self._state[field.name] = python_value(field, value) if good else None
            except SourceError:  # its type changed since the source connected
                self._state[field.name] = None
            self._good[field.name] = good
            self._waiting.discard(field.name)
        if self._waiting:
            return
        self.heard.set()
        self._rows.append({**self._state, self._settings.timestamp: stamp})
        if len(self._rows) > self._settings.buffer_rows:
            self._rows.popleft()
            self._dropped += 1

    def drain(self, dtypes: Mapping[str, pl.DataType]) -> Batch:
        rows, self._rows = list(self._rows), deque()
        if self._dropped:
            _log.warning(
                "an OPC UA subscription dropped %d changes beyond buffer_rows", self._dropped
            )
            self._dropped = 0
        devices: dict[str, bool] = {}
        for f in self._settings.fields:
            devices[f.device] = devices.get(f.device, False) or self._good.get(f.name, False)
        return Batch(frame(self._settings, dtypes, rows), None, devices)


def frame(
    settings: Settings, dtypes: Mapping[str, pl.DataType], rows: list[dict[str, Any]]
) -> pl.DataFrame:
    names = [settings.timestamp, *(f.name for f in settings.fields)]
    types = {settings.timestamp: pl.Datetime("us", "UTC"), **dtypes}
    try:  # one call for the whole frame: a series per field costs 10 us each
        return pl.from_dicts(rows, schema=names, schema_overrides=types)
    except (pl.exceptions.PolarsError, TypeError, OverflowError):
        pass  # a value that does not fit its column's type (the node's type changed)
    return pl.DataFrame(
        [
            pl.Series(name, [r.get(name) for r in rows], dtype=types.get(name), strict=False)
            for name in names
        ]
    )


def python_value(field: Field, value: ua.DataValue) -> Any:
    variant = value.Value
    if variant is None or variant.VariantType == ua.VariantType.Null:
        return None
    if variant.is_array or variant.VariantType not in DTYPES:
        raise SourceError(
            f"fields.{field.name}: the node holds a {variant.VariantType.name}"
            f"{' array' if variant.is_array else ''}, not a number, flag, text or time"
        )
    if variant.VariantType == ua.VariantType.LocalizedText:
        return variant.Value.Text
    if variant.VariantType == ua.VariantType.DateTime:
        return utc(variant.Value)
    return variant.Value


def status(value: ua.DataValue) -> ua.StatusCode:
    return value.StatusCode if value.StatusCode is not None else ua.StatusCode()


def utc(stamp: dt.datetime | None) -> dt.datetime | None:
    if stamp is None:
        return None
    return stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)


def dtype_of_datatype(datatype: ua.DataValue) -> pl.DataType | None:
    """The column type of a variable's DataType attribute, when it is a built-in type."""
    node = datatype.Value.Value if datatype.Value is not None else None
    if not isinstance(node, ua.NodeId) or node.NamespaceIndex != 0:
        return None
    if not isinstance(node.Identifier, int) or not 1 <= node.Identifier <= 25:
        return None
    try:
        return DTYPES.get(ua.VariantType(node.Identifier))
    except ValueError:
        return None


def dtype_of_value(value: ua.DataValue) -> pl.DataType | None:
    variant = value.Value
    if variant is None or variant.is_array:
        return None
    return DTYPES.get(variant.VariantType)
