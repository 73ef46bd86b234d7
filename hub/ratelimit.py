"""A moving-window limiter per destination and bucket name, shared by the threads of one process.

Vendors publish limits as "N requests per T seconds". A token bucket with a burst lets more than
N through in some T-long window (a full bucket plus what refills while it drains); a moving
window never does: a request is granted only when fewer than N were granted in the T seconds
before it. Limits are written ``"count/Ns"`` (``"4/1s"``, ``"150/60s"``, ``"1000/900s"``).
"""
from __future__ import annotations

import re
import threading
import time
from collections import deque

from .errors import Retryable

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
