"""Rows from an OPC UA server's values: their types, the polars frame of a read, and the
subscription's changes, held until stored (``sandbox.sources.opcua`` reads; this makes the
rows)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl
from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif

from i18n import Msg
from sandbox.sources.base import Batch, SourceError
from sandbox.sources.held import Held


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
    """The subscription's handler: the rows of its changes, held until a run has stored them.

    Each change is a row, numbered; ``read(cursor)`` returns the rows after ``cursor`` and
    forgets the earlier ones only once the cursor marks stored rows
    (:mod:`sandbox.sources.held`): a run whose storage failed reads them again. At most
    ``buffer_rows`` rows are held; beyond, new changes are dropped and counted in the
    batches' ``problems``. Called on the source's loop only, so it needs no lock.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._fields_of: dict[ua.NodeId, list[Field]] = {}
        for f in settings.fields:
            self._fields_of.setdefault(f.node, []).append(f)
        self._held: Held[dict[str, Any]] = Held(settings.buffer_rows)
        self._state: dict[str, Any] = {}
        self._good: dict[str, bool] = {}
        self._waiting: set[str] = set()
        self.heard = asyncio.Event()

    @property
    def held(self) -> int:
        """How many rows are held (read or not, not yet stored)."""
        return len(self._held)

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
        self._held.add({**self._state, self._settings.timestamp: stamp})

    def read(self, cursor: str | None, dtypes: Mapping[str, pl.DataType]) -> Batch:
        """The rows held after ``cursor``, with the cursor of the last one."""
        taken = self._held.read(cursor)
        devices: dict[str, bool] = {}
        for f in self._settings.fields:
            devices[f.device] = devices.get(f.device, False) or self._good.get(f.name, False)
        problems: tuple[str, ...] = ()
        if taken.dropped:
            problems = (
                Msg(
                    "{count} changes were dropped: the buffer (setting buffer_rows, {size} "
                    "changes) was full; read more often or raise buffer_rows",
                    count=taken.dropped,
                    size=self._held.capacity,
                ),
            )
        return Batch(frame(self._settings, dtypes, taken.items), taken.cursor, devices, problems)


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
