"""Jobs that run once across every process and node, by a lease row in the store.

Each dispatcher process runs a ``Scheduler`` thread per job; every ``poll`` seconds it offers
to run the job. The offer is one conditional UPDATE: it takes the row when the job is due
(``every`` since its last start) and no one else holds an unexpired lease, so exactly one
process wins however many ask at once, on SQLite or PostgreSQL. A process that dies mid-run
leaves a lease that expires; the job is then due again.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from . import logs
from .redaction import redact
from .store import Store, scheduled_jobs, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LastRun:
    """A job's last run, as the store keeps it; ``result`` is None while the first run is going."""

    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    running: bool


def take_lease(store: Store, name: str, owner: str, *, every: timedelta, lease: timedelta,
               now: datetime | None = None) -> bool:
    """True when ``owner`` now holds ``name``'s lease and should run it (it was due, and free)."""
    now = now or utcnow()
    j = scheduled_jobs.c
    try:
        with store.write() as conn:
            conn.execute(scheduled_jobs.insert().values(name=name))
    except IntegrityError:
        pass  # the row exists already (the usual case)
    with store.write() as conn:
        taken = conn.execute(scheduled_jobs.update().where(
            j.name == name,
            sa.or_(j.lease_until.is_(None), j.lease_until < now),
            sa.or_(j.last_started_at.is_(None), j.last_started_at <= now - every),
        ).values(lease_owner=owner, lease_until=now + lease, last_started_at=now))
    return taken.rowcount == 1


def finish(store: Store, name: str, owner: str, result: dict[str, Any], *, now: datetime | None = None) -> None:
    """Record the run's outcome and give the lease back (only ``owner``'s own)."""
    j = scheduled_jobs.c
    with store.write() as conn:
        conn.execute(scheduled_jobs.update().where(j.name == name, j.lease_owner == owner).values(
            lease_owner=None, lease_until=None, last_finished_at=now or utcnow(),
            last_result=json.dumps(result, sort_keys=True)))


def last_run(store: Store, name: str, *, now: datetime | None = None) -> LastRun | None:
    """``name``'s last run, or None when it never ran."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(scheduled_jobs).where(scheduled_jobs.c.name == name)).first()
    if row is None or row.last_started_at is None:
        return None
    running = row.lease_until is not None and row.lease_until >= (now or utcnow())
    return LastRun(row.last_started_at, row.last_finished_at,
                   json.loads(row.last_result) if row.last_result else None, running)


class Scheduler:
    """A daemon thread offering to run ``job`` (a callable returning a JSON-able dict) every
    ``poll`` seconds; it runs when this process takes the lease."""

    def __init__(self, store: Store, name: str, job: Callable[[], dict[str, Any]], *, owner: str,
                 every: timedelta, lease: timedelta, poll: float = 30.0):
        self.store, self.name, self.job, self.owner = store, name, job, owner
        self.every, self.lease, self.poll = every, lease, poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"job-{name}", daemon=True)

    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def run_if_due(self) -> dict[str, Any] | None:
        """One offer: the job's result when this process ran it, None when it was not its turn."""
        if not take_lease(self.store, self.name, self.owner, every=self.every, lease=self.lease):
            return None
        try:
            result = self.job()
        except Exception as exc:  # noqa: BLE001 - recorded and logged; the next run is due as usual
            result = {"error": redact(f"{type(exc).__name__}: {exc}")}
            logs.event(log, f"{self.name}.failed", logging.ERROR, error=result["error"])
        finish(self.store, self.name, self.owner, result)
        return result

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_if_due()
            except SQLAlchemyError as exc:  # the store is away: offer again at the next poll
                logs.event(log, f"{self.name}.store_unavailable", logging.WARNING,
                           error=redact(str(exc).splitlines()[0]))
            self._stop.wait(self.poll)
