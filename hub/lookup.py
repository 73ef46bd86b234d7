"""Caller lookups for live answers: a bounded pool of their own, a budget, and a cache.

The assistant-request answer must leave within its budget whatever the CRM does, so a lookup
never runs on the request's thread: it runs in this module's pool, and the request waits for
it at most until its deadline. A lookup that overruns is abandoned by the request, not
cancelled: when it ends, what it found still goes into the cache, so the next call from that
number is answered from there. A lookup that fails is not cached (the next call asks again);
one that found nobody is cached as "unknown". Two requests for the same number at once share
one lookup. The pool, the cache and the in-flight table belong to one process; no lock is held
while a lookup runs. Plain threads and gevent's patched ones both work (concurrent.futures).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable

from . import logs
from .destinations import Caller, Destination
from .errors import DeliveryError
from .redaction import in_play, mask_phone, scrub

log = logging.getLogger(__name__)

FOUND, UNKNOWN, TIMEOUT, FAILED, BUSY = "found", "unknown", "timeout", "failed", "busy"
#: numbers kept in the cache at most (the oldest goes first)
CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class Lookup:
    """What one lookup came to: ``found`` (with ``caller``), ``unknown`` (the CRM knows nobody
    with the number), ``timeout`` (not back within the budget), ``failed`` (the CRM or the
    type raised: ``detail`` says what), ``busy`` (every lookup thread taken, the queue full).
    ``cached``: answered from the cache, nothing sent."""

    status: str
    caller: Caller | None = None
    detail: str = ""
    cached: bool = False

    @property
    def answered(self) -> bool:
        """The CRM said who it is (or that it does not know): the answer is not a fallback."""
        return self.status in (FOUND, UNKNOWN)


class Pending:
    """A lookup under way; ``wait(timeout)`` gives its ``Lookup``, or ``timeout`` when it is late."""

    def __init__(self, destination: str, future: Future | None = None, done: Lookup | None = None):
        self.destination, self.future, self.done = destination, future, done

    def wait(self, timeout: float) -> Lookup:
        if self.done is not None:
            return self.done
        try:
            return self.future.result(timeout=max(0.0, timeout))
        except FutureTimeout:
            return Lookup(TIMEOUT, detail=f"{self.destination!r} did not answer within the budget")


class CallerLookups:
    """One per process and hub: ``lookup(destination, number, timeout)``."""

    def __init__(self, workers: int, cache_seconds: float, *, clock: Callable[[], float] = time.monotonic):
        self.workers = workers
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # guards the dicts below, never held over a lookup
        self._cache: OrderedDict[tuple[str, str], tuple[float, Caller | None]] = OrderedDict()
        self._running: dict[tuple[str, str], Future] = {}

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:  # built on first use: a gunicorn worker makes its own after the fork
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="caller-lookup")
            return self._pool

    def cached(self, destination: str, number: str) -> Lookup | None:
        key = (destination, number)
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            expires, caller = entry
            if expires <= self.clock():
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
        return Lookup(FOUND if caller else UNKNOWN, caller, cached=True)

    def lookup(self, destination: Destination, number: str, timeout: float) -> Lookup:
        """Who ``number`` (E.164) is in ``destination``, waiting at most ``timeout`` seconds."""
        return self.start(destination, number).wait(timeout)

    def start(self, destination: Destination, number: str) -> "Pending":
        """Begin the lookup (or take the cache's word, or join one under way); ``wait`` on it."""
        hit = self.cached(destination.name, number)
        if hit is not None:
            return Pending(destination.name, done=hit)
        future = self._start(destination, number)
        if future is None:
            return Pending(destination.name, done=Lookup(
                BUSY, detail=f"every one of the {self.workers} lookup threads is busy"))
        return Pending(destination.name, future)

    def _start(self, destination: Destination, number: str) -> Future | None:
        key = (destination.name, number)
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                return running
            if len(self._running) >= self.workers * 4:  # lookups queued far beyond what can run in time
                return None
        pool = self._executor()
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                return running
            future = pool.submit(self._run, destination, number)
            self._running[key] = future
        return future

    def _run(self, destination: Destination, number: str) -> Lookup:
        key = (destination.name, number)
        started = time.monotonic()
        try:
            with in_play([number]):  # a token fetched at run time, and the number, stay out of the error
                return self._ask(destination, number)
        finally:
            logs.event(log, "lookup.finished", logging.DEBUG, destination=destination.name,
                       customer=mask_phone(number), duration_ms=round((time.monotonic() - started) * 1000, 1))
            with self._lock:
                self._running.pop(key, None)

    def _ask(self, destination: Destination, number: str) -> Lookup:
        key = (destination.name, number)
        try:
            ctx = destination.context(delivery_id=f"lookup-{destination.name}")
            caller = destination.lookup_caller(number, ctx)
            if caller is not None and not isinstance(caller, Caller):
                raise TypeError(f"lookup_caller returned {type(caller).__name__}, not a hub.Caller or None")
            found = Lookup(FOUND if caller else UNKNOWN, caller)
            with self._lock:
                if self.cache_seconds > 0:
                    self._cache[key] = (self.clock() + self.cache_seconds, caller)
                    self._cache.move_to_end(key)
                    while len(self._cache) > CACHE_ENTRIES:
                        self._cache.popitem(last=False)
            return found
        except Exception as exc:  # noqa: BLE001 - a CRM's failure, or a type's bug: the answer falls back
            detail = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
            detail = scrub(detail)
            logs.event(log, "lookup.failed", logging.WARNING, destination=destination.name,
                       customer=mask_phone(number), error=detail)
            return Lookup(FAILED, detail=detail)

    def forget(self, number: str) -> None:
        """Drop ``number`` from the cache (the caller was erased)."""
        with self._lock:
            for key in [key for key in self._cache if key[1] == number]:
                del self._cache[key]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
