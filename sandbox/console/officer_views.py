"""What the security officer's console pages show, built from the oversight services.

The pages (``routes_officer``) stay a few lines each; reading the form fields,
turning audit events into table rows, counting denials per day and listing the
providers an officer may act on live here.  Everything is read-only and scoped
like the services it sits on: events through :func:`sandbox.oversight.audit_log.list_events`,
providers by the rule of :mod:`sandbox.jobs.suspension` (a scoped officer acts only on
providers holding a grant, in any state, from one of its enterprises).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select

from i18n import N_, Msg
from i18n.catalog import gettext, translate
from keys import KeysError
from policies import audit
from policies.capabilities import Capability, require, tenants_in_scope
from policies.errors import InvalidRequest
from policies.grants import Grant
from policies.principals import Principal, Role
from sandbox.console import charts
from sandbox.console.timezone import current_zone, current_zone_name
from sandbox.oversight import audit_log as oversight
from sandbox.oversight.attention import Attention
from sandbox.runtime import verification
from sandbox.runtime.veil import Veil

#: The audit page's filter fields, in the order of the form.
FILTER_FIELDS = ("since", "until", "tenant", "actor", "role", "action", "outcome", "resource")
PAGE_SIZES = (10, 25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
#: The attention page's periods: (value, label, length).
PERIODS = (
    ("1d", N_("the last 24 hours"), timedelta(days=1)),
    ("7d", N_("the last 7 days"), timedelta(days=7)),
    ("30d", N_("the last 30 days"), timedelta(days=30)),
    ("90d", N_("the last 90 days"), timedelta(days=90)),
)
DEFAULT_PERIOD = "7d"
#: Denials per day are counted from at most this many events (pages of 1000).
MAX_COUNTED = 20_000
_SUMMARY_CHARS = 120
_MAX_LENGTH = {"action": 64, "resource": 120, "actor": 40, "tenant": 40}


def parse_time(name: str, text: str | None) -> datetime | None:
    """A form's date or date-and-time, read in the reader's time zone unless it names one;
    None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            Msg(
                "'{name}' is not a date and time: pick one, or write it like "
                "2026-11-01T08:00 ({zone})",
                name=name,
                zone=current_zone_name(),
            )
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=current_zone())


def parse_int(name: str, text: str | None, minimum: int = 1) -> int | None:
    """A whole number of at least ``minimum`` from a form field; None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < minimum:
        raise InvalidRequest(
            Msg("'{name}' must be a whole number of at least {minimum}", name=name, minimum=minimum)
        )
    return int(text)


@dataclass
class AuditQuery:
    """The audit page's query string: what was typed (to show again) and what it means."""

    form: dict[str, str]
    page_size: int = DEFAULT_PAGE_SIZE
    before_seq: int | None = None
    where: oversight.EventFilter | None = None
    error: dict[str, Any] | None = None

    def link(self, before_seq: int | None = None) -> str:
        """This search's URL, on the page of events before ``before_seq`` (None: the newest)."""
        params = {k: v for k, v in self.form.items() if v}
        if self.page_size != DEFAULT_PAGE_SIZE:
            params["limit"] = str(self.page_size)
        if before_seq is not None:
            params["before_seq"] = str(before_seq)
        return "/console/audit" + ("?" + urlencode(params) if params else "")


def read_audit_query(params: Mapping[str, str]) -> AuditQuery:
    """The filters of the audit page; a wrong one leaves ``where`` None and sets ``error``."""
    form = {name: (params.get(name) or "").strip() for name in FILTER_FIELDS}
    query = AuditQuery(form=form)
    try:
        size = parse_int(Msg("per page"), params.get("limit"))
        if size is not None and size not in PAGE_SIZES:
            sizes = ", ".join(map(str, PAGE_SIZES))
            raise InvalidRequest(Msg("'per page' must be one of {sizes}", sizes=sizes))
        query.page_size = size or DEFAULT_PAGE_SIZE
        query.before_seq = parse_int(Msg("older than event"), params.get("before_seq"))
        for name, most in _MAX_LENGTH.items():
            if len(form[name]) > most:
                raise InvalidRequest(
                    Msg("'{name}' is at most {most} characters long", name=name, most=most)
                )
        query.where = oversight.EventFilter(
            since=parse_time(Msg("since"), form["since"]),
            until=parse_time(Msg("until"), form["until"]),
            tenant_id=form["tenant"] or None,
            actor_id=form["actor"] or None,
            role=form["role"] or None,
            action=form["action"] or None,
            outcome=form["outcome"] or None,
            resource=form["resource"] or None,
        )
    except InvalidRequest as exc:
        message = gettext("This filter does not work: {reason}.")
        query.error = {"message": message.format(reason=translate(exc.message)), "reasons": []}
    return query


@dataclass(frozen=True)
class EventRow:
    """One audit event as the table shows it."""

    seq: int
    at: datetime
    actor_role: str
    actor_id: str
    actor_name: str
    tenant_id: str
    tenant_name: str
    action: str
    outcome: str
    resource: str
    summary: str
    full: str


@dataclass
class EventPage:
    rows: list[EventRow]
    older: str | None
    newest: str | None


def event_page(veil: Veil, principal: Principal, query: AuditQuery) -> EventPage:
    """One page of events, newest first, with links to the older page and to the newest."""
    events = oversight.list_events(
        veil, principal, where=query.where, before_seq=query.before_seq, limit=query.page_size + 1
    )
    more = len(events) > query.page_size
    events = events[: query.page_size]
    names = names_of(veil, {e.actor_id for e in events} | {e.tenant_id for e in events})
    rows = [_row(e, names) for e in events]
    return EventPage(
        rows=rows,
        older=query.link(rows[-1].seq) if more and rows else None,
        newest=query.link() if query.before_seq is not None else None,
    )


def _row(event: audit.AuditEvent, names: Mapping[str, str]) -> EventRow:
    summary, full = summarise(event.details or {})
    return EventRow(
        seq=event.seq,
        at=event.at,
        actor_role=event.actor_role or "",
        actor_id=event.actor_id or "",
        actor_name=names.get(event.actor_id or "", ""),
        tenant_id=event.tenant_id or "",
        tenant_name=names.get(event.tenant_id or "", ""),
        action=event.action,
        outcome=event.outcome,
        resource=event.resource or "",
        summary=summary,
        full=full,
    )


def summarise(details: Mapping[str, Any]) -> tuple[str, str]:
    """``key: value; …`` cut to a line, and the whole details ('' when the line says it all)."""
    parts = []
    for key, value in details.items():
        if isinstance(value, list):
            text = ", ".join(str(v) for v in value) or "none"
        elif isinstance(value, dict):
            text = json.dumps(value, sort_keys=True, separators=(", ", ": "))
        else:
            text = str(value)
        parts.append(f"{key}: {text}")
    line = "; ".join(parts)
    if len(line) <= _SUMMARY_CHARS:
        return line, ""
    return line[: _SUMMARY_CHARS - 1] + "…", json.dumps(details, indent=2, sort_keys=True)


def names_of(veil: Veil, ids: set[str | None]) -> dict[str, str]:
    """The names of principals by id (for labels next to ids)."""
    wanted = sorted(i for i in ids if i)
    if not wanted:
        return {}
    with veil.db.transaction() as session:
        rows = session.execute(select(Principal.id, Principal.name).where(Principal.id.in_(wanted)))
        return dict(rows.tuples().all())


def enterprises_in_scope(veil: Veil, principal: Principal) -> list[tuple[str, str]]:
    """(id, name) of the enterprises whose events the caller sees, for the tenant filter."""
    require(principal, Capability.READ_AUDIT)
    query = select(Principal.id, Principal.name).where(Principal.role == Role.ENTERPRISE)
    scope = tenants_in_scope(principal).as_list()
    if scope is not None:
        query = query.where(Principal.id.in_(scope))
    with veil.db.transaction() as session:
        return list(session.execute(query.order_by(Principal.name)).tuples().all())


@dataclass(frozen=True)
class ChainStatus:
    """The verification of the whole chain and how long it took; ``unavailable`` says why
    it could not be done (the key server holding the checkpoints' public key is down)."""

    report: audit.VerifyReport | None
    seconds: float
    unavailable: str | None = None


def chain_status(veil: Veil, principal: Principal) -> ChainStatus:
    """Verify the chain now, from the newest recorded full verification (every event when
    there is none; ``sandbox.runtime.verification``), timed so the page can say how long."""
    start = time.perf_counter()
    try:
        report = verification.routine(veil, principal)
    except KeysError as exc:
        return ChainStatus(None, time.perf_counter() - start, str(exc))
    return ChainStatus(report, time.perf_counter() - start)


@dataclass
class ExportForm:
    """The export form's fields, as typed."""

    from_seq: str = ""
    to_seq: str = ""
    since: str = ""
    until: str = ""

    def arguments(self) -> dict[str, Any]:
        """The range for :func:`sandbox.oversight.audit_log.export`, or InvalidRequest in
        plain words."""
        first = parse_int(Msg("from event"), self.from_seq)
        last = parse_int(Msg("to event"), self.to_seq)
        since = parse_time(Msg("from time"), self.since)
        until = parse_time(Msg("to time"), self.until)
        if (first is not None or last is not None) and (since or until):
            raise InvalidRequest(Msg("give a range by event numbers or by time, not both"))
        if first is not None and last is not None and first > last:
            raise InvalidRequest(Msg("'from event' must not come after 'to event'"))
        if since and until and since >= until:
            raise InvalidRequest(Msg("'from time' must come before 'to time'"))
        return {"from_seq": first, "to_seq": last, "since": since, "until": until}


def export_filename(now: datetime) -> str:
    return f"veil-audit-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.jsonl"


# -- attention -----------------------------------------------------------------------------------


def period_start(choice: str | None, now: datetime) -> tuple[str, datetime]:
    """The chosen period's value and its start; InvalidRequest for an unknown one."""
    value = choice or DEFAULT_PERIOD
    for name, _, length in PERIODS:
        if name == value:
            return value, now - length
    raise InvalidRequest(Msg("choose a period from the list (the last 24 hours to 90 days)"))


@dataclass
class DailyDenials:
    """Providers' denied attempts per day (UTC) in the period; ``capped`` when not all counted."""

    counts: dict[date, int] = field(default_factory=dict)
    total: int = 0
    capped: bool = False


def denials_per_day(
    veil: Veil, principal: Principal, since: datetime, now: datetime
) -> DailyDenials:
    """Count the providers' denied attempts (the attention view's denials) by day, in scope."""
    where = oversight.EventFilter(since=since, outcome=audit.Outcome.DENIED, role=Role.PROVIDER)
    counts: Counter[date] = Counter()
    before: int | None = None
    result = DailyDenials()
    while True:
        batch = oversight.list_events(veil, principal, where=where, before_seq=before, limit=1000)
        counts.update(e.at.astimezone(UTC).date() for e in batch)
        result.total += len(batch)
        if len(batch) < 1000:
            break
        if result.total >= MAX_COUNTED:
            result.capped = True
            break
        before = batch[-1].seq
    first, last = since.astimezone(UTC).date(), now.astimezone(UTC).date()
    for ordinal in range(first.toordinal(), last.toordinal() + 1):
        counts.setdefault(date.fromordinal(ordinal), 0)  # every day of the period, even quiet
    result.counts = dict(sorted(counts.items()))
    return result


# -- providers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderRow:
    """A provider the caller may suspend or reinstate, and the enterprises that granted it."""

    id: str
    name: str
    status: str
    created_at: datetime
    enterprises: tuple[str, ...]


def providers_in_reach(veil: Veil, principal: Principal) -> list[ProviderRow]:
    """Providers the caller may act on: all for operators and unscoped officers; for a
    scoped officer those holding a grant (in any state) from one of its enterprises."""
    require(principal, Capability.SUSPEND_PROVIDER)
    scope = tenants_in_scope(principal).as_list()
    grants = select(Grant.provider_id, Grant.enterprise_id)
    if scope is not None:
        grants = grants.where(Grant.enterprise_id.in_(scope))
    with veil.db.transaction() as session:
        granted: dict[str, set[str]] = {}
        for provider_id, enterprise_id in session.execute(grants):
            granted.setdefault(provider_id, set()).add(enterprise_id)
        query = select(Principal).where(Principal.role == Role.PROVIDER)
        if scope is not None:
            query = query.where(Principal.id.in_(sorted(granted)))
        providers = list(session.scalars(query.order_by(Principal.name, Principal.id)))
    names = names_of(veil, {e for ids in granted.values() for e in ids})
    return [
        ProviderRow(
            id=p.id,
            name=p.name,
            status=p.status,
            created_at=p.created_at,
            enterprises=tuple(sorted(names.get(e, e) for e in granted.get(p.id, ()))),
        )
        for p in providers
    ]


# -- the attention page's charts -----------------------------------------------------------------


def denial_charts(view: Attention, daily: DailyDenials) -> dict[str, Any]:
    """The two charts of denied attempts, each with the rows of its number table."""
    per_provider = [
        (d.provider_name or d.provider_id, float(d.count)) for d in view.denied_by_provider
    ]
    return {
        "by_provider_svg": charts.bar_chart(gettext("Denied attempts per provider"), per_provider),
        "by_provider_rows": [(name, int(count)) for name, count in per_provider],
        "by_day_svg": charts.day_bars(
            gettext("Denied attempts per day (UTC)"),
            {d: float(n) for d, n in daily.counts.items()},
        ),
        "by_day_rows": [(d.isoformat(), n) for d, n in daily.counts.items()],
    }
