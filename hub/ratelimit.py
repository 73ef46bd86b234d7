"""A moving-window limiter per destination and bucket name: in this process, or shared through Redis.

Vendors publish limits as "N requests per T seconds". A token bucket with a burst lets more than
N through in some T-long window (a full bucket plus what refills while it drains); a moving
window never does: a request is granted only when fewer than N were granted in the T seconds
before it. Limits are written ``"count/Ns"`` (``"4/1s"``, ``"150/60s"``, ``"1000/900s"``).

``[ratelimit] storage`` says where the windows are counted: ``"memory://"`` (``WindowLimiter``,
the threads of one process) or a Redis URL (``StoredWindowLimiter``, through the ``limits``
library's moving window, so every worker process and node shares each bucket).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from .errors import Retryable

log = logging.getLogger(__name__)
MEMORY = "memory://"
#: how long a delivery waits before it is tried again when the shared storage cannot be reached
STORAGE_RETRY_SECONDS = 5.0
_RATE = re.compile(r"^\s*([1-9][0-9]*)\s*/\s*([0-9]+(?:\.[0-9]+)?)\s*s\s*$")


def parse_rate(text: str) -> tuple[int, float]:
    """``"150/60s"`` -> ``(150, 60.0)``; anything else is a ``ValueError`` saying the form."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if not match or float(match.group(2)) <= 0:
        raise ValueError(f'{text!r} is not a rate: write "count/Ns", e.g. "150/60s" (150 requests a minute)')
    return int(match.group(1)), float(match.group(2))


class WindowLimiter:
    """At most ``count`` grants in any ``seconds``-long window; ``acquire`` waits for a slot.

    A caller that would wait longer than ``max_wait`` gets ``Retryable`` instead (and takes no
    slot), so a worker thread is never parked for minutes behind a slow API: the delivery is
    rescheduled and the thread serves another destination.
    """

    def __init__(self, count: int, seconds: float, *, clock=time.monotonic, sleep=time.sleep):
        if count < 1 or seconds <= 0:
            raise ValueError("count must be at least 1 and seconds positive")
        self.count = count
        self.seconds = float(seconds)
        self.clock = clock
        self.sleep = sleep
        self._granted: deque[float] = deque(maxlen=count)  # the last `count` slot times, ascending
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, rate: str) -> "WindowLimiter":
        return cls(*parse_rate(rate))

    @property
    def rate(self) -> str:
        return f"{self.count}/{self.seconds:g}s"

    def acquire(self, max_wait: float = 30.0, who: str = "") -> float:
        """Block until a slot is ours; return the seconds waited. ``who`` prefixes the error."""
        with self._lock:
            now = self.clock()
            slot = now
            if len(self._granted) == self.count:
                slot = max(now, self._granted[0] + self.seconds)
            wait = slot - now
            if wait > max_wait:
                raise Retryable(f"{who}rate limit ({self.rate}): next slot in {wait:.1f}s", retry_after=wait)
            self._granted.append(slot)
        if wait:
            self.sleep(wait)
        return wait


def storage_label(url: str) -> str:
    """The storage URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


class StoredWindowLimiter:
    """The same promise as ``WindowLimiter``, counted in a storage every process shares.

    ``limits``' moving window (a list of grant times per key in Redis, changed by one Lua script) grants
    a hit only when fewer than ``count`` were granted in the ``seconds`` before it. When the
    storage cannot be reached the caller gets ``Retryable`` naming it: the delivery waits and
    is tried again, nothing is sent unpaced and nothing is lost.
    """

    def __init__(self, count: int, seconds: float, storage_url: str, key: str, *, sleep=time.sleep):
        from limits import RateLimitItemPerSecond, storage, strategies

        if seconds != int(seconds):
            raise ValueError(f"a rate counted in {storage_label(storage_url)} needs whole seconds, not {seconds:g}s")
        self.count, self.seconds, self.key, self.sleep = count, float(seconds), key, sleep
        self.storage_url = storage_url
        self._item = RateLimitItemPerSecond(count, int(seconds), namespace="sovereign-hub")
        self._limiter = strategies.MovingWindowRateLimiter(_storage(storage_url, storage.storage_from_string))

    @property
    def rate(self) -> str:
        return f"{self.count}/{self.seconds:g}s"

    def acquire(self, max_wait: float = 30.0, who: str = "") -> float:
        """Block until a slot is ours; return the seconds waited. ``who`` prefixes the error."""
        waited = 0.0
        while True:
            try:
                if self._limiter.hit(self._item, self.key):
                    return waited
                reset_at = self._limiter.get_window_stats(self._item, self.key).reset_time
            except Exception as exc:  # noqa: BLE001 - redis raises its own kinds (connection, timeout, ...)
                reason = (f"{who}rate-limit storage {storage_label(self.storage_url)} unreachable "
                          f"({type(exc).__name__}); trying again in {STORAGE_RETRY_SECONDS:g}s")
                log.warning(reason)
                raise Retryable(reason, retry_after=STORAGE_RETRY_SECONDS) from None
            wait = max(0.01, reset_at - time.time())
            if waited + wait > max_wait:
                raise Retryable(f"{who}rate limit ({self.rate}): next slot in {wait:.1f}s", retry_after=wait)
            self.sleep(wait)
            waited += wait


_STORAGES: dict[str, object] = {}
_STORAGES_LOCK = threading.Lock()


def _storage(url: str, build):
    """One ``limits`` storage (one connection pool) per URL and process."""
    with _STORAGES_LOCK:
        if url not in _STORAGES:
            _STORAGES[url] = build(url, socket_timeout=2, socket_connect_timeout=2)
        return _STORAGES[url]


def make_limiter(rate: str, storage_url: str, key: str) -> "WindowLimiter | StoredWindowLimiter":
    """The limiter of one bucket: ``key`` names it in a shared storage (type, destination, bucket)."""
    count, seconds = parse_rate(rate)
    if storage_url == MEMORY:
        return WindowLimiter(count, seconds)
    return StoredWindowLimiter(count, seconds, storage_url, key)
