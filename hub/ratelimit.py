"""A token bucket per destination and bucket name, shared by the threads of one process."""
from __future__ import annotations

import threading
import time

from .errors import Retryable


class TokenBucket:
    """``rate`` tokens a second, up to ``burst`` saved; ``acquire`` waits for one.

    A caller that would wait longer than ``max_wait`` gets ``Retryable`` instead, so a
    worker thread is never parked for minutes behind a slow API: the delivery is
    rescheduled and the thread serves another destination.
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take a token (possibly going into debt) and return how long to wait for it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def _refund(self) -> None:
        with self._lock:
            self._tokens += 1

    def acquire(self, max_wait: float = 30.0, who: str = "") -> float:
        """Block until a token is ours; return the seconds waited. ``who`` prefixes the error."""
        wait = self._reserve()
        if wait > max_wait:
            self._refund()
            raise Retryable(f"{who}rate limit: next slot in {wait:.1f}s", retry_after=wait)
        if wait:
            self._sleep(wait)
        return wait
