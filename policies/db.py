"""The declarative base shared by every table, small column helpers, and inserting many
new rows at once past the unit of work (``insert_new``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, DateTime, MetaData, Table, TypeDecorator, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive ones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    """A random, unguessable id with a readable prefix, e.g. ``ds_3f2a...``."""
    return f"{prefix}_{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def insert_new(connection: Connection, rows: Sequence[Base]) -> None:
    """Insert new (transient) objects of one mapped class in one ``executemany`` of a Core
    ``INSERT``, past the session's unit of work: for many rows at once, where the ORM's
    flush costs more than the statement.

    Each row gets the attributes set on its object; a column none of the objects set gets
    its default.  The objects stay transient: what the flush would have filled in (a
    column's default) is not on them, so set on them what is read back."""
    if not rows:
        return
    mapper = inspect(type(rows[0]))
    if any(type(row) is not mapper.class_ for row in rows):
        raise TypeError("insert_new inserts objects of one class at a time")
    attrs = [
        (prop.key, prop.columns[0].key)
        for prop in mapper.column_attrs
        if any(prop.key in vars(row) for row in rows)
    ]
    table: Table = mapper.local_table  # type: ignore[assignment]  # a declarative class's
    connection.execute(
        table.insert(),
        [{column: getattr(row, key) for key, column in attrs} for row in rows],
    )
