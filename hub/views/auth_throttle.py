"""Failed logins and bad admin tokens, throttled per client address and logged as ``auth.failed``.

An address may fail ``FREE_FAILURES`` times; after that each further failure doubles the wait
before it may try again (1 s, 2 s, 4 s ... up to ``MAX_WAIT_SECONDS``), and a try during the
wait is answered 429 with ``Retry-After`` without even checking the token. A success clears
the address. The record is per process (each gunicorn worker keeps its own), which bounds an
attacker at ``workers`` times the rate: enough to turn 200 guesses a second into a handful a
minute. The log line names the address and the reason, never the token that was sent.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from flask import current_app, request

from .. import logs
from .errors import error_response

log = logging.getLogger(__name__)

FREE_FAILURES = 5
MAX_WAIT_SECONDS = 300.0
FORGET_AFTER_SECONDS = 900.0
MAX_ADDRESSES = 10_000


@dataclass
class _Failures:
    count: int
    last: float


class AuthThrottle:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def wait_for(self, address: str) -> float:
        """Seconds ``address`` must still wait before its next try (0: it may try now)."""
        with self._lock:
            entry = self._failures.get(address)
            if entry is None or entry.count < FREE_FAILURES:
                return 0.0
            now = self.clock()
            if now - entry.last > FORGET_AFTER_SECONDS:
                del self._failures[address]
                return 0.0
            wait = min(2.0 ** (entry.count - FREE_FAILURES), MAX_WAIT_SECONDS)
            return max(0.0, entry.last + wait - now)

    def failed(self, address: str) -> None:
        with self._lock:
            entry = self._failures.pop(address, None) or _Failures(0, 0.0)
            entry.count += 1
            entry.last = self.clock()
            self._failures[address] = entry  # most recent last: the oldest go first when full
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


def _throttle() -> AuthThrottle:
    """This app's record (one per app, so every test's app starts clean)."""
    return current_app.extensions.setdefault("auth_throttle", AuthThrottle())


def client_address() -> str:
    return request.remote_addr or "unknown"


def retry_after() -> int | None:
    """Whole seconds this request's address must wait, or None when it may try."""
    wait = _throttle().wait_for(client_address())
    return math.ceil(wait) if wait > 0 else None


def record_failure(reason: str) -> None:
    address = client_address()
    _throttle().failed(address)
    logs.event(log, "auth.failed", logging.WARNING, client=address, path=request.path, reason=reason)


def too_many_tries(seconds: int):
    """The 429 answer (JSON error form) with its ``Retry-After``."""
    response = error_response(429, "too_many_attempts", f"Too many failed attempts from this address; "
                              f"try again in {seconds} s.", {"retry_after_seconds": seconds})
    response[0].headers["Retry-After"] = str(seconds)
    return response


def record_success() -> None:
    _throttle().succeeded(client_address())
