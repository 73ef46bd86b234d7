"""Every operator action and query, once: the API, the dashboard and the CLI only translate these.

Each function takes the core ``Hub`` and returns a typed outcome, or raises one of the
``OperationError`` subclasses below (not found, not configured, still running, nothing to
replay, invalid argument); each error carries a stable ``code``, a sentence for a person and
``details``. The rules are the admin API's: a retry or replay names only destinations that are
configured and enabled, and "retry every dead delivery" leaves those of destinations that are no
longer configured alone (and says how many it left).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable

from . import logs
from .analytics import Analytics, compute as compute_analytics
from .errors import DeliveryError, Retryable
from .normalize import to_e164
from .records import AttemptRecord, DeliveryDetail, DeliveryRecord
from .redaction import in_play, mask_phone, redact, scrub
from .report import Call, CallReport, PhoneNumber
from .store import DEAD, RUNNING, STATUSES, SUCCEEDED, Answer, Delivery, utcnow

if TYPE_CHECKING:
    from .core import Hub

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
#: what ``forget`` says of a destination whose erasure it queued
QUEUED = "queued"
log = logging.getLogger(__name__)
#: reports deleted per transaction by prune and forget: SQLite's write lock is held briefly
ERASE_BATCH = 200


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


class AnswersNotConfigured(OperationError):
    """A live-answer action on a hub whose ``[answers]`` table does not set it up."""

    code = "answers_not_configured"


class RetentionNotSet(OperationError):
    """``prune`` with no ``[privacy] retention_days``."""

    code = "retention_not_set"


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
class DestinationState:
    """A configured destination: its type, and whether (since when) an operator paused it."""

    name: str
    type: str
    paused_at: datetime | None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


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
    paused: list[str] = field(default_factory=list)

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
class CallEvent:
    """One stored event of a call, with what the hub answered to it and its deliveries."""

    report: CallReport
    answer: Answer | None
    deliveries: list[DeliveryRecord]

    @property
    def tool_calls(self) -> list[dict]:
        """A tool-calls event's entries beside their results: ``{"id", "name", "arguments",
        "result" or "error"}`` (names and arguments only while the raw payload is kept)."""
        sent = ((self.report.raw or {}).get("message") or {}).get("tool_call_list") or []
        asked = {str(e.get("id")): e.get("function") or {} for e in sent if isinstance(e, dict)}
        results = (self.answer.answer.get("results") if self.answer and isinstance(self.answer.answer, dict)
                   else None) or [{"tool_call_id": i} for i in asked]
        return [{"id": r.get("tool_call_id"), "name": asked.get(str(r.get("tool_call_id")), {}).get("name"),
                 "arguments": asked.get(str(r.get("tool_call_id")), {}).get("arguments"),
                 **{k: r[k] for k in ("result", "error") if k in r}} for r in results]


@dataclass(frozen=True)
class ReportDetail:
    """One report, its deliveries with their attempts (by destination), and the enabled destinations;
    ``story``: every event of its call in order, this one included."""

    report: CallReport
    deliveries: list[DeliveryDetail]
    configured: list[str]
    story: list[CallEvent] = field(default_factory=list)

    @property
    def undelivered(self) -> list[str]:
        """Enabled destinations the report has no delivery to (a replay can create one)."""
        return sorted(set(self.configured) - {d.destination for d in self.deliveries})


@dataclass(frozen=True)
class Pruned:
    """What ``prune`` removed (or, in a dry run, would remove): reports whose call happened before
    ``before``; ``counts`` per table (reports, deliveries, attempts)."""

    dry_run: bool
    before: datetime
    counts: dict[str, int]


@dataclass(frozen=True)
class DestinationErasureRecord:
    """One queued erasure at one destination, as the operator sees it (never the number):
    ``pending`` (due at ``next_attempt_at``; ``held`` says why it waits: the destination is
    paused, or no longer configured), ``running``, ``succeeded`` (``result``) or ``dead``."""

    destination: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    result: str | None
    attempt_log: tuple[AttemptRecord, ...]
    updated_at: datetime
    held: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in (SUCCEEDED, DEAD)


@dataclass(frozen=True)
class ErasureRecord:
    """The kept record of one erasure: when, by whom, rows removed per table, what each enabled
    destination said at the time (``cannot erase: ...``, ``queued``) and each queued erasure."""

    id: int
    erased_at: datetime
    actor: str
    counts: dict[str, int]
    destinations: dict[str, str]
    queued: tuple[DestinationErasureRecord, ...]

    @property
    def ended(self) -> bool:
        return all(job.ended for job in self.queued)


@dataclass(frozen=True)
class Forgotten:
    """One caller erased: ``counts`` per table, and with destinations, what each enabled one
    said (``cannot erase: ...`` or ``queued``); ``erasure`` is the kept record with the queued
    erasures. ``number`` is masked."""

    number: str
    counts: dict[str, int]
    destinations: dict[str, str]
    erasure: ErasureRecord


@dataclass(frozen=True)
class CustomerExport:
    """Everything the hub holds about one caller: each report with its deliveries and attempts."""

    number: str
    exported_at: datetime
    reports: list[ReportDetail]


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
    return ReportDetail(report, [_detail(hub, d) for d in rows], configured(hub), call_story(hub, report))


def call_story(hub: Hub, report: CallReport) -> list[CallEvent]:
    """Every stored event of ``report``'s call in the order they happened: the assistant-request and
    its answer, each tool-calls event and its results, the status updates, the end-of-call report,
    the follow-ups, each with its deliveries."""
    events = hub.store.call_reports(report.source, report.call.id)
    ids = [r.id for r in events]
    answers = hub.store.answers_of(ids)
    deliveries = hub.store.deliveries_by_report(ids)
    return [CallEvent(r, answers.get(r.id), [d.record() for d in deliveries.get(r.id, [])]) for r in events]


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
    return Stats(days, since, dict(sorted(by_destination.items())), totals, per_day, sorted(hub.store.paused()))


def list_destinations(hub: Hub) -> list[DestinationState]:
    """The enabled destinations, by name, each with its pause."""
    paused = hub.store.paused()
    return [DestinationState(name, hub.config.destinations[name].type, paused.get(name))
            for name in configured(hub)]


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


# --- live answers (docs/answers.md) --------------------------------------------------------------

@dataclass(frozen=True)
class AnswerTried:
    """``answers test``: the assistant-request answer the hub would give now, and why."""

    answer: dict
    outcome: str
    lookup: str | None
    detail: str | None
    latency_ms: float


def export_tools(hub: Hub) -> list[dict]:
    """The hub's tools as the platform's ``llm_config.tools[]`` entries, by name, each pointing at
    ``[server] public_url``'s webhook."""
    if hub.config.server.public_url is None:
        raise AnswersNotConfigured("[server] public_url is not set: the platform needs the address it "
                                   "reaches this hub at (e.g. public_url = \"https://hub.example.com\")")
    url = f"{hub.settings.public_url.rstrip('/')}/webhooks/hms"
    return [tool.definition(url) for _, tool in sorted(hub.answers.tools.tools.items())]


def try_answer(hub: Hub, number: str) -> AnswerTried:
    """The assistant-request answer for a call from ``number`` (any written form), through the real
    lookup and templates, within the real budget; nothing is stored."""
    if hub.config.answers.assistant_request is None:
        raise AnswersNotConfigured("no [answers.assistant_request] table in the configuration: set crm and "
                                   "first_message there (docs/answers.md)")
    e164 = customer_number(hub, number)
    now = utcnow()
    report = CallReport(id="dry-run", source="hms", event="assistant-request",
                        call=Call(id="dry-run", type="inbound_phone_call", direction="inbound", status="ringing"),
                        occurred_at=now, received_at=now, phone_number=PhoneNumber(None),
                        customer=PhoneNumber(e164, raw=number, region=None))
    answered = hub.answers.dry_run(report)
    return AnswerTried(answered.answer, answered.outcome, answered.lookup, answered.detail, answered.latency_ms)


# --- personal data: retention, erasure, access ----------------------------------------------

def customer_number(hub: Hub, number: str) -> str:
    """``number`` in any written form (``0612345678`` read in ``[phone] default_region``,
    ``+31 6 1234 5678``, ``0031612345678``) as E.164; ``InvalidArgument`` when it is none."""
    e164 = to_e164(number.replace("(0)", "") if isinstance(number, str) else number, hub.config.phone.default_region)
    if e164 is None:
        raise InvalidArgument("number", f"{mask_phone(number) or 'an empty value'} is not a phone number "
                                        f"(give it in E.164 like +31612345678, or nationally with "
                                        f"[phone] default_region set)")
    return e164


def prune(hub: Hub, *, dry_run: bool = False, now: datetime | None = None) -> Pruned:
    """Delete reports older than ``[privacy] retention_days`` with their deliveries and attempts,
    in batches of ``ERASE_BATCH``; a report with a delivery pending or running is kept until it ends."""
    days = hub.config.privacy.retention_days
    if days is None:
        raise RetentionNotSet("[privacy] retention_days is not set, so nothing expires; set it to the "
                              "number of days a report is kept.", {"key": "privacy.retention_days"})
    before = (now or utcnow()) - timedelta(days=days)
    if dry_run:
        ids = hub.store.expired_report_ids(before, None)
        found = [hub.store.count_rows(ids[n:n + ERASE_BATCH]) for n in range(0, len(ids), ERASE_BATCH)]
    else:
        found = []
        while batch := hub.store.expired_report_ids(before, ERASE_BATCH):
            found.append(hub.store.delete_reports(batch))
    counts = _total(found)
    logs.event(log, "prune.dry_run" if dry_run else "prune.finished", before=before.isoformat(), **counts)
    return Pruned(dry_run, before, counts)


def forget(hub: Hub, number: str, *, actor: str, destinations: bool = False) -> Forgotten:
    """Erase every report, event, delivery (with its state) and attempt of one caller, and keep
    a record of it without the number or any content. A delivery in flight is stopped: its row
    is gone, so its worker records nothing and nothing resends it. With ``destinations``, an
    erasure is queued at each enabled destination whose type can erase (``Destination.forget``),
    in the same transaction as the record; the running hub runs it like a delivery
    (``hub.erasures``), and the queued row holds the number only until it ends."""
    e164 = customer_number(hub, number)
    found = []
    while batch := hub.store.customer_report_ids(e164, ERASE_BATCH):
        found.append(hub.store.delete_reports(batch))
    counts = _total(found)
    said, queue = {}, []
    if destinations:
        for name, destination in sorted(hub.destinations.items()):
            if destination.can_forget():
                said[name] = QUEUED
                queue.append(name)
            else:
                said[name] = (f"cannot erase: the {destination.type!r} type has no erasure "
                              f"(what it was sent stays there)")
    hub.answers.lookups.forget(e164)  # this process's cache of who the caller is (others' expire)
    erasure_id = hub.store.record_erasure(actor, counts, said, subject=e164, queue=queue)
    logs.event(log, "customer.forgotten", actor=actor, erasure_id=erasure_id, destinations=said, **counts)
    return Forgotten(mask_phone(e164), counts, said, get_erasure(hub, erasure_id))


def _total(counts: list[dict[str, int]]) -> dict[str, int]:
    return {table: sum(c[table] for c in counts) for table in ("reports", "deliveries", "attempts")}


def list_erasures(hub: Hub, *, limit: int = 50) -> list[ErasureRecord]:
    """The kept erasure records, newest first, each with its queued erasures."""
    if not 1 <= limit <= 1000:
        raise InvalidArgument("limit", f"must be between 1 and 1000, not {limit}")
    return _erasure_records(hub, hub.store.list_erasures(limit))


def get_erasure(hub: Hub, erasure_id: int | str) -> ErasureRecord:
    """One erasure record; ``erasure_id`` as a number or its text (the API's path)."""
    if not str(erasure_id).isdigit() or not 0 < int(erasure_id) < 2**31:  # the column is a 32-bit integer
        raise NotFound("erasure", str(erasure_id))
    found = _erasure_records(hub, hub.store.list_erasures(1, erasure_id=int(erasure_id)))
    if not found:
        raise NotFound("erasure", str(erasure_id))
    return found[0]


def wait_for_erasure(hub: Hub, erasure_id: int, *, timeout: float | None = None, poll: float = 1.0,
                     on_change: Callable[[DestinationErasureRecord], None] | None = None,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> ErasureRecord:
    """The erasure once every queued erasure of it has ended (or when ``timeout`` seconds have
    passed: then some have not); ``on_change`` sees each queued erasure whenever its status or
    attempt count changes. The running hub does the work; this only watches the store."""
    deadline = None if timeout is None else clock() + timeout
    seen: dict[str, tuple[str, int]] = {}
    while True:
        record = get_erasure(hub, erasure_id)
        for job in record.queued:
            if seen.get(job.destination) != (job.status, job.attempts):
                seen[job.destination] = (job.status, job.attempts)
                if on_change is not None:
                    on_change(job)
        if record.ended or (deadline is not None and clock() >= deadline):
            return record
        sleep(poll if deadline is None else max(0.0, min(poll, deadline - clock())))


def _erasure_records(hub: Hub, rows: list[dict]) -> list[ErasureRecord]:
    queued = hub.store.destination_erasures(row["id"] for row in rows)
    paused = hub.store.paused()
    return [ErasureRecord(row["id"], row["erased_at"], row["actor"],
                          {table: row[table] for table in ("reports", "deliveries", "attempts")},
                          row["destinations"], tuple(_queued(hub, job, paused) for job in queued[row["id"]]))
            for row in rows]


def _queued(hub: Hub, job, paused: dict[str, datetime]) -> DestinationErasureRecord:
    held = None
    if job.status not in (SUCCEEDED, DEAD):
        if job.destination not in hub.destinations:
            held = "the destination is not configured (any more); add it back and the erasure runs"
        elif job.destination in paused:
            held = "the destination is paused; the erasure runs when it is resumed"
    attempts = tuple(AttemptRecord(a["number"], datetime.fromisoformat(a["started_at"]), a["duration_ms"],
                                   a["outcome"], a["http_status"], a["error"]) for a in job.attempt_log)
    return DestinationErasureRecord(job.destination, job.status, job.attempts,
                                    None if job.status in (SUCCEEDED, DEAD) else job.next_attempt_at,
                                    job.last_error, job.result, attempts, job.updated_at, held)


def export_customer(hub: Hub, number: str) -> CustomerExport:
    """Every report of one caller (oldest first), each with its deliveries and their attempts."""
    e164 = customer_number(hub, number)
    return CustomerExport(e164, utcnow(), [get_report(hub, i) for i in hub.store.customer_report_ids(e164)])


def pause_destination(hub: Hub, destination: str) -> DestinationState:
    """Attempt nothing more for ``destination`` until it is resumed (every process, every node);
    new reports still queue for it. An attempt already under way finishes. Pausing twice is one pause."""
    _require_configured(hub, destination)
    paused_at = hub.store.pause(destination)
    return DestinationState(destination, hub.config.destinations[destination].type, paused_at)


def resume_destination(hub: Hub, destination: str) -> DestinationState:
    """Deliver ``destination``'s waiting deliveries again, each with the attempts it had left."""
    _require_configured(hub, destination)
    if hub.store.resume(destination):
        hub.dispatcher.wake()
    return DestinationState(destination, hub.config.destinations[destination].type, None)


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
