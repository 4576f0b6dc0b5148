"""The time zone the console shows and reads dates in, for the request being served.

Set once per request from the reader's setting (``veil_tz``) or ``VEIL_TIMEZONE``
(:mod:`sandbox.console.preferences`); read by ``render.when`` and by the forms that read
dates, so that a page and its forms use the same zone.
"""

from __future__ import annotations

import functools
import zoneinfo
from contextvars import ContextVar
from datetime import tzinfo
from typing import Final

#: Where no setting and no ``VEIL_TIMEZONE`` says otherwise: the pilot cities' zone.
DEFAULT_TIMEZONE: Final = "Asia/Shanghai"

_zone: ContextVar[str | None] = ContextVar("veil_console_zone", default=None)


@functools.cache
def zone_names() -> tuple[str, ...]:
    """Every zone of the IANA database, sorted (the choices of the time-zone form)."""
    return tuple(sorted(n for n in zoneinfo.available_timezones() if "/" in n or n == "UTC"))


def valid_zone(name: str | None) -> str | None:
    """``name`` when it is a zone of the IANA database, else None."""
    return name if name and name in zoneinfo.available_timezones() else None


def set_zone(name: str) -> None:
    """Use ``name`` for the dates of this request (an unknown name: the default zone)."""
    _zone.set(valid_zone(name) or DEFAULT_TIMEZONE)


def current_zone_name() -> str:
    return _zone.get() or DEFAULT_TIMEZONE


def current_zone() -> tzinfo:
    """The zone dates are shown and read in, for the request being served."""
    return zoneinfo.ZoneInfo(current_zone_name())
