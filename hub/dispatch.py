"""Claim, deliver, retry, dead-letter. No Flask here: ``serve``, ``worker`` and tests share it.

Each destination is called on its own (never one broadcast hook call), so one
destination's outage never starves another; each outcome lands on its own row.
"""
from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Callable

from . import logs, metrics
from .errors import Deferred, Permanent, Retryable
from .redaction import in_play, scrub
from .report import CallReport
from .store import DEAD, PENDING, SUCCEEDED, Attempt, Delivery, Store, utcnow
from .wakeup import Announcer, Listener

log = logging.getLogger(__name__)
#: a leased delivery and its report, ready to attempt
Claimed = tuple[Delivery, CallReport | None]


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


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: the delivery's new ``status`` (succeeded, pending again for a
    retry, or dead), the redacted ``error`` and, for a retry, when the next attempt is due."""

    status: str
    error: str | None = None
    next_attempt_at: datetime | None = None

    @property
    def recorded_as(self) -> str:
        """The attempt's word in the attempts table, metrics and logs: succeeded, retry or dead."""
        return "retry" if self.status == PENDING else self.status


class Dispatcher:
    """Runs deliveries: ``process_one`` for a single claim, ``start``/``stop`` for worker threads.

    ``destinations`` maps configured names to Destination instances; ``on_finished`` is
    called with (delivery, report) after a delivery succeeds or goes dead; ``on_due`` with the
    ids passed to ``wake`` (the Celery backend sends them to its workers). ``max_in_flight``
    maps each configured destination to how many of the worker threads it may hold at once
    (None: its fair share, the threads divided by the destinations), so a slow or rate-limited
    destination holds only its own deliveries back.
    """

    def __init__(self, store: Store, destinations: dict, policy: RetryPolicy, *, lease_seconds: float = 300,
                 poll_interval: float = 0.5, on_finished: Callable | None = None,
                 on_due: Callable[[list[str] | None], None] | None = None,
                 max_in_flight: dict[str, int | None] | None = None):
        self.store = store
        self.destinations = destinations
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.on_finished = on_finished
        self.on_due = on_due
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._queue: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(0)
        self._workers = 0
        self.max_in_flight = dict(max_in_flight or {})
        self._caps: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._in_flight_lock = threading.Lock()
        self._missed: set[str] = set()  # destinations a Celery message found full (process_in_turn)
        self._turn = 0  # which due destination is claimed for first: each gets to go first in turn
        # other processes' dispatchers (serve's web workers commit, its worker process delivers)
        self._announcer = Announcer(store) if on_due is None else None
        self._listener: Listener | None = None
        self._woken = False

    # --- one delivery --------------------------------------------------------------

    def process_one(self, delivery_id: str | None = None) -> Delivery | None:
        """Claim one due delivery (or the given one) and make one attempt; None if nothing was due.

        Returns the delivery as the attempt left it: ``pending`` with the retry's
        ``next_attempt_at``, ``succeeded`` or ``dead``; still ``running`` if the lease was lost
        meanwhile (another worker holds the row and its outcome counts).
        """
        item = self._with_report(self.store.claim(self.owner, self.lease_seconds, delivery_id=delivery_id))
        return None if item is None else self._attempt(*item)[0]

    def process_in_turn(self, delivery_id: str) -> list[Delivery]:
        """The Celery backend's ``deliver``: attempt ``delivery_id`` if due, within its destination's
        ``max_in_flight`` in this process, then that destination's next due deliveries while they last.

        A message that finds its destination's share taken is dropped: each thread holding the
        share goes on with the destination's due deliveries (this one among them, in the order
        the claim keeps) when its own is done, so the message's thread serves other destinations
        meanwhile. Returns the deliveries attempted, as each attempt left them.
        """
        delivery = self.store.get_delivery(delivery_id)
        if delivery is None or not self._take_room(delivery.destination):
            return []
        name, done, left = delivery.destination, [], False
        try:
            item = self._with_report(self.store.claim(self.owner, self.lease_seconds, delivery_id=delivery_id))
            while True:
                done.extend(self._attempt_in_turn(item, lambda: True))
                if self._stopping.is_set():
                    break
                item = next(iter(self._claim(1, destination=name)), None)
                if item is None and self._leave_unless_missed(name):
                    left = True
                    break
        finally:
            if not left:
                self._give_room(name)
        return done

    def run_due(self, limit: int = 1000, batch: int = 16) -> int:
        """Attempt every delivery that is due now, in this thread; returns how many were tried."""
        done = 0
        while done < limit:
            claimed = self._claim(min(batch, limit - done))
            if not claimed:
                break
            for delivery, report in claimed:
                self._attempt(delivery, report)
            done += len(claimed)
        return done

    def _claim(self, limit: int, destination: str | None = None) -> list[tuple[Delivery, CallReport | None]]:
        """Lease up to ``limit`` due deliveries (of ``destination``, or any) and load their
        reports: two queries for the lot."""
        claimed = self.store.claim_batch(self.owner, self.lease_seconds, limit, destination=destination)
        reports = self.store.get_reports(d.report_id for d in claimed)
        return [(d, reports.get(d.report_id)) for d in claimed]

    def _retry_or_dead(self, delivery: Delivery, started, error: str, retry_after: float | None = None) -> Outcome:
        """A failure time may fix: the next attempt per the schedule, or dead once it is spent."""
        if self.policy.exhausted(delivery.attempts):
            return Outcome(DEAD, f"{error} (gave up after {delivery.attempts} attempts)")
        return Outcome(PENDING, error, started + timedelta(seconds=self.policy.delay(delivery.attempts, retry_after)))

    def _attempt(self, delivery: Delivery, report: CallReport | None, *,
                 then_next: bool = False) -> tuple[Delivery, Claimed | None]:
        """One attempt; its error, its result and every log line it writes are scrubbed of secrets
        and of the caller's number in any form. Returns the delivery as the attempt left it and,
        with ``then_next``, the destination's next due delivery, leased in the same write that
        recorded the outcome (None when none is due, the attempt was deferred or the dispatcher
        is stopping)."""
        with in_play([report.customer.number] if report is not None else []):
            finished, following = self._attempt_scrubbed(delivery, report, then_next)
        return finished, self._with_report(following)

    def _with_report(self, delivery: Delivery | None) -> Claimed | None:
        """A leased delivery with its report loaded; None for None."""
        return None if delivery is None else (delivery, self.store.get_report(delivery.report_id))

    def _attempt_in_turn(self, item: Claimed | None, go_on: Callable[[], bool]) -> list[Delivery]:
        """Attempt ``item``, then its destination's next due deliveries, each leased as the one
        before is recorded, while ``go_on()`` says so before each attempt; what each attempt left."""
        done = []
        while item is not None:
            finished, item = self._attempt(*item, then_next=go_on())
            done.append(finished)
        return done

    def _attempt_scrubbed(self, delivery: Delivery, report: CallReport | None,
                          then_next: bool) -> tuple[Delivery, Delivery | None]:
        started = utcnow()
        clock = time.perf_counter()
        destination = self.destinations.get(delivery.destination)
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
            ctx = destination.context(delivery_id=delivery.id, attempt=delivery.attempts, state=state,
                                      earlier_state=lambda: self.store.earlier_state(delivery))
            result = destination.deliver(report, ctx)
            # scrubbed like errors: the webhook type's message names its URL, which is a secret
            result_text = scrub(getattr(result, "message", None) or "delivered")
            outcome = Outcome(SUCCEEDED)
        except Deferred as exc:
            return self._give_back(delivery, ctx.state if ctx is not None else state, started, exc), None
        except Retryable as exc:
            http_status = exc.http_status
            outcome = self._retry_or_dead(delivery, started, scrub(exc.reason), exc.retry_after)
        except Permanent as exc:
            http_status = exc.http_status
            outcome = Outcome(DEAD, scrub(exc.reason))
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not kill the worker or lose the delivery
            log.exception("destination raised an unexpected error", extra={"fields": {
                "delivery_id": delivery.id, "destination": delivery.destination}})
            outcome = self._retry_or_dead(delivery, started, scrub(f"unexpected {type(exc).__name__}: {exc}")[:1000])
        if ctx is not None:
            state = ctx.state
            http_status = http_status or ctx.last_status
        elapsed = time.perf_counter() - clock
        next_at, word = outcome.next_attempt_at, outcome.recorded_as
        recorded = dict(status=outcome.status, state=state, next_attempt_at=next_at, result=result_text,
                        attempt=Attempt(started, elapsed * 1000, word, http_status, outcome.error))
        if then_next and not self._stopping.is_set():
            kept, following = self.store.finish_and_claim(delivery, self.owner, self.lease_seconds, **recorded)
        else:
            kept, following = self.store.finish(delivery, self.owner, **recorded), None
        metrics.DELIVERIES.labels(delivery.destination, word).inc()
        metrics.ATTEMPT_SECONDS.labels(delivery.destination).observe(elapsed)
        logs.event(log, f"delivery.{word}", logging.INFO if outcome.status == SUCCEEDED else logging.WARNING,
                   delivery_id=delivery.id, report_id=delivery.report_id, destination=delivery.destination,
                   attempt=delivery.attempts, http_status=http_status, error=outcome.error,
                   next_attempt_at=next_at.isoformat() if next_at else None, lease_kept=kept)
        if not kept:
            return delivery, following
        finished = replace(delivery, status=outcome.status, state=state, last_error=outcome.error, lease_owner=None,
                           lease_until=None, next_attempt_at=next_at or utcnow(),
                           result=result_text or delivery.result)
        if outcome.status in (SUCCEEDED, DEAD) and self.on_finished is not None and report is not None:
            try:
                self.on_finished(finished, report)
            except Exception:  # noqa: BLE001 - an observer's failure is logged, never fatal
                log.exception("delivery_finished hook failed")
        return finished, following

    def _give_back(self, delivery: Delivery, state: dict, started: datetime, deferred: Deferred) -> Delivery:
        """Not attempted after all: pending again when ``deferred`` says, the attempt not counted
        (its state kept: what it created before the wait is not created again)."""
        next_at = started + timedelta(seconds=deferred.retry_after or 0.0)
        reason = scrub(deferred.reason)
        kept = self.store.give_back(delivery, self.owner, state=state, next_attempt_at=next_at, reason=reason)
        logs.event(log, "delivery.deferred", logging.DEBUG, delivery_id=delivery.id, report_id=delivery.report_id,
                   destination=delivery.destination, reason=reason, next_attempt_at=next_at.isoformat(),
                   lease_kept=kept)
        if not kept:
            return delivery
        return replace(delivery, status=PENDING, attempts=delivery.attempts - 1, state=state, last_error=reason,
                       lease_owner=None, lease_until=None, next_attempt_at=next_at)

    # --- worker threads ------------------------------------------------------------

    def wake(self, delivery_ids: list[str] | None = None) -> None:
        """New deliveries are due: these (committed) ids, or unnamed ones (None, after a requeue).

        Wakes this process's claim thread and passes the ids on to ``on_due``, which must not
        raise: the rows are committed, and a poll or a sweep finds them anyway.
        """
        if self.on_due is not None:
            self.on_due(None if delivery_ids is None else list(delivery_ids))
        else:
            self._announcer.announce()
        self._wake_claim_thread()

    def _wake_claim_thread(self) -> None:
        with self._wake:
            self._woken = True  # kept until the claim thread looks: a wake during a claim is not lost
            self._wake.notify_all()

    def share_threads(self, workers: int) -> None:
        """Split ``workers`` threads among the destinations (``max_in_flight``, else the fair share)
        and size each destination's connection pool to its share."""
        self._workers = workers
        self._caps = {name: cap or self.fair_share(workers) for name, cap in self.max_in_flight.items()}
        self._in_flight = {}
        for name, cap in self._caps.items():
            destination = self.destinations.get(name)
            if destination is not None:
                destination.size_http_pool(min(cap, workers))

    def _take_room(self, destination: str) -> bool:
        """One of ``destination``'s threads, if it has one free in this process; if not, the
        threads that hold them look once more before they leave (``_leave_unless_missed``)."""
        with self._in_flight_lock:
            if self._in_flight.get(destination, 0) >= self._caps.get(destination, self.fair_share(self._workers)):
                self._missed.add(destination)
                return False
            self._in_flight[destination] = self._in_flight.get(destination, 0) + 1
            return True

    def _leave_unless_missed(self, destination: str) -> bool:
        """Give the thread back, unless a message found ``destination``'s share taken since the
        last look (its delivery may be due after that look): then look again."""
        with self._in_flight_lock:
            if destination in self._missed:
                self._missed.discard(destination)
                return False
            self._in_flight[destination] -= 1
            return True

    def _give_room(self, destination: str) -> None:
        with self._in_flight_lock:
            self._in_flight[destination] -= 1

    def stop_claiming(self) -> None:
        """Claim nothing more (attempts under way finish); ``stop`` does this first."""
        self._stopping.set()
        self._wake_claim_thread()

    def fair_share(self, workers: int) -> int:
        """The threads a destination without ``max_in_flight`` may hold: its share of ``workers``."""
        return max(1, workers // max(1, len(self.max_in_flight)))

    def _claim_fairly(self, free: int) -> list[tuple[Delivery, CallReport | None]]:
        """Up to ``free`` due deliveries, none of a destination beyond its ``max_in_flight``;
        the destinations with due work take turns at going first."""
        due = sorted(self.store.due_destinations())
        if not due:
            return []
        self._turn = (self._turn + 1) % len(due)
        claimed: list[tuple[Delivery, CallReport | None]] = []
        for name in due[self._turn:] + due[:self._turn]:
            with self._in_flight_lock:
                room = min(free - len(claimed),
                           self._caps.get(name, self.fair_share(self._workers)) - self._in_flight.get(name, 0))
            if room <= 0 or self._stopping.is_set():
                continue
            got = self._claim(room, destination=name)
            with self._in_flight_lock:
                self._in_flight[name] = self._in_flight.get(name, 0) + len(got)
            claimed.extend(got)
            if len(claimed) == free:
                break
        return claimed

    def _claim_loop(self) -> None:
        """One thread claims, for as many deliveries as there are idle workers (each destination
        up to its ``max_in_flight``); the workers attempt them. Batches cut the store's work per
        delivery, and never claiming more than the idle workers can start keeps every lease's
        clock honest."""
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=self.poll_interval):
                continue
            free = 1
            while self._slots.acquire(blocking=False):
                free += 1
            claimed = []
            try:
                # look again after the (slow) poll: a stop() that came meanwhile means claim nothing more
                if not self._stopping.is_set():
                    claimed = self._claim_fairly(free)
            except Exception:  # noqa: BLE001 - a store hiccup: log, wait, go on
                log.exception("dispatcher claim error")
            for _ in range(free - len(claimed)):
                self._slots.release()
            for item in claimed:
                self._queue.put(item)
            if len(claimed) < free:  # nothing more is due: wait for a wake, or poll
                with self._wake:
                    if not self._woken:
                        self._wake.wait(self.poll_interval)
                    self._woken = False
        for _ in range(self._workers):
            self._queue.put(None)

    def _work_loop(self) -> None:
        """Attempt what the claim thread hands over, then that destination's next due deliveries
        while they last (each leased as the one before is recorded), then hand the thread back."""
        while (item := self._queue.get()) is not None:
            name = item[0].destination
            try:
                self._attempt_in_turn(item, lambda: self._may_go_on(name))
            except Exception:  # noqa: BLE001 - a store hiccup in finish(): the lease runs out, the row comes back
                log.exception("dispatcher attempt error")
            finally:
                self._give_room(name)
                self._slots.release()
                self._wake_claim_thread()  # the destination has room again: its next delivery may be due

    def _may_go_on(self, destination: str) -> bool:
        """Whether a thread that finished one of ``destination``'s deliveries takes its next one
        itself (unless the dispatcher is stopping by then): while the destination holds no more
        than its fair share of the threads. Threads a ``max_in_flight`` above it lets it hold go
        back to the claim thread's rotation, so the other destinations get their turn."""
        with self._in_flight_lock:
            held = self._in_flight.get(destination, 0)
        return held <= self.fair_share(self._workers)

    def start(self, workers: int) -> None:
        self._stopping.clear()
        self._queue = queue.Queue()
        self._slots = threading.Semaphore(workers)
        self.share_threads(workers)
        self._threads = [threading.Thread(target=self._work_loop, name=f"dispatcher-{n}", daemon=True)
                         for n in range(workers)]
        self._threads.append(threading.Thread(target=self._claim_loop, name="dispatcher-claim", daemon=True))
        for thread in self._threads:
            thread.start()
        self._listener = Listener(self.store, self._wake_claim_thread).start()
        logs.event(log, "dispatcher.started", workers=workers, owner=self.owner, max_in_flight=self._caps)

    def stop(self, grace_seconds: float = 25.0) -> int:
        """Stop claiming, let in-flight attempts finish within the grace period, give back the rest."""
        self.stop_claiming()
        if self._listener is not None:
            self._listener.stop()
        deadline = time.monotonic() + grace_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        still_running = [t for t in self._threads if t.is_alive()]
        # unconditionally: a thread whose finish() failed (store hiccup) also left a lease behind
        released = self.store.release(self.owner)
        self._threads = still_running
        logs.event(log, "dispatcher.stopped", unfinished=len(still_running), released=released)
        return released

    def close(self) -> None:
        """Free what ``wake`` holds (its socket); after ``stop``."""
        if self._announcer is not None:
            self._announcer.close()
