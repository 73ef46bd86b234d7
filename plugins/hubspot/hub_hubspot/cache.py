"""What a destination keeps between deliveries and lookups for a while: portal data that changes
rarely (property definitions, owner names, deal stages), shared by the destination's threads."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


class ExpiringCache:
    """``get(key, fetch)``: the value fetched for ``key`` less than ``ttl`` seconds ago, else a new
    one (two threads missing at once may both fetch; the later answer is kept)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, fetch: Callable[[], Any]) -> Any:
        with self._lock:
            cached = self._values.get(key)
            if cached is not None and self.clock() - cached[0] < self.ttl:
                return cached[1]
        value = fetch()
        with self._lock:
            self._values[key] = (self.clock(), value)
        return value
