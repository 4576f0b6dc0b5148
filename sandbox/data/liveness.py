"""The equipment online rate (设备联网率): which devices the machine sources watched each day,
and which answered.

**The figure.** For an enterprise and a day (UTC):

- *devices configured*: the devices its machine sources watched that day, counted once per
  source and device (an OPC UA source's devices, the devices an MQTT source names or heard
  from; an SQL source watches none);
- *devices online*: those of them that **answered at least one read** of their source that
  day (a value without a bad status, a message; a run reads until nothing is new, and a
  device that answered any of its reads answered the run);
- the rate is online / configured.

A device counts as online for the day, not by the share of runs it answered, because that
share depends on how often each enterprise reads its sources (every second or once a day),
while "answered at least once that day" means the same on every schedule, and is what the
programme asks: how much of the equipment is connected at all. The share is kept too
(``runs``, ``answered_runs``) for the enterprise's own view.

A read that fails (the machine or the broker unreachable: ``SourceError``) is a read that
no device of the source answered: the devices of the source's latest recorded day are
counted configured, and not online unless they answered another read that day. A source
that has never been read has no known device and counts nothing.

The rows stay on the core that runs the source: a node reports only each finished day's two
counts to the control plane (``node.catalog.publish``), never a device's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from sandbox.store.source_models import DeviceDay

#: A device's name is kept to this many characters.
DEVICE_LENGTH = 200


def day_of(moment: datetime) -> str:
    """The UTC day of ``moment`` as YYYY-MM-DD."""
    return moment.date().isoformat()


@dataclass(frozen=True)
class DayCount:
    """One enterprise's equipment on one day: devices configured, devices online."""

    enterprise_id: str
    day: str
    configured: int
    online: int


def record_read(
    session: Session,
    source_id: str,
    enterprise_id: str,
    devices: Mapping[str, bool],
    moment: datetime,
) -> None:
    """One run's reads of a source at ``moment``: for each device it watched, whether it
    answered.

    Called under the source's lease (one run of a source at a time), so each (source,
    device, day) row has one writer."""
    day = day_of(moment)
    for name, answered in devices.items():
        device = str(name)[:DEVICE_LENGTH]
        row = session.get(DeviceDay, (source_id, device, day))
        if row is None:
            row = DeviceDay(
                source_id=source_id,
                device=device,
                day=day,
                enterprise_id=enterprise_id,
                answered=False,
                runs=0,
                answered_runs=0,
            )
            session.add(row)
        row.runs += 1
        if answered:
            row.answered, row.answered_runs = True, row.answered_runs + 1
        session.flush()


def record_unreachable(
    session: Session, source_id: str, enterprise_id: str, moment: datetime
) -> None:
    """A run that could not read the source: none of its known devices (those of its latest recorded
    day) answered it."""
    latest = session.scalar(select(func.max(DeviceDay.day)).where(DeviceDay.source_id == source_id))
    if latest is None:
        return  # never read: no device known
    known = session.scalars(
        select(DeviceDay.device).where(DeviceDay.source_id == source_id, DeviceDay.day == latest)
    )
    record_read(session, source_id, enterprise_id, dict.fromkeys(known, False), moment)


def daily_counts(
    session: Session,
    *,
    enterprise_id: str | None = None,
    before: date | None = None,
    since: date | None = None,
) -> list[DayCount]:
    """Each enterprise's counts per day (one enterprise's with ``enterprise_id``), for the
    days from ``since`` and before ``before`` (a day still under way is left out by giving
    today), oldest first."""
    query = select(
        DeviceDay.enterprise_id,
        DeviceDay.day,
        func.count(),
        func.sum(case((DeviceDay.answered, 1), else_=0)),
    ).group_by(DeviceDay.enterprise_id, DeviceDay.day)
    if enterprise_id is not None:
        query = query.where(DeviceDay.enterprise_id == enterprise_id)
    if before is not None:
        query = query.where(DeviceDay.day < before.isoformat())
    if since is not None:
        query = query.where(DeviceDay.day >= since.isoformat())
    rows = session.execute(query.order_by(DeviceDay.day, DeviceDay.enterprise_id))
    return [DayCount(e, d, int(n), int(on or 0)) for e, d, n, on in rows]
