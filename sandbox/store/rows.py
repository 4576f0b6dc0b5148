"""Hot reads without the ORM's per-statement cost: one SELECT, compiled once, run on the
driver's own connection, its rows made into detached ORM objects.

Authentication runs on every API request and ``GET /v1/grants/{id}`` is the most common
read; through a :class:`~sqlalchemy.orm.Session` each such statement costs 100-200 µs of
CPU (session and connection set-up, the compiled cache's key, result and identity-map
machinery), about ten times what SQLite takes to run it.  A :class:`RowQuery` keeps the
SQL text (the driver keeps it prepared, per connection) and each column's result
conversion (the same the ORM applies: JSON, UTC datetimes), so the objects it returns
equal what the ORM would have loaded, detached from any session, as those of a finished
``Database.read()`` are.

Used through :meth:`sandbox.store.database.Database.read_rows`: the statements here are
single SELECTs, each a consistent snapshot of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, inspect, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper, make_transient_to_detached

_Convert = Callable[[Any], Any] | None


class _Entity:
    """How to make one mapped class's object from its slice of a row."""

    def __init__(self, cls: type, dialect: Dialect, start: int) -> None:
        mapper: Mapper[Any] = inspect(cls)
        self.new = mapper.class_manager.new_instance
        self.fields: list[tuple[str, int, _Convert]] = []
        for offset, attr in enumerate(mapper.column_attrs):
            column = attr.columns[0]
            convert = column.type._cached_result_processor(dialect, None)
            self.fields.append((attr.key, start + offset, convert))
        self.columns = [attr.columns[0] for attr in mapper.column_attrs]

    def make(self, row: Sequence[Any]) -> Any:
        obj = self.new()
        values = obj.__dict__
        for key, index, convert in self.fields:
            value = row[index]
            values[key] = convert(value) if convert is not None and value is not None else value
        make_transient_to_detached(obj)  # as if loaded by a session that has since closed
        return obj


class RowQuery:
    """``select(*entities)``, narrowed by ``narrow`` (joins, a WHERE with bound parameters):
    :meth:`first` gives one object per entity from the first row, or None.  Compiled once
    per database dialect, on first use."""

    def __init__(
        self, entities: tuple[type, ...], narrow: Callable[[Select[Any]], Select[Any]]
    ) -> None:
        self.entities = entities
        self.narrow = narrow
        self._compiled: dict[str, _Compiled] = {}

    def first(
        self, connection: Any, dialect: Dialect, values: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """The first row's objects, or None; ``connection`` is the driver's (DBAPI)."""
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = _Compiled(self, dialect)
        cursor = connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.params(values))
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row is None:
            return None
        return tuple(entity.make(row) for entity in compiled.entities)


class _Compiled:
    def __init__(self, query: RowQuery, dialect: Dialect) -> None:
        self.entities: list[_Entity] = []
        columns: list[Any] = []
        for cls in query.entities:
            entity = _Entity(cls, dialect, len(columns))
            self.entities.append(entity)
            columns += entity.columns
        compiled = query.narrow(select(*columns)).compile(dialect=dialect)
        self.sql = str(compiled)
        order = compiled.positiontup
        self._positions: list[str] | None = list(order) if compiled.positional and order else None
        self._bind = {
            name: bind.type._cached_bind_processor(dialect) for name, bind in compiled.binds.items()
        }

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        merged = dict(values)
        for name, convert in self._bind.items():
            if convert is not None and merged.get(name) is not None:
                merged[name] = convert(merged[name])
        if self._positions is None:
            return merged
        return [merged[name] for name in self._positions]
