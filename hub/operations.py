"""Every operator action and query, once: the API, the dashboard and the CLI only translate these.

Each function takes the core ``Hub`` and returns a typed outcome, or raises one of the
``OperationError`` subclasses below (not found, not configured, still running, nothing to
replay, invalid argument); each error carries a stable ``code``, a sentence for a person and
``details``. The rules are the admin API's: a retry or replay names only destinations that are
configured and enabled, and "retry every dead delivery" leaves those of destinations that are no
longer configured alone (and says how many it left).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from .analytics import Analytics, compute as compute_analytics
from .errors import DeliveryError, Retryable
from .records import AttemptRecord, DeliveryDetail, DeliveryRecord
from .redaction import redact
from .report import CallReport
from .store import DEAD, RUNNING, STATUSES, Delivery, utcnow

if TYPE_CHECKING:
    from .core import Hub

E164 = re.compile(r"^\+[1-9]\d{1,14}$")


# --- errors -------------------------------------------------------------------------------

class OperationError(Exception):
    """An action that cannot be done as asked; nothing was changed."""

    code = "operation_failed"

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(OperationError):
    """No report or delivery with that id (``kind`` says which)."""

    def __init__(self, kind: str, item_id: str):
        super().__init__(f"No {kind} with id {item_id!r}.", {f"{kind}_id": item_id})
        self.code = f"{kind}_not_found"
        self.kind, self.id = kind, item_id


class NotConfigured(OperationError):
    """The destination is not (or no longer) an enabled one."""

    code = "destination_not_configured"

    def __init__(self, destination: str, configured: list[str], message: str | None = None):
        super().__init__(message or f"No enabled destination named {destination!r} is configured.",
                         {"destination": destination, "configured": configured})
        self.destination = destination


class StillRunning(OperationError):
    """Every delivery asked for is being attempted right now."""

    code = "delivery_running"


class NothingToReplay(OperationError):
    """A replay of a report that has no deliveries, with no destination named."""

    code = "nothing_to_replay"


class NotTestable(OperationError):
    """The destination's type has no test call (``Destination.test_connection``)."""

    code = "destination_not_testable"


class InvalidArgument(OperationError):
    """An argument outside what the action accepts; ``param`` names it."""

    code = "invalid_parameter"

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}", {"param": param})
        self.param = param


# --- outcomes -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Retried:
    """One delivery made due now, with a fresh attempt budget."""

    delivery: DeliveryRecord


@dataclass(frozen=True)
class Replayed:
    """A report's deliveries made due now; ``skipped_running`` are being attempted already."""

    report_id: str
    deliveries: list[DeliveryRecord]
    skipped_running: list[str]


@dataclass(frozen=True)
class RetriedDead:
    """Dead deliveries made due again; ``skipped_unconfigured`` counts, per destination no longer
    configured, the dead deliveries left alone."""

    delivery_ids: list[str]
    skipped_unconfigured: dict[str, int]

    @property
    def requeued(self) -> int:
        return len(self.delivery_ids)


@dataclass(frozen=True)
class ConnectionChecked:
    """A destination's test call: ``ok``, else ``problem`` (``bad_token``, ``missing_scope``,
    ``unreachable``, ``rejected``) and ``message``, one line saying what is wrong."""

    destination: str
    type: str
    ok: bool
    problem: str | None
    message: str


@dataclass(frozen=True)
class DayStats:
    date: str
    reports: int
    average_sentiment: float | None


@dataclass(frozen=True)
class Stats:
    """Delivery counts per destination and status; reports and average sentiment per UTC day."""

    days: int
    since: datetime
    deliveries: dict[str, dict[str, int]]
    delivery_totals: dict[str, int]
    per_day: list[DayStats]

    @property
    def dead_by_destination(self) -> dict[str, int]:
        return {name: counts[DEAD] for name, counts in self.deliveries.items() if counts[DEAD]}


@dataclass(frozen=True)
class ReportPage:
    """A page of reports, newest first; ``deliveries`` maps each to its deliveries when asked for."""

    reports: list[CallReport]
    limit: int | None
    offset: int
    deliveries: dict[str, list[DeliveryRecord]] = field(default_factory=dict)

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if self.limit and len(self.reports) == self.limit else None


@dataclass(frozen=True)
class ReportDetail:
    """One report, its deliveries with their attempts (by destination), and the enabled destinations."""

    report: CallReport
    deliveries: list[DeliveryDetail]
    configured: list[str]

    @property
    def undelivered(self) -> list[str]:
        """Enabled destinations the report has no delivery to (a replay can create one)."""
        return sorted(set(self.configured) - {d.destination for d in self.deliveries})


# --- queries ------------------------------------------------------------------------------

def configured(hub: Hub) -> list[str]:
    """The enabled destinations' names, sorted."""
    return sorted(hub.destinations)


def list_reports(hub: Hub, *, since: datetime | None = None, until: datetime | None = None,
                 customer: str | None = None, limit: int | None = 50, offset: int = 0,
                 with_deliveries: bool = False) -> ReportPage:
    if customer is not None and not E164.match(customer):
        raise InvalidArgument("customer", f"must be an E.164 number like +31612345678, not {customer!r}")
    found = hub.store.list_reports(since=since, until=until, customer=customer, limit=limit, offset=offset)
    deliveries = {}
    if with_deliveries:
        deliveries = {report_id: [d.record() for d in rows]
                      for report_id, rows in hub.store.deliveries_by_report(r.id for r in found).items()}
    return ReportPage(found, limit, offset, deliveries)


def get_report(hub: Hub, report_id: str) -> ReportDetail:
    report = hub.store.get_report(report_id)
    if report is None:
        raise NotFound("report", report_id)
    rows = sorted(hub.store.list_deliveries(report_id=report_id, limit=None), key=lambda d: d.destination)
    return ReportDetail(report, [_detail(hub, d) for d in rows], configured(hub))


def list_deliveries(hub: Hub, *, status: str | None = None, destination: str | None = None,
                    report_id: str | None = None, since: datetime | None = None,
                    limit: int | None = 50) -> list[DeliveryRecord]:
    """Most recently updated first."""
    if status is not None and status not in STATUSES:
        raise InvalidArgument("status", f"must be one of {', '.join(STATUSES)}, not {status!r}")
    return [d.record() for d in hub.store.list_deliveries(status=status, destination=destination,
                                                          report_id=report_id, since=since, limit=limit)]


def count_deliveries(hub: Hub, *, destination: str | None = None, since: datetime | None = None) -> dict[str, int]:
    """Deliveries per status (every status, zeros included), to one destination or all, updated
    since ``since`` or ever."""
    return dict.fromkeys(STATUSES, 0) | hub.store.status_counts(destination=destination, since=since)


def get_delivery(hub: Hub, delivery_id: str) -> DeliveryDetail:
    row = hub.store.get_delivery(delivery_id)
    if row is None:
        raise NotFound("delivery", delivery_id)
    return _detail(hub, row)


def _window_start(days: int) -> datetime:
    """Midnight UTC ``days - 1`` days ago: the last ``days`` UTC days, today included."""
    if days < 1:
        raise InvalidArgument("days", f"must be at least 1, not {days}")
    first = utcnow().date() - timedelta(days=days - 1)
    return datetime(first.year, first.month, first.day, tzinfo=timezone.utc)


def analytics(hub: Hub, days: int = 30, *, line: str | None = None, assistant: str | None = None) -> Analytics:
    """The analytics figures of the last ``days`` UTC days, of one line (its E.164 number), one
    assistant (its name, else its id) or all."""
    if line is not None and not E164.match(line):
        raise InvalidArgument("line", f"must be the line's E.164 number like +31850835037, not {line!r}")
    return compute_analytics(hub.store, hub.config.analysis.schema, _window_start(days), days,
                             line=line, assistant=assistant)


def stats(hub: Hub, days: int = 30) -> Stats:
    """The last ``days`` UTC days, today included; configured destinations count before their
    first delivery."""
    since = _window_start(days)
    first = since.date()
    found = hub.store.report_days(since)
    per_day = []
    for n in range(days):
        day = (first + timedelta(days=n)).isoformat()
        entry = found.get(day, {"reports": 0, "average_sentiment": None})
        average = entry["average_sentiment"]
        per_day.append(DayStats(day, entry["reports"], round(average, 2) if average is not None else None))
    by_destination: dict[str, dict[str, int]] = {}
    for (destination, status), count in sorted(hub.store.delivery_counts().items()):
        by_destination.setdefault(destination, dict.fromkeys(STATUSES, 0))[status] = count
    for name in hub.destinations:
        by_destination.setdefault(name, dict.fromkeys(STATUSES, 0))
    totals = {s: sum(c[s] for c in by_destination.values()) for s in STATUSES}
    return Stats(days, since, dict(sorted(by_destination.items())), totals, per_day)


# --- actions ------------------------------------------------------------------------------

def retry_delivery(hub: Hub, delivery_id: str) -> Retried:
    """Make one delivery due now with a fresh attempt budget; its saved state is kept."""
    delivery = hub.store.get_delivery(delivery_id)
    if delivery is None:
        raise NotFound("delivery", delivery_id)
    _require_configured(hub, delivery.destination,
                        f"The destination {delivery.destination!r} is not configured (any more); "
                        f"add it back to the configuration, then retry.")
    ids = [] if delivery.status == RUNNING else hub.store.requeue(report_id=delivery.report_id,
                                                                  destination=delivery.destination)
    if not ids:
        raise StillRunning("The delivery is being attempted right now; look again when the attempt is over.",
                           {"delivery_id": delivery_id})
    hub.dispatcher.wake(ids)
    return Retried(hub.store.get_delivery(delivery_id).record())


def replay_report(hub: Hub, report_id: str, destination: str | None = None) -> Replayed:
    """Deliver a report again: every delivery it has, or the one to ``destination`` (created if
    the report has none to it). State is kept, so a replay updates instead of creating twice."""
    if hub.store.get_report(report_id) is None:
        raise NotFound("report", report_id)
    if destination is not None:
        _require_configured(hub, destination)
    existing = hub.store.list_deliveries(report_id=report_id, destination=destination, limit=None)
    if destination is None and not existing:
        raise NothingToReplay("The report has no deliveries; name a destination to deliver it to.",
                              {"configured": configured(hub)})
    ids = hub.store.requeue(report_id=report_id, destination=destination, create_missing=destination is not None)
    skipped = sorted(d.id for d in existing if d.id not in ids)
    if not ids:
        raise StillRunning("Every matching delivery is being attempted right now; try again shortly.",
                           {"running": skipped})
    hub.dispatcher.wake(ids)
    return Replayed(report_id, [hub.store.get_delivery(i).record() for i in ids], skipped)


def retry_dead(hub: Hub, destination: str | None = None) -> RetriedDead:
    """Make every dead delivery of the configured destinations (or of one) due again."""
    if destination is not None:
        _require_configured(hub, destination)
    dead = {name: n for (name, status), n in hub.store.delivery_counts().items() if status == DEAD}
    names = [destination] if destination else sorted(name for name in dead if name in hub.destinations)
    ids = [i for name in names for i in hub.store.requeue(destination=name, dead_only=True)]
    if ids:
        hub.dispatcher.wake(ids)
    skipped = {name: n for name, n in sorted(dead.items()) if name not in hub.destinations}
    return RetriedDead(ids, skipped)


def check_connection(hub: Hub, destination: str) -> ConnectionChecked:
    """Make the destination's one cheap authenticated call (``Destination.test_connection``)
    and say in one line whether delivery can work, and if not, what is wrong."""
    _require_configured(hub, destination)
    instance = hub.destinations[destination]
    ctx = instance.context(delivery_id=f"test-{destination}")
    try:
        reached = instance.test_connection(ctx)
    except NotImplementedError:
        raise NotTestable(f"The destination type {instance.type!r} has no test call; send a sample "
                          f"report with `sovereign-hub send-test {destination} --dry-run` instead.",
                          {"destination": destination, "type": instance.type}) from None
    except DeliveryError as exc:
        return ConnectionChecked(destination, instance.type, False, _problem(exc), redact(exc.reason))
    except Exception as exc:  # noqa: BLE001 - a plugin's bug: one line, as a delivery would record it
        return ConnectionChecked(destination, instance.type, False, "error",
                                 f"unexpected {type(exc).__name__} in the test call: {redact(str(exc))}")
    return ConnectionChecked(destination, instance.type, True, None, redact(reached))


def _problem(exc: DeliveryError) -> str:
    if exc.http_status == 401:
        return "bad_token"
    if exc.http_status == 403:
        return "missing_scope"
    if isinstance(exc, Retryable):
        return "unreachable"
    return "rejected"


def _require_configured(hub: Hub, destination: str, message: str | None = None) -> None:
    if destination not in hub.destinations:
        raise NotConfigured(destination, configured(hub), message)


def _detail(hub: Hub, row: Delivery) -> DeliveryDetail:
    attempts = tuple(AttemptRecord(a["number"], a["started_at"], a["duration_ms"], a["outcome"],
                                   a["http_status"], a["error"]) for a in hub.store.list_attempts(row.id))
    return DeliveryDetail(**row.record().__dict__, attempt_log=attempts)
