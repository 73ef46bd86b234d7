"""The store: reports, their deliveries and every attempt (SQLAlchemy Core; SQLite or PostgreSQL).

Knows nothing of Flask or HTTP. The delivery row is the record of truth: a delivery is
``pending`` (due at ``next_attempt_at``), ``running`` (leased to a worker until
``lease_until``), ``succeeded`` or ``dead``. A lease that runs out makes the row claimable
again, which is how a killed worker's delivery is picked up after a restart.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import threading
import uuid
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .files import open_private
from .records import DeliveryRecord
from .report import CallReport

PENDING, RUNNING, SUCCEEDED, DEAD = "pending", "running", "succeeded", "dead"
STATUSES = (PENDING, RUNNING, SUCCEEDED, DEAD)


def order_key(number: str) -> str:
    """What orders one customer's deliveries: a digest of the number, so a delivery row holds no
    personal data (the report row is the one that does, and erasure finds it there)."""
    return hashlib.sha256(number.encode()).hexdigest()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.TypeDecorator):
    """Stored as naive UTC (sortable text on SQLite), returned as aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


metadata = sa.MetaData()

reports = sa.Table(
    "reports", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("source", sa.String(50), nullable=False),
    sa.Column("event", sa.String(50), nullable=False),
    sa.Column("call_id", sa.String(200), nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False, index=True),
    sa.Column("customer_number", sa.String(32), index=True),
    sa.Column("data", sa.Text, nullable=False),
    # What tells apart events of one type for one call: a status-update's call status, a
    # tool-calls event's tool call ids (the source says); empty for the rest.
    sa.Column("event_key", sa.String(255), nullable=False, server_default=""),
    sa.UniqueConstraint("source", "call_id", "event", "event_key", name="uq_reports_identity"),
)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("report_id", sa.String(36), sa.ForeignKey("reports.id"), nullable=False, index=True),
    sa.Column("destination", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("lease_owner", sa.String(100)),
    sa.Column("state", sa.Text, nullable=False, default="{}"),
    sa.Column("last_error", sa.Text),
    sa.Column("result", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Per-customer order: deliveries to one destination with the same key run one at a time,
    # oldest ``order_at`` (the call's time) first; None for a web call or ``ordering = "none"``.
    sa.Column("order_key", sa.String(100)),
    sa.Column("order_at", UTCDateTime),
    sa.UniqueConstraint("report_id", "destination", name="uq_deliveries_report_destination"),
    sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_order", "destination", "order_key"),
)

attempts = sa.Table(
    "attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(36), sa.ForeignKey("deliveries.id"), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # succeeded | retry | dead
    sa.Column("http_status", sa.Integer),
    sa.Column("error", sa.Text),
)

# A job that runs once across every process and node (the scheduled reconcile): whoever holds
# the lease runs it; the last run's outcome is kept for the dashboard and /metrics (hub.jobs).
scheduled_jobs = sa.Table(
    "scheduled_jobs", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("lease_owner", sa.String(100)),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("last_started_at", UTCDateTime),
    sa.Column("last_finished_at", UTCDateTime),
    sa.Column("last_result", sa.Text),  # JSON: the run's counts, or its error
)

# A record that one caller's data was erased: never the number, never any content (revision 0005).
erasures = sa.Table(
    "erasures", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("erased_at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(20), nullable=False),  # cli | api | dashboard
    sa.Column("reports", sa.Integer, nullable=False),
    sa.Column("deliveries", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("destinations", sa.Text, nullable=False, server_default="{}"),  # JSON {name: outcome}
)

# One caller's erasure at one destination, queued by ``forget --destinations`` and run by the hub
# like a delivery (hub.erasures, revision 0008). ``subject`` is the caller's E.164 number while the
# row is pending or running, and NULL from the moment it ends (succeeded or dead).
destination_erasures = sa.Table(
    "destination_erasures", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("erasure_id", sa.Integer, sa.ForeignKey("erasures.id"), nullable=False, index=True),
    sa.Column("destination", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(32)),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(100)),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("result", sa.Text),
    sa.Column("attempt_log", sa.Text, nullable=False, server_default="[]"),  # JSON [{number, started_at, ...}]
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_destination_erasures_due", "status", "next_attempt_at"),
)

# Destinations an operator paused: their deliveries wait, unclaimed, until resumed (survives restarts).
paused_destinations = sa.Table(
    "paused_destinations", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("paused_at", UTCDateTime, nullable=False),
)

# A dashboard login: the SHA-256 of the session id its cookie carries, and when it ends for good.
# Logging out deletes the row, so a copied cookie is worth nothing afterwards (hub.sessions).
admin_sessions = sa.Table(
    "admin_sessions", metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# What the hub answered to an event the platform acts on (assistant-request, tool-calls), and how
# long the answer took from the request's arrival (revision 0007). Deleted with its report.
answers = sa.Table(
    "answers", metadata,
    sa.Column("report_id", sa.String(36), sa.ForeignKey("reports.id"), primary_key=True),
    sa.Column("event", sa.String(50), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # answered | fallback | error
    sa.Column("answer", sa.Text, nullable=False),  # the JSON sent back
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("answered_at", UTCDateTime, nullable=False),
    sa.Column("detail", sa.Text),  # why a fallback (the lookup timed out, ...), in a line
)

# Built once: executing the same statement object reuses SQLAlchemy's compiled form (the ack path).
_INSERT_REPORT = reports.insert()
_INSERT_DELIVERY = deliveries.insert()


@dataclass(frozen=True)
class Delivery:
    id: str
    report_id: str
    destination: str
    status: str
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    lease_owner: str | None
    state: dict[str, Any]
    last_error: str | None
    result: str | None
    created_at: datetime
    updated_at: datetime
    order_key: str | None = None
    order_at: datetime | None = None

    @classmethod
    def from_row(cls, row) -> "Delivery":
        values = dict(row._mapping)
        values["state"] = json.loads(values["state"] or "{}")
        return cls(**values)

    def record(self) -> DeliveryRecord:
        """The public view of this row (no lease owner; no next attempt once dead)."""
        return DeliveryRecord(
            id=self.id, report_id=self.report_id, destination=self.destination, status=self.status,
            attempts=self.attempts, next_attempt_at=None if self.status == DEAD else self.next_attempt_at,
            lease_until=self.lease_until, last_error=self.last_error, result=self.result, state=self.state,
            created_at=self.created_at, updated_at=self.updated_at)


@dataclass(frozen=True)
class DestinationErasure:
    """One row of ``destination_erasures``; ``attempt_log`` decoded (one dict per attempt)."""

    id: int
    erasure_id: int
    destination: str
    status: str
    subject: str | None
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    result: str | None
    attempt_log: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row) -> "DestinationErasure":
        values = dict(row._mapping)
        values["attempt_log"] = json.loads(values["attempt_log"] or "[]")
        return cls(**values)


@dataclass(frozen=True)
class Answer:
    """One stored answer (``answers`` row)."""

    report_id: str
    event: str
    outcome: str
    answer: Any
    latency_ms: float
    answered_at: datetime
    detail: str | None = None

    @classmethod
    def from_row(cls, row) -> "Answer":
        values = dict(row._mapping)
        values["answer"] = json.loads(values["answer"])
        return cls(**values)


@dataclass(frozen=True)
class Accepted:
    report_id: str
    duplicate: bool
    deliveries: list[tuple[str, str]]  # (destination, status)
    delivery_ids: tuple[str, ...] = ()  # of the new rows, in the order of ``deliveries``


@dataclass(frozen=True)
class Attempt:
    """One try, as ``Store.finish`` records it."""

    started_at: datetime
    duration_ms: float
    outcome: str
    http_status: int | None = None
    error: str | None = None


def _sqlite_pragmas(synchronous: str, foreign_keys: bool):
    def on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    return on_connect


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite store URL; None for PostgreSQL and for an in-memory database."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def without(report: CallReport, parts: tuple[str, ...]) -> CallReport:
    """``report`` with ``parts`` ("messages", "raw") emptied and listed in ``not_kept``."""
    if not parts:
        return report
    return dataclasses.replace(report, messages=[] if "messages" in parts else report.messages,
                               raw={} if "raw" in parts else report.raw,
                               not_kept=tuple(sorted(set(report.not_kept) | set(parts))))


def make_engine(url: str, *, sqlite_synchronous: str = "NORMAL", foreign_keys: bool = True) -> Engine:
    """An engine for ``url``. A SQLite file is created readable by its owner only; SQLite gives
    its -wal and -shm files the same mode."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None and not os.path.exists(path):
            open_private(path).close()
        engine = sa.create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas(sqlite_synchronous, foreign_keys))
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


_STORES: "weakref.WeakSet[Store]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._after_fork()


# gunicorn forks its workers from a master that built the app (``serve`` preloads it)
os.register_at_fork(after_in_child=_after_fork_in_child)


class Store:
    """Reads and writes rows; never creates or alters a table (``hub.schema`` does, by migrations)."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL"):
        self.url = url
        self.engine = make_engine(url, sqlite_synchronous=sqlite_synchronous)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._thread_lock = threading.Lock()
        self._lock_file = None
        path = sqlite_path(url)
        self._lock_path = None if path is None else f"{path}.lock"
        if self._lock_path is not None:
            self._lock_file = open_private(self._lock_path)  # held for the store's life
        self._build_statements()
        _STORES.add(self)

    def _after_fork(self) -> None:
        """In a forked child: connections and a lock file of its own. The parent's pooled
        connections stay the parent's (SQLAlchemy's ``dispose(close=False)``), and an inherited
        lock file would share the parent's open file description, which is what ``flock``
        locks belong to: parent and child would not exclude each other."""
        self.engine.dispose(close=False)
        self._thread_lock = threading.Lock()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = open_private(self._lock_path)

    def close(self) -> None:
        self.engine.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    @contextmanager
    def write(self):
        """A write transaction. On SQLite, writers queue on a lock file first.

        SQLite lets one writer in at a time and makes the others poll with sleeps of 1, 2,
        5, 10... ms; queueing on an flock instead hands the write lock over the moment it is
        free, which is what keeps the ack path's latency flat with several gunicorn workers
        and the dispatcher writing at once (bench/README.md). PostgreSQL needs no such help.
        """
        if self._lock_file is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._thread_lock:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                with self.engine.begin() as conn:
                    yield conn
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # --- the ack path ------------------------------------------------------------------

    def insert_report(self, report: CallReport, destinations: Iterable[str], *, event_key: str = "",
                      ordered: Iterable[str] = (), states: dict[str, dict] | None = None) -> Accepted:
        """Store the report and one pending delivery per destination in ONE transaction.

        Deliveries to the ``ordered`` destinations carry ``order_key(customer number)`` (a web
        call has none); ``states`` gives a delivery its first ``ctx.state`` (a follow-up's). The same (source, call id, event, event key) a second time
        changes nothing and answers with the first report's id.
        """
        now = utcnow()
        names = list(destinations)
        by_customer = set(ordered) if report.customer.number else set()
        rows = [{"id": str(uuid.uuid4()), "report_id": report.id, "destination": name, "status": PENDING,
                 "attempts": 0, "next_attempt_at": now, "state": json.dumps((states or {}).get(name, {})), "created_at": now, "updated_at": now,
                 "order_key": order_key(report.customer.number) if name in by_customer else None,
                 "order_at": report.occurred_at if name in by_customer else None}
                for name in names]
        values = {"id": report.id, "source": report.source, "event": report.event, "call_id": report.call.id,
                  "occurred_at": report.occurred_at, "received_at": report.received_at,
                  "customer_number": report.customer.number, "data": report.to_json(), "event_key": event_key}
        try:  # everything computed before the transaction: SQLite's write lock is held briefly
            with self.write() as conn:
                conn.execute(_INSERT_REPORT, values)
                if rows:
                    conn.execute(_INSERT_DELIVERY, rows)
        except IntegrityError:
            with self.engine.connect() as conn:
                existing = conn.execute(sa.select(reports.c.id).where(
                    reports.c.source == report.source, reports.c.call_id == report.call.id,
                    reports.c.event == report.event, reports.c.event_key == event_key)).scalar()
            if existing is None:  # not a duplicate after all: let the caller see the real error
                raise
            return Accepted(existing, True, [])
        return Accepted(report.id, False, [(name, PENDING) for name in names], tuple(row["id"] for row in rows))

    # --- answers (assistant-request, tool-calls) ------------------------------------------

    def record_answer(self, answer: Answer) -> bool:
        """Keep what was answered to a report; False if it already had an answer (kept as it was)."""
        values = {**dataclasses.asdict(answer), "answer": json.dumps(answer.answer, separators=(",", ":"))}
        try:
            with self.write() as conn:
                conn.execute(answers.insert().values(**values))
        except IntegrityError:
            return False
        return True

    def get_answer(self, report_id: str) -> Answer | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(answers).where(answers.c.report_id == report_id)).first()
        return Answer.from_row(row) if row else None

    def answers_of(self, report_ids: Iterable[str]) -> dict[str, Answer]:
        ids = list(report_ids)
        if not ids:
            return {}
        with self.engine.connect() as conn:
            return {row.report_id: Answer.from_row(row)
                    for row in conn.execute(sa.select(answers).where(answers.c.report_id.in_(ids)))}

    def call_reports(self, source: str, call_id: str, limit: int = 500) -> list[CallReport]:
        """Every stored event of one call, in the order they happened (the report page's story)."""
        query = (sa.select(reports.c.data).where(reports.c.source == source, reports.c.call_id == call_id)
                 .order_by(reports.c.occurred_at, reports.c.received_at, reports.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [CallReport.from_json(data) for data in conn.execute(query).scalars()]

    def last_calls(self, number: str, limit: int = 5) -> list[CallReport]:
        """The end-of-call reports of the caller ``number`` (E.164), most recent call first."""
        query = (sa.select(reports.c.data).where(reports.c.customer_number == number,
                                                 reports.c.event == "end-of-call-report")
                 .order_by(reports.c.occurred_at.desc(), reports.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [CallReport.from_json(data) for data in conn.execute(query).scalars()]

    def received_call_ids(self, source: str, event: str, call_ids: Iterable[str]) -> set[str]:
        """Which of ``call_ids`` already have a ``source`` report of type ``event``."""
        wanted = list(call_ids)
        if not wanted:
            return set()
        r = reports.c
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(r.call_id).where(
                r.source == source, r.event == event, r.call_id.in_(wanted))).scalars())

    # --- the dispatcher's side -------------------------------------------------------

    def _build_statements(self) -> None:
        """The dispatcher's statements, built once with bind parameters.

        Rebuilding them per call cost more CPU than SQLite itself (bench/README.md); the
        same statement object executed again reuses SQLAlchemy's compiled form.
        """
        d = deliveries.c
        now = sa.bindparam("b_now", type_=UTCDateTime)
        due = sa.or_(sa.and_(d.status == PENDING, d.next_attempt_at <= now),
                     sa.and_(d.status == RUNNING, d.lease_until < now))
        not_paused = d.destination.not_in(sa.select(paused_destinations.c.name).scalar_subquery())
        # an earlier delivery of the same destination and order key that is not finished yet
        earlier = deliveries.alias("earlier")
        e = earlier.c
        waits_its_turn = sa.exists().where(
            e.destination == d.destination, e.order_key == d.order_key, e.status.in_([PENDING, RUNNING]),
            sa.tuple_(e.order_at, e.created_at, e.id) < sa.tuple_(d.order_at, d.created_at, d.id))
        due = sa.and_(due, not_paused, sa.or_(d.order_key.is_(None), ~waits_its_turn))
        self._has_due = sa.select(d.id).where(due).limit(1)
        self._due_destinations = sa.select(d.destination).where(due).distinct()

        def claim(pick):
            pick = pick.order_by(d.next_attempt_at).limit(sa.bindparam("b_limit"))
            if self.is_postgres:
                pick = pick.with_for_update(skip_locked=True)
            return (deliveries.update()
                    .where(d.id.in_(pick.scalar_subquery()))
                    .values(status=RUNNING, lease_owner=sa.bindparam("b_owner"),
                            lease_until=sa.bindparam("b_lease_until", type_=UTCDateTime),
                            attempts=d.attempts + 1, updated_at=now)
                    .returning(*deliveries.c))

        self._claim_any = claim(sa.select(d.id).where(due))
        self._claim_one = claim(sa.select(d.id).where(due, d.id == sa.bindparam("b_id")))
        self._claim_for = claim(sa.select(d.id).where(due, d.destination == sa.bindparam("b_destination")))
        self._finish_statement = (
            deliveries.update()
            .where(d.id == sa.bindparam("b_id"), d.lease_owner == sa.bindparam("b_owner"), d.status == RUNNING,
                   d.attempts == sa.bindparam("b_attempts"),
                   d.lease_until == sa.bindparam("b_lease_until", type_=UTCDateTime))
            .values(status=sa.bindparam("b_status"), state=sa.bindparam("b_state"), lease_owner=None,
                    lease_until=None, next_attempt_at=sa.bindparam("b_next", type_=UTCDateTime), updated_at=now,
                    last_error=sa.bindparam("b_error"),
                    result=sa.func.coalesce(sa.bindparam("b_result", type_=sa.Text), d.result)))
        self._insert_attempt = attempts.insert()

    def has_due(self, now: datetime | None = None) -> bool:
        """A read-only look, so idle workers poll without taking SQLite's write lock."""
        with self.engine.connect() as conn:
            return conn.execute(self._has_due, {"b_now": now or utcnow()}).first() is not None

    def due_destinations(self, now: datetime | None = None) -> set[str]:
        """The destinations with a delivery that could be claimed now (a read, like ``has_due``)."""
        with self.engine.connect() as conn:
            return set(conn.execute(self._due_destinations, {"b_now": now or utcnow()}).scalars())

    def due_ids(self, limit: int, *, overdue_seconds: float = 0.0, now: datetime | None = None) -> list[str]:
        """Ids of deliveries that should be running and may have no one on them, oldest first:
        pending and due for at least ``overdue_seconds``, or leased and the lease run out.

        A read, no lock and no lease: the Celery backend's sweeper sends these to the workers
        again, and a worker's claim decides (a row that is not due by then is left alone).
        """
        now = now or utcnow()
        d = deliveries.c
        query = (sa.select(d.id)
                 .where(sa.or_(sa.and_(d.status == PENDING,
                                       d.next_attempt_at <= now - timedelta(seconds=overdue_seconds)),
                               sa.and_(d.status == RUNNING, d.lease_until < now)))
                 .order_by(d.next_attempt_at).limit(limit))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def claim_batch(self, owner: str, lease_seconds: float, limit: int, *,
                    delivery_id: str | None = None, destination: str | None = None) -> list[Delivery]:
        """Atomically lease up to ``limit`` due deliveries (or the given one, if due; or only
        ``destination``'s) to ``owner``."""
        with self.write() as conn:
            return self._lease(conn, owner, lease_seconds, limit, delivery_id=delivery_id, destination=destination)

    def _lease(self, conn, owner: str, lease_seconds: float, limit: int, *,
               delivery_id: str | None = None, destination: str | None = None) -> list[Delivery]:
        now = utcnow()
        params = {"b_now": now, "b_limit": limit, "b_owner": owner,
                  "b_lease_until": now + timedelta(seconds=lease_seconds)}
        statement = self._claim_any
        if delivery_id is not None:
            params["b_id"], statement = delivery_id, self._claim_one
        elif destination is not None:
            params["b_destination"], statement = destination, self._claim_for
        rows = conn.execute(statement, params).all()
        return sorted((Delivery.from_row(row) for row in rows), key=lambda d: d.next_attempt_at)

    def claim(self, owner: str, lease_seconds: float, *, delivery_id: str | None = None) -> Delivery | None:
        """Atomically lease one due delivery (or the given one, if due) to ``owner``."""
        claimed = self.claim_batch(owner, lease_seconds, 1, delivery_id=delivery_id)
        return claimed[0] if claimed else None

    def finish(self, delivery: Delivery, owner: str, *, status: str, state: dict, attempt: Attempt,
               next_attempt_at: datetime | None = None, result: str | None = None) -> bool:
        """Record an attempt and the delivery's new status, if ``owner`` still holds the lease.

        Returns False when the lease was lost (expired and taken by another worker, or given
        back by ``release``): the other worker's outcome is the one that counts. The claim's
        ``attempts`` and ``lease_until`` fence the lease, because ``owner`` alone is shared by
        every thread of one dispatcher: a thread whose lease ran out and was re-claimed by a
        sibling thread must not overwrite the sibling's outcome.
        """
        with self.write() as conn:
            return self._finish(conn, delivery, owner, status=status, state=state, attempt=attempt,
                                next_attempt_at=next_attempt_at, result=result)

    def finish_and_claim(self, delivery: Delivery, owner: str, lease_seconds: float, *, status: str, state: dict,
                         attempt: Attempt, next_attempt_at: datetime | None = None,
                         result: str | None = None) -> tuple[bool, Delivery | None]:
        """``finish``, and in the same transaction lease ``owner`` the next due delivery of the same
        destination (None if there is none): a worker that goes on with its destination writes
        once per delivery instead of twice, and waits for no claim thread in between."""
        with self.write() as conn:
            kept = self._finish(conn, delivery, owner, status=status, state=state, attempt=attempt,
                                next_attempt_at=next_attempt_at, result=result)
            following = self._lease(conn, owner, lease_seconds, 1, destination=delivery.destination)
        return kept, (following[0] if following else None)

    def _finish(self, conn, delivery: Delivery, owner: str, *, status: str, state: dict, attempt: Attempt,
                next_attempt_at: datetime | None, result: str | None) -> bool:
        now = utcnow()
        updated = conn.execute(self._finish_statement, {
            "b_id": delivery.id, "b_owner": owner, "b_attempts": delivery.attempts,
            "b_lease_until": delivery.lease_until, "b_status": status, "b_state": json.dumps(state),
            "b_next": next_attempt_at or now, "b_now": now, "b_error": attempt.error, "b_result": result,
        }).rowcount
        if updated:
            conn.execute(self._insert_attempt, {
                "delivery_id": delivery.id, "number": delivery.attempts, "started_at": attempt.started_at,
                "duration_ms": attempt.duration_ms, "outcome": attempt.outcome,
                "http_status": attempt.http_status, "error": attempt.error})
        return bool(updated)

    def earlier_state(self, delivery: Delivery) -> dict[str, Any]:
        """The saved state of the last delivery that succeeded before ``delivery`` in its order
        (same destination and order key); ``{}`` for a delivery with no order key or no such one.

        The claim has let ``delivery`` run only once every earlier one finished, so this is what
        the customer's previous call created (its contact), even while the CRM's search does
        not show it yet.
        """
        if delivery.order_key is None:
            return {}
        d = deliveries.c
        query = (sa.select(d.state)
                 .where(d.destination == delivery.destination, d.order_key == delivery.order_key,
                        d.status == SUCCEEDED,
                        sa.tuple_(d.order_at, d.created_at, d.id)
                        < sa.tuple_(sa.literal(delivery.order_at, UTCDateTime),
                                    sa.literal(delivery.created_at, UTCDateTime), sa.literal(delivery.id)))
                 .order_by(d.order_at.desc(), d.created_at.desc(), d.id.desc()).limit(1))
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
        return json.loads(found) if found else {}

    def give_back(self, delivery: Delivery, owner: str, *, state: dict, next_attempt_at: datetime,
                  reason: str) -> bool:
        """The claimed ``delivery`` was not attempted after all (``Deferred``): pending again at
        ``next_attempt_at`` with its ``state`` kept and ``reason`` as its last error, the attempt
        not counted and none recorded. Fenced like ``finish``: False if the lease was lost."""
        d = deliveries.c
        now = utcnow()
        with self.write() as conn:
            return bool(conn.execute(
                deliveries.update()
                .where(d.id == delivery.id, d.lease_owner == owner, d.status == RUNNING,
                       d.attempts == delivery.attempts, d.lease_until == delivery.lease_until)
                .values(status=PENDING, lease_owner=None, lease_until=None, next_attempt_at=next_attempt_at,
                        attempts=d.attempts - 1, state=json.dumps(state), last_error=reason, updated_at=now)
            ).rowcount)

    def release(self, owner: str) -> int:
        """Give back every lease of ``owner`` (a clean shutdown): the attempt never happened."""
        now = utcnow()
        with self.write() as conn:
            return conn.execute(
                deliveries.update()
                .where(deliveries.c.lease_owner == owner, deliveries.c.status == RUNNING)
                .values(status=PENDING, lease_owner=None, lease_until=None, next_attempt_at=now,
                        attempts=deliveries.c.attempts - 1, updated_at=now)
            ).rowcount

    # --- paused destinations -----------------------------------------------------------

    def pause(self, destination: str) -> datetime:
        """Stop claiming ``destination``'s deliveries; returns when it was paused (kept if it already was)."""
        try:
            with self.write() as conn:
                conn.execute(paused_destinations.insert().values(name=destination, paused_at=utcnow()))
        except IntegrityError:  # paused already (or by another node at the same moment)
            pass
        return self.paused()[destination]

    def resume(self, destination: str) -> bool:
        """Claim ``destination``'s deliveries again; False if it was not paused."""
        with self.write() as conn:
            return bool(conn.execute(paused_destinations.delete().where(
                paused_destinations.c.name == destination)).rowcount)

    def paused(self) -> dict[str, datetime]:
        """``{destination: paused_at}`` of every paused destination."""
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(paused_destinations.c.name, paused_destinations.c.paused_at)).all())

    # --- replay --------------------------------------------------------------------

    def requeue(self, *, report_id: str | None = None, destination: str | None = None,
                dead_only: bool = False, create_missing: bool = False) -> list[str]:
        """Make deliveries due now with a fresh attempt budget; their state is kept, so a
        replay updates what exists instead of creating it again. Returns the delivery ids."""
        now = utcnow()
        d = deliveries.c
        conditions = [d.status != RUNNING]
        if report_id:
            conditions.append(d.report_id == report_id)
        if destination:
            conditions.append(d.destination == destination)
        if dead_only:
            conditions.append(d.status == DEAD)
        with self.write() as conn:
            # One UPDATE ... RETURNING, not a SELECT then an UPDATE by id: in between, a worker
            # could claim one of the rows, and resetting it under the worker would deliver it twice.
            ids = list(conn.execute(deliveries.update().where(*conditions).values(
                status=PENDING, attempts=0, next_attempt_at=now, updated_at=now).returning(d.id)).scalars())
            if create_missing and report_id and destination and not ids:
                exists = conn.execute(sa.select(d.id).where(d.report_id == report_id,
                                                            d.destination == destination)).first()
                if not exists:
                    new_id = str(uuid.uuid4())
                    conn.execute(deliveries.insert().values(
                        id=new_id, report_id=report_id, destination=destination, status=PENDING, attempts=0,
                        next_attempt_at=now, state="{}", created_at=now, updated_at=now))
                    ids.append(new_id)
        return ids

    # --- erasure and retention -------------------------------------------------------

    def customer_report_ids(self, number: str, limit: int | None = None) -> list[str]:
        """The reports (of any event) of the caller ``number`` (E.164), oldest first."""
        query = (sa.select(reports.c.id).where(reports.c.customer_number == number)
                 .order_by(reports.c.occurred_at, reports.c.id).limit(limit))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def expired_report_ids(self, before: datetime, limit: int | None) -> list[str]:
        """Up to ``limit`` reports whose call happened before ``before``, oldest first, leaving out
        those with a delivery still pending or running (they are kept until it ends)."""
        d = deliveries.c
        unfinished = sa.select(d.report_id).where(d.status.in_([PENDING, RUNNING]))
        query = (sa.select(reports.c.id).where(reports.c.occurred_at < before, reports.c.id.not_in(unfinished))
                 .order_by(reports.c.occurred_at).limit(limit))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def count_rows(self, report_ids: Iterable[str]) -> dict[str, int]:
        """What ``delete_reports(report_ids)`` would delete (a dry run)."""
        ids = list(report_ids)
        delivery_ids = sa.select(deliveries.c.id).where(deliveries.c.report_id.in_(ids))
        with self.engine.connect() as conn:
            return {"reports": len(ids),
                    "deliveries": conn.execute(sa.select(sa.func.count()).select_from(deliveries).where(
                        deliveries.c.report_id.in_(ids))).scalar(),
                    "attempts": conn.execute(sa.select(sa.func.count()).select_from(attempts).where(
                        attempts.c.delivery_id.in_(delivery_ids))).scalar()}

    def delete_reports(self, report_ids: Iterable[str]) -> dict[str, int]:
        """Delete the reports with their answers, deliveries (and so their state) and attempts, in one
        transaction; ``{"reports": n, "deliveries": n, "attempts": n}``.

        A delivery being attempted goes too: its worker's ``finish`` then finds no row, so the
        attempt is not recorded and the delivery never comes back.
        """
        ids = list(report_ids)
        counts = {"reports": 0, "deliveries": 0, "attempts": 0}
        if not ids:
            return counts
        delivery_ids = sa.select(deliveries.c.id).where(deliveries.c.report_id.in_(ids))
        with self.write() as conn:
            counts["attempts"] = conn.execute(attempts.delete().where(attempts.c.delivery_id.in_(delivery_ids))).rowcount
            conn.execute(answers.delete().where(answers.c.report_id.in_(ids)))  # part of its report
            counts["deliveries"] = conn.execute(deliveries.delete().where(deliveries.c.report_id.in_(ids))).rowcount
            counts["reports"] = conn.execute(reports.delete().where(reports.c.id.in_(ids))).rowcount
        return counts

    def drop_unkept(self, report_id: str, parts: tuple[str, ...]) -> bool:
        """Remove ``parts`` ("messages", "raw") from the stored report once none of its
        deliveries is pending or running; True when it did (``[privacy]``)."""
        d = deliveries.c
        with self.write() as conn:
            busy = conn.execute(sa.select(d.id).where(d.report_id == report_id,
                                                      d.status.in_([PENDING, RUNNING])).limit(1)).first()
            data = None if busy else conn.execute(sa.select(reports.c.data).where(reports.c.id == report_id)).scalar()
            if data is None:
                return False
            kept = without(CallReport.from_json(data), parts)
            conn.execute(reports.update().where(reports.c.id == report_id).values(data=kept.to_json()))
        return True

    def record_erasure(self, actor: str, counts: dict[str, int], destinations: dict[str, str], *,
                       subject: str | None = None, queue: Iterable[str] = ()) -> int:
        """Keep the record of one erasure and, in the same transaction, queue its erasure at each
        destination in ``queue`` for the caller ``subject`` (E.164); the record's id."""
        now = utcnow()
        names = list(queue)
        if names and not subject:
            raise ValueError("queued destination erasures need the number they erase")
        with self.write() as conn:
            erasure_id = conn.execute(erasures.insert().values(
                erased_at=now, actor=actor, destinations=json.dumps(destinations, sort_keys=True),
                **counts).returning(erasures.c.id)).scalar_one()
            if names:
                conn.execute(destination_erasures.insert(), [
                    {"erasure_id": erasure_id, "destination": name, "status": PENDING, "subject": subject,
                     "attempts": 0, "next_attempt_at": now, "attempt_log": "[]", "created_at": now,
                     "updated_at": now} for name in names])
        return erasure_id

    def list_erasures(self, limit: int = 100, *, erasure_id: int | None = None) -> list[dict[str, Any]]:
        """The erasure records, newest first (or the one ``erasure_id``)."""
        query = sa.select(erasures).order_by(erasures.c.id.desc()).limit(limit)
        if erasure_id is not None:
            query = query.where(erasures.c.id == erasure_id)
        with self.engine.connect() as conn:
            return [{**row._mapping, "destinations": json.loads(row.destinations)} for row in conn.execute(query)]

    def destination_erasures(self, erasure_ids: Iterable[int]) -> dict[int, list[DestinationErasure]]:
        """``{erasure_id: [its queued erasures by destination]}`` in one query."""
        ids = list(erasure_ids)
        found: dict[int, list[DestinationErasure]] = {i: [] for i in ids}
        if not ids:
            return found
        e = destination_erasures.c
        query = sa.select(destination_erasures).where(e.erasure_id.in_(ids)).order_by(e.erasure_id, e.destination)
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                found[row.erasure_id].append(DestinationErasure.from_row(row))
        return found

    def _due_erasures(self, now: datetime, destinations: list[str]):
        """Queued erasures that may be attempted now: pending and due, or leased and the lease run
        out (a killed process), to one of ``destinations`` and not to a paused one."""
        e = destination_erasures.c
        return sa.select(e.id).where(
            sa.or_(sa.and_(e.status == PENDING, e.next_attempt_at <= now),
                   sa.and_(e.status == RUNNING, e.lease_until < now)),
            e.destination.in_(destinations),
            e.destination.not_in(sa.select(paused_destinations.c.name).scalar_subquery()))

    def has_due_erasures(self, destinations: Iterable[str], now: datetime | None = None) -> bool:
        """A read-only look, so an idle hub polls without taking SQLite's write lock."""
        with self.engine.connect() as conn:
            return conn.execute(self._due_erasures(now or utcnow(), list(destinations)).limit(1)).first() is not None

    def claim_erasures(self, owner: str, lease_seconds: float, limit: int,
                       destinations: Iterable[str]) -> list[DestinationErasure]:
        """Atomically lease up to ``limit`` due erasures to ``owner`` (each attempt counted), as
        ``claim_batch`` does deliveries: one process in all gets each row."""
        now = utcnow()
        e = destination_erasures.c
        pick = self._due_erasures(now, list(destinations)).order_by(e.next_attempt_at).limit(limit)
        if self.is_postgres:
            pick = pick.with_for_update(skip_locked=True)
        with self.write() as conn:
            rows = conn.execute(destination_erasures.update().where(e.id.in_(pick.scalar_subquery())).values(
                status=RUNNING, lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds),
                attempts=e.attempts + 1, updated_at=now).returning(*destination_erasures.c)).all()
        return sorted((DestinationErasure.from_row(row) for row in rows), key=lambda j: j.next_attempt_at)

    def finish_erasure(self, job: DestinationErasure, owner: str, *, status: str, attempt: dict[str, Any],
                       next_attempt_at: datetime | None = None, result: str | None = None) -> bool:
        """Record one attempt of ``job`` if ``owner`` still holds its lease (fenced like ``finish``).
        An outcome that ends the job (succeeded, dead) drops the number it held in the same UPDATE."""
        now = utcnow()
        e = destination_erasures.c
        ended = status in (SUCCEEDED, DEAD)
        with self.write() as conn:
            return bool(conn.execute(destination_erasures.update().where(
                e.id == job.id, e.lease_owner == owner, e.status == RUNNING, e.attempts == job.attempts,
                e.lease_until == job.lease_until,
            ).values(status=status, lease_owner=None, lease_until=None, next_attempt_at=next_attempt_at or now,
                     last_error=attempt.get("error"), result=result, updated_at=now,
                     subject=None if ended else e.subject,
                     attempt_log=json.dumps([*job.attempt_log, attempt], default=str))).rowcount)

    # --- reading -------------------------------------------------------------------

    def get_report(self, report_id: str) -> CallReport | None:
        return self.get_reports([report_id]).get(report_id)

    def get_reports(self, report_ids: Iterable[str]) -> dict[str, CallReport]:
        """``{id: report}`` for the ids that exist, in one query."""
        ids = list(dict.fromkeys(report_ids))
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(reports.c.id, reports.c.data).where(reports.c.id.in_(ids)))
            return {report_id: CallReport.from_json(data) for report_id, data in rows}

    def list_reports(self, *, since: datetime | None = None, until: datetime | None = None,
                     customer: str | None = None, limit: int | None = 100, offset: int = 0) -> list[CallReport]:
        query = sa.select(reports.c.data).order_by(reports.c.received_at.desc(), reports.c.id)
        if since:
            query = query.where(reports.c.received_at >= since)
        if until:
            query = query.where(reports.c.received_at < until)
        if customer:
            query = query.where(reports.c.customer_number == customer)
        if limit:
            query = query.limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [CallReport.from_json(data) for data in conn.execute(query).scalars()]

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)).first()
        return Delivery.from_row(row) if row else None

    def list_deliveries(self, *, status: str | None = None, destination: str | None = None,
                        report_id: str | None = None, since: datetime | None = None,
                        limit: int | None = 100) -> list[Delivery]:
        query = sa.select(deliveries).order_by(deliveries.c.updated_at.desc(), deliveries.c.id)
        if status:
            query = query.where(deliveries.c.status == status)
        if destination:
            query = query.where(deliveries.c.destination == destination)
        if report_id:
            query = query.where(deliveries.c.report_id == report_id)
        if since:
            query = query.where(deliveries.c.updated_at >= since)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [Delivery.from_row(row) for row in conn.execute(query)]

    def list_attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        query = sa.select(attempts).where(attempts.c.delivery_id == delivery_id).order_by(attempts.c.number)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def status_counts(self, *, destination: str | None = None, since: datetime | None = None) -> dict[str, int]:
        """``{status: n}`` of the deliveries to ``destination`` updated since ``since`` (each optional)."""
        query = sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status)
        if destination:
            query = query.where(deliveries.c.destination == destination)
        if since:
            query = query.where(deliveries.c.updated_at >= since)
        with self.engine.connect() as conn:
            return dict(conn.execute(query).all())

    def delivery_counts(self) -> dict[tuple[str, str], int]:
        """``{(destination, status): n}``, for the queue-depth gauge and stats."""
        query = sa.select(deliveries.c.destination, deliveries.c.status, sa.func.count()).group_by(
            deliveries.c.destination, deliveries.c.status)
        with self.engine.connect() as conn:
            return {(dest, status): n for dest, status, n in conn.execute(query)}

    # --- reading for the admin API and dashboard (read-only) ---------------------------

    def deliveries_by_report(self, report_ids: Iterable[str]) -> dict[str, list[Delivery]]:
        """``{report_id: [Delivery, ...]}`` for many reports in one query (the dashboard's list)."""
        ids = list(report_ids)
        found: dict[str, list[Delivery]] = {report_id: [] for report_id in ids}
        if not ids:
            return found
        query = sa.select(deliveries).where(deliveries.c.report_id.in_(ids)).order_by(
            deliveries.c.report_id, deliveries.c.destination)
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                found[row.report_id].append(Delivery.from_row(row))
        return found

    def report_days(self, since: datetime, until: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Per UTC day (``"YYYY-MM-DD"``) of ``received_at``: ``{"reports": n, "average_sentiment": x}``.

        Reads only ``received_at`` and ``analysis.sentiment`` (extracted in SQL), never the whole
        report. A sentiment that is not a number (an analysis that broke its schema) is left out
        of the average; a day with no numeric sentiment averages to None. Days with no report
        are absent: the caller fills the gaps.
        """
        unreadable = []
        if self.is_postgres:
            as_json, path = sa.cast(reports.c.data, sa.JSON), sa.literal_column("'{analysis,sentiment}'")
            kind = sa.func.json_typeof(as_json.op("#>")(path))
            number = sa.cast(as_json.op("#>>")(path), sa.Numeric)  # a JSON integer may exceed a double
            # PostgreSQL's JSON operators fail the whole query on a \u0000 escape anywhere in the
            # document (text cannot hold NUL). Such a report still counts; its sentiment is left out.
            unreadable = [(sa.func.strpos(reports.c.data, "\\u0000") > 0, sa.null())]
        else:
            kind = sa.func.json_type(reports.c.data, "$.analysis.sentiment")
            number = sa.func.json_extract(reports.c.data, "$.analysis.sentiment")
        # Only JSON numbers count (a boolean or text means the analysis broke its schema).
        sentiment = sa.case(*unreadable, (kind.in_(["number", "integer", "real"]), number), else_=None)
        query = sa.select(reports.c.received_at, sentiment).where(reports.c.received_at >= since)
        if until:
            query = query.where(reports.c.received_at < until)
        counts: dict[str, int] = {}
        sums: dict[str, tuple[float, int]] = {}
        with self.engine.connect() as conn:
            for received_at, value in conn.execute(query):
                day = received_at.date().isoformat()
                counts[day] = counts.get(day, 0) + 1
                if value is not None and math.isfinite(float(value)):  # 10**400 is a float's inf
                    total, n = sums.get(day, (0.0, 0))
                    sums[day] = (total + float(value), n + 1)
        averages = {day: total / n for day, (total, n) in sums.items()}
        return {day: {"reports": n,
                      "average_sentiment": averages[day] if math.isfinite(averages.get(day, math.nan)) else None}
                for day, n in sorted(counts.items())}

