"""Claim, deliver, retry, dead-letter. No Flask here: ``serve``, ``worker`` and tests share it.

Each destination is called on its own (never one broadcast hook call), so one
destination's outage never starves another; each outcome lands on its own row.
"""
from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Callable

from . import logs, metrics
from .errors import DeliveryError, Permanent, Retryable
from .secrets import redact
from .store import DEAD, PENDING, SUCCEEDED, Attempt, Delivery, Store, utcnow

log = logging.getLogger(__name__)


class RetryPolicy:
    """``retry_delays[n-1]`` seconds after the n-th failed attempt, ± ``jitter``; a
    ``Retry-After`` from the far side is a floor, never shortened."""

    def __init__(self, delays: list[float], max_attempts: int, jitter: float = 0.1, rng=random.random):
        self.delays = list(delays) or [60.0]
        self.max_attempts = max_attempts
        self.jitter = jitter
        self.rng = rng

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        base = self.delays[min(attempt, len(self.delays)) - 1]
        spread = base * self.jitter * (2 * self.rng() - 1)
        return max(base + spread, retry_after or 0.0)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


class Dispatcher:
    """Runs deliveries: ``process_one`` for a single claim, ``start``/``stop`` for worker threads.

    ``destinations`` maps configured names to Destination instances; ``on_finished`` is
    called with (delivery, report) after a delivery succeeds or goes dead.
    """

    def __init__(self, store: Store, destinations: dict, policy: RetryPolicy, *, lease_seconds: float = 300,
                 poll_interval: float = 0.5, on_finished: Callable | None = None):
        self.store = store
        self.destinations = destinations
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.on_finished = on_finished
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._busy_lock = threading.Lock()

    # --- one delivery --------------------------------------------------------------

    def process_one(self, delivery_id: str | None = None) -> Delivery | None:
        """Claim one due delivery (or the given one) and make one attempt; None if nothing was due."""
        delivery = self.store.claim(self.owner, self.lease_seconds, delivery_id=delivery_id)
        if delivery is None:
            return None
        with self._busy_lock:
            self._busy += 1
        try:
            self._attempt(delivery)
        finally:
            with self._busy_lock:
                self._busy -= 1
        return delivery

    def run_due(self, limit: int = 1000) -> int:
        """Attempt every delivery that is due now, in this thread; returns how many were tried."""
        done = 0
        while done < limit and self.process_one() is not None:
            done += 1
        return done

    def _attempt(self, delivery: Delivery) -> None:
        started = utcnow()
        clock = time.perf_counter()
        destination = self.destinations.get(delivery.destination)
        report = self.store.get_report(delivery.report_id)
        state = dict(delivery.state)
        http_status = None
        result_text = None
        ctx = None
        try:
            if destination is None:
                raise Permanent(f"destination {delivery.destination!r} is not configured (any more); "
                                f"add it back to the configuration and replay")
            if report is None:
                raise Permanent(f"report {delivery.report_id} is missing from the store")
            if delivery.attempts > self.policy.max_attempts:
                raise Permanent(f"gave up after {delivery.attempts - 1} attempts (the last one's worker was lost)")
            ctx = destination.context(delivery_id=delivery.id, attempt=delivery.attempts, state=state)
            result = destination.deliver(report, ctx)
            result_text = getattr(result, "message", None) or "delivered"
            status, outcome, error, next_at = SUCCEEDED, "succeeded", None, None
        except Retryable as exc:
            http_status = exc.http_status
            error = redact(exc.reason)
            if self.policy.exhausted(delivery.attempts):
                status, outcome, next_at = DEAD, "dead", None
                error = f"{error} (gave up after {delivery.attempts} attempts)"
            else:
                status, outcome = PENDING, "retry"
                next_at = started + timedelta(seconds=self.policy.delay(delivery.attempts, exc.retry_after))
        except Permanent as exc:
            http_status = exc.http_status
            status, outcome, error, next_at = DEAD, "dead", redact(exc.reason), None
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not kill the worker or lose the delivery
            log.exception("destination raised an unexpected error", extra={"fields": {
                "delivery_id": delivery.id, "destination": delivery.destination}})
            error = redact(f"unexpected {type(exc).__name__}: {exc}")[:1000]
            if self.policy.exhausted(delivery.attempts):
                status, outcome, next_at = DEAD, "dead", None
                error = f"{error} (gave up after {delivery.attempts} attempts)"
            else:
                status, outcome = PENDING, "retry"
                next_at = started + timedelta(seconds=self.policy.delay(delivery.attempts))
        if ctx is not None:
            state = ctx.state
            http_status = http_status or ctx.last_status
        elapsed = time.perf_counter() - clock
        kept = self.store.finish(
            delivery, self.owner, status=status, state=state, next_attempt_at=next_at, result=result_text,
            attempt=Attempt(started, elapsed * 1000, outcome, http_status, error))
        metrics.DELIVERIES.labels(delivery.destination, outcome).inc()
        metrics.ATTEMPT_SECONDS.labels(delivery.destination).observe(elapsed)
        logs.event(log, f"delivery.{outcome}", logging.INFO if outcome == "succeeded" else logging.WARNING,
                   delivery_id=delivery.id, report_id=delivery.report_id, destination=delivery.destination,
                   attempt=delivery.attempts, http_status=http_status, error=error,
                   next_attempt_at=next_at.isoformat() if next_at else None, lease_kept=kept)
        if kept and status in (SUCCEEDED, DEAD) and self.on_finished is not None and report is not None:
            try:
                self.on_finished(self.store.get_delivery(delivery.id), report)
            except Exception:  # noqa: BLE001 - an observer's failure is logged, never fatal
                log.exception("delivery_finished hook failed")

    # --- worker threads ------------------------------------------------------------

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                # look again after the (slow) poll: a stop() that came meanwhile means claim nothing more
                worked = (self.store.has_due() and not self._stopping.is_set()
                          and self.process_one() is not None)
            except Exception:  # noqa: BLE001 - a store hiccup: log, wait, go on
                log.exception("dispatcher loop error")
                worked = False
            if not worked:
                with self._wake:
                    self._wake.wait(self.poll_interval)

    def start(self, workers: int) -> None:
        self._stopping.clear()
        for n in range(workers):
            thread = threading.Thread(target=self._loop, name=f"dispatcher-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logs.event(log, "dispatcher.started", workers=workers, owner=self.owner)

    def stop(self, grace_seconds: float = 25.0) -> int:
        """Stop claiming, let in-flight attempts finish within the grace period, give back the rest."""
        self._stopping.set()
        self.wake()
        deadline = time.monotonic() + grace_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        still_running = [t for t in self._threads if t.is_alive()]
        # unconditionally: a thread whose finish() failed (store hiccup) also left a lease behind
        released = self.store.release(self.owner)
        self._threads = still_running
        logs.event(log, "dispatcher.stopped", unfinished=len(still_running), released=released)
        return released
