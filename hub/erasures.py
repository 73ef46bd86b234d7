"""The erasures at the destinations, run by the hub like deliveries.

``forget --destinations`` queues one row per enabled destination whose type can erase
(``Destination.forget``); every dispatcher process runs an ``ErasureRunner`` that claims the
due rows under a lease (so each attempt is made by one process across every node), calls
``forget`` and records the attempt: retried on ``[dispatch] retry_delays`` up to ``max_attempts``,
held while the destination is paused, picked up again after a crash once its lease runs out.
The caller's number stays on the row only until the attempt that ends it.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from . import logs
from .errors import Permanent, Retryable
from .redaction import in_play, redact, scrub
from .store import DEAD, PENDING, SUCCEEDED, DestinationErasure, utcnow

if TYPE_CHECKING:
    from .core import Hub

log = logging.getLogger(__name__)
#: erasures claimed per transaction
BATCH = 8


def erasing_destinations(hub: Hub) -> list[str]:
    """The enabled destinations whose type can erase: the only ones a queued erasure runs at."""
    return sorted(name for name, destination in hub.destinations.items() if destination.can_forget())


def run_due(hub: Hub, *, limit: int = 100) -> dict[str, int]:
    """Attempt every queued erasure due now (at most ``limit`` attempts), in this thread; the
    attempts per outcome (succeeded, retry, dead)."""
    done = {SUCCEEDED: 0, "retry": 0, DEAD: 0}
    names = erasing_destinations(hub)
    while names and sum(done.values()) < limit:
        claimed = hub.store.claim_erasures(hub.dispatcher.owner, hub.dispatcher.lease_seconds,
                                           min(BATCH, limit - sum(done.values())), names)
        if not claimed:
            break
        for job in claimed:
            done[attempt(hub, job)] += 1
    return done


def attempt(hub: Hub, job: DestinationErasure) -> str:
    """One attempt of a claimed erasure; its word: succeeded, retry or dead. Its error, result and
    log lines are scrubbed of secrets and of the number in any form."""
    with in_play([job.subject]):
        return _attempt_scrubbed(hub, job)


def _attempt_scrubbed(hub: Hub, job: DestinationErasure) -> str:
    policy = hub.dispatcher.policy
    destination = hub.destinations[job.destination]
    started, clock = utcnow(), time.perf_counter()
    status, error, result, next_at, http_status = DEAD, None, None, None, None
    ctx = destination.context(delivery_id=f"erasure-{job.id}", attempt=job.attempts)
    try:
        if not job.subject:
            raise Permanent("the number to erase is no longer held (the job ended before)")
        if job.attempts > policy.max_attempts:
            raise Permanent(f"gave up after {job.attempts - 1} attempts (the last one's process was lost)")
        outcome = destination.forget(job.subject, ctx)
        status, result = SUCCEEDED, scrub(getattr(outcome, "message", None) or "erased")
    except Retryable as exc:
        http_status, error = exc.http_status, scrub(exc.reason)
        if not policy.exhausted(job.attempts):
            status = PENDING
            next_at = utcnow() + timedelta(seconds=policy.delay(job.attempts, exc.retry_after))
    except Permanent as exc:
        http_status, error = exc.http_status, scrub(exc.reason)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug: this erasure's outcome, not the runner's end
        log.exception("destination forget raised an unexpected error", extra={"fields": {
            "erasure_id": job.erasure_id, "destination": job.destination}})
        error = scrub(f"unexpected {type(exc).__name__}: {exc}")[:1000]
        if not policy.exhausted(job.attempts):
            status, next_at = PENDING, utcnow() + timedelta(seconds=policy.delay(job.attempts))
    word = "retry" if status == PENDING else status
    entry = {"number": job.attempts, "started_at": started.isoformat(),
             "duration_ms": round((time.perf_counter() - clock) * 1000, 1), "outcome": word,
             "http_status": http_status or ctx.last_status, "error": error}
    kept = hub.store.finish_erasure(job, hub.dispatcher.owner, status=status, attempt=entry,
                                    next_attempt_at=next_at, result=result)
    logs.event(log, f"erasure.{word}", logging.INFO if status == SUCCEEDED else logging.WARNING,
               erasure_id=job.erasure_id, destination=job.destination, attempt=job.attempts, error=error,
               next_attempt_at=next_at.isoformat() if next_at else None, lease_kept=kept)
    return word


class ErasureRunner:
    """A daemon thread that runs the due erasures every ``poll`` seconds; a read-only look first,
    so an idle hub takes no write lock. ``start``/``stop`` as ``hub.jobs.Scheduler``."""

    def __init__(self, hub: Hub, *, poll: float = 10.0):
        self.hub, self.poll = hub, poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="destination-erasures", daemon=True)

    def start(self) -> "ErasureRunner":
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.hub.store.has_due_erasures(erasing_destinations(self.hub)):
                    run_due(self.hub)
            except SQLAlchemyError as exc:  # the store is away: look again at the next poll
                logs.event(log, "erasure.store_unavailable", logging.WARNING, error=redact(str(exc).splitlines()[0]))
            self._stop.wait(self.poll)


def runner_for(hub: Hub, *, poll: float = 10.0) -> ErasureRunner | None:
    """The runner of this process; None when no enabled destination can erase."""
    return ErasureRunner(hub, poll=poll) if erasing_destinations(hub) else None
