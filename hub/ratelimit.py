"""A moving-window limiter per destination and bucket name: in this process, or shared through Redis.

Vendors publish limits as "N requests per T seconds". A token bucket with a burst lets more than
N through in some T-long window (a full bucket plus what refills while it drains); a moving
window never does: a request is granted only when fewer than N were granted in the T seconds
before it. Limits are written ``"count/Ns"`` (``"4/1s"``, ``"150/60s"``, ``"1000/900s"``).

A request sent through ``hold`` keeps its slot from the moment it is granted until its answer
arrives, and the window is counted from the answer: a vendor counts a request when it arrives,
somewhere between the two, and on a loaded machine that moment drifts by tens of milliseconds
from request to request. Counted only when sent, a request that reached the vendor late and one
sent a window after it (on time) could arrive less than a window apart: one more than the limit
in the vendor's window, a 429. Counted from send until answer, every moment the vendor could
have counted each request is inside the hub's window, so the vendor's window never holds more
than ``count`` either. The cost is one round trip per window: ``count`` requests every
``seconds`` plus the latency.

``[ratelimit] storage`` says where the windows are counted: ``"memory://"`` (``WindowLimiter``,
the threads of one process) or a Redis URL (``StoredWindowLimiter``: a sorted set per bucket,
changed by one Lua script on Redis' clock, so every worker process and node shares each bucket).
When Redis cannot be reached, a delivery that needs a slot is not sent and not counted as an
attempt (``Deferred``): it waits and is tried again; the outage is logged once, with the reason.
"""
from __future__ import annotations

import itertools
import logging
import math
import re
import threading
import time
import uuid
from urllib.parse import urlsplit

from .errors import Deferred

log = logging.getLogger(__name__)
MEMORY = "memory://"
#: how long a delivery waits before it is tried again when the shared storage cannot be reached
STORAGE_RETRY_SECONDS = 5.0
#: the longest a held slot counts without its answer: a request timeout of None is waited this long
UNANSWERED_HOLD_SECONDS = 300.0
_RATE = re.compile(r"^\s*([1-9][0-9]*)\s*/\s*([0-9]+(?:\.[0-9]+)?)\s*s\s*$")


def parse_rate(text: str) -> tuple[int, float]:
    """``"150/60s"`` -> ``(150, 60.0)``; anything else is a ``ValueError`` saying the form."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if not match or float(match.group(2)) <= 0:
        raise ValueError(f'{text!r} is not a rate: write "count/Ns", e.g. "150/60s" (150 requests a minute)')
    return int(match.group(1)), float(match.group(2))


class Slot:
    """A granted request, held until ``release`` (its answer arrived, or it failed); a context manager."""

    def __init__(self, release, waited: float):
        self._release, self.waited = release, waited

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()

    def __enter__(self) -> "Slot":
        return self

    def __exit__(self, *_) -> None:
        self.release()


class WindowLimiter:
    """At most ``count`` requests in any ``seconds``-long window, in this process.

    ``hold`` waits for a slot and keeps it until the request's answer (see the module); ``acquire``
    takes a slot for a request that is answered the moment it is granted. A caller that would
    wait longer than ``max_wait`` gets ``Deferred`` instead (and takes no slot), so a worker
    thread is never parked for minutes behind a slow API: the delivery waits, unattempted, and
    the thread serves another destination.
    """

    def __init__(self, count: int, seconds: float, *, clock=time.monotonic, sleep=time.sleep):
        if count < 1 or seconds <= 0:
            raise ValueError("count must be at least 1 and seconds positive")
        self.count = count
        self.seconds = float(seconds)
        self.clock = clock
        self.sleep = sleep
        # each slot that still counts: when it stops counting (infinity while its request is unanswered)
        self._until: dict[int, float] = {}
        self._tokens = itertools.count()
        self._changed = threading.Condition()

    @classmethod
    def parse(cls, rate: str) -> "WindowLimiter":
        return cls(*parse_rate(rate))

    @property
    def rate(self) -> str:
        return f"{self.count}/{self.seconds:g}s"

    def acquire(self, max_wait: float = 30.0, who: str = "") -> float:
        """Block until a slot is ours, counted from the grant; return the seconds waited.
        ``who`` prefixes the error."""
        return self._take(max_wait, who, held=False)[1]

    def hold(self, max_wait: float = 30.0, who: str = "", answer_within: float | None = None) -> Slot:
        """Block until a slot is ours; it counts until the returned ``Slot`` is released, and a
        window after that. (``answer_within`` is for the shared limiter's sake: a slot here is
        released by ``DeliveryContext.send`` whatever happens to the request.)"""
        token, waited = self._take(max_wait, who, held=True)
        return Slot(lambda: self._answered(token), waited)

    def _take(self, max_wait: float, who: str, *, held: bool) -> tuple[int, float]:
        waited = 0.0
        with self._changed:
            while True:
                now = self.clock()
                for token in [t for t, until in self._until.items() if until <= now]:
                    del self._until[token]
                slot = now
                if len(self._until) >= self.count:
                    first_token, first_until = min(self._until.items(), key=lambda item: item[1])
                    if math.isinf(first_until):  # every slot is out, unanswered: the first frees a window after its answer
                        self._refuse_if_longer(waited + self.seconds, max_wait, who, self.seconds)
                        started = self.clock()
                        self._changed.wait(max(0.0, max_wait - waited - self.seconds) or 0.01)
                        waited += self.clock() - started
                        continue
                    slot = first_until
                    self._refuse_if_longer(waited + slot - now, max_wait, who, slot - now)
                    del self._until[first_token]  # its place is ours from `slot` on
                token = next(self._tokens)
                self._until[token] = math.inf if held else slot + self.seconds
                break
        if slot > now:
            self.sleep(slot - now)
        return token, waited + slot - now

    def _refuse_if_longer(self, total: float, max_wait: float, who: str, wait: float) -> None:
        if total > max_wait:
            raise Deferred(f"{who}rate limit ({self.rate}): next slot in {wait:.1f}s", retry_after=wait)

    def _answered(self, token: int) -> None:
        with self._changed:
            self._until[token] = self.clock() + self.seconds
            self._changed.notify_all()


def storage_label(url: str) -> str:
    """The storage URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


# KEYS[1]: the bucket, a sorted set of slot tokens scored by when each stops counting.
# ARGV: count, seconds, how long the new slot counts (for an unanswered one: until it must have
# been answered, plus a window), its token. Returns {1} when granted, else {0, seconds until a
# slot may be free}: the first to stop counting, or a window from now (a slot answered now).
_TAKE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5: a write after TIME
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local count, seconds, counts_for = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now))
if redis.call('ZCARD', KEYS[1]) < count then
  redis.call('ZADD', KEYS[1], string.format('%.6f', now + counts_for), ARGV[4])
  if redis.call('PTTL', KEYS[1]) < counts_for * 1000 then
    redis.call('PEXPIRE', KEYS[1], math.ceil(counts_for * 1000) + 1000)
  end
  return {1}
end
local first = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
return {0, string.format('%.6f', math.min(first, now + seconds) - now)}
"""
# KEYS[1]: the bucket; ARGV: seconds, the token. The slot's answer arrived: it counts a window from now.
_ANSWERED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local seconds = tonumber(ARGV[1])
if redis.call('ZADD', KEYS[1], 'XX', 'CH', string.format('%.6f', now + seconds), ARGV[2]) == 1
   and redis.call('PTTL', KEYS[1]) < seconds * 1000 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(seconds * 1000) + 1000)
end
return 1
"""


class SharedStorage:
    """One Redis connection pool per URL and process, and whether it is reachable.

    A failed call raises ``Deferred`` naming the storage (password masked) and the reason. The
    first failure of an outage is logged; for ``STORAGE_RETRY_SECONDS`` after it, calls fail at
    once without trying (a blackholed host would hold every thread for the connect timeout);
    the first success after it logs that the storage is back.
    """

    def __init__(self, url: str):
        import redis

        self.url, self.label = url, storage_label(url)
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._errors = redis.RedisError
        self.take = self._redis.register_script(_TAKE)
        self.answered = self._redis.register_script(_ANSWERED)
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._reason = ""
        self._next_try = 0.0

    def run(self, script, keys: list[str], args: list, who: str):
        with self._lock:
            if self._down_since is not None and time.monotonic() < self._next_try:
                raise Deferred(f"{who}{self._reason}", retry_after=STORAGE_RETRY_SECONDS)
        try:
            result = script(keys=keys, args=args)
        except self._errors as exc:
            self._failed(exc)
            raise Deferred(f"{who}{self._reason}", retry_after=STORAGE_RETRY_SECONDS) from None
        with self._lock:
            if self._down_since is not None:
                log.warning("rate-limit storage %s is reachable again (after %.0fs); deliveries resume",
                            self.label, time.monotonic() - self._down_since)
                self._down_since = None
        return result

    def _failed(self, exc: Exception) -> None:
        detail = (str(exc).strip().splitlines() or [""])[0]
        password = urlsplit(self.url).password
        if password:
            detail = detail.replace(password, "***")
        unreachable = f"rate-limit storage {self.label} unreachable ({type(exc).__name__}{': ' + detail if detail else ''})"
        with self._lock:
            self._next_try = time.monotonic() + STORAGE_RETRY_SECONDS
            self._reason = f"{unreachable}; not sent, trying again in {STORAGE_RETRY_SECONDS:g}s"
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("%s: deliveries that need a rate-limit slot wait, unattempted, until it is back",
                            unreachable)


class StoredWindowLimiter:
    """The same promise as ``WindowLimiter``, counted in Redis, which every process shares.

    Redis' clock stamps every slot, so nodes whose clocks differ still share one window.
    """

    def __init__(self, count: int, seconds: float, storage_url: str, key: str, *, sleep=time.sleep):
        self.count, self.seconds, self.sleep = count, float(seconds), sleep
        self.key = f"sovereign-hub:window:{key}"
        self.storage_url = storage_url
        self._storage = _storage(storage_url)

    @property
    def rate(self) -> str:
        return f"{self.count}/{self.seconds:g}s"

    def acquire(self, max_wait: float = 30.0, who: str = "") -> float:
        """Block until a slot is ours, counted from the grant; return the seconds waited."""
        return self._take(max_wait, who, self.seconds)[1]

    def hold(self, max_wait: float = 30.0, who: str = "", answer_within: float | None = None) -> Slot:
        """Block until a slot is ours; it counts until the ``Slot`` is released, and a window after.

        ``answer_within``: the request's timeout. A process killed before releasing leaves its
        slot counting until then plus a window (``UNANSWERED_HOLD_SECONDS`` without a timeout).
        """
        unanswered = UNANSWERED_HOLD_SECONDS if answer_within is None else answer_within
        token, waited = self._take(max_wait, who, unanswered + self.seconds)
        return Slot(lambda: self._answered(token, who), waited)

    def _take(self, max_wait: float, who: str, counts_for: float) -> tuple[str, float]:
        token = uuid.uuid4().hex
        waited = 0.0
        while True:
            granted = self._storage.run(self._storage.take, [self.key],
                                        [self.count, self.seconds, counts_for, token], who)
            if granted[0] == 1:
                return token, waited
            wait = max(0.005, float(granted[1]))
            if waited + wait > max_wait:
                raise Deferred(f"{who}rate limit ({self.rate}): next slot in {wait:.1f}s", retry_after=wait)
            self.sleep(wait)
            waited += wait

    def _answered(self, token: str, who: str) -> None:
        """Count the slot from now. Redis gone meanwhile: it counts until its unanswered hold runs out."""
        try:
            self._storage.run(self._storage.answered, [self.key], [self.seconds, token], who)
        except Deferred:
            pass  # the request went out and its answer is in: this delivery goes on; the outage is logged


_STORAGES: dict[str, SharedStorage] = {}
_STORAGES_LOCK = threading.Lock()


def _storage(url: str) -> SharedStorage:
    with _STORAGES_LOCK:
        if url not in _STORAGES:
            _STORAGES[url] = SharedStorage(url)
        return _STORAGES[url]


def make_limiter(rate: str, storage_url: str, key: str) -> "WindowLimiter | StoredWindowLimiter":
    """The limiter of one bucket: ``key`` names it in a shared storage (type, destination, bucket)."""
    count, seconds = parse_rate(rate)
    if storage_url == MEMORY:
        return WindowLimiter(count, seconds)
    return StoredWindowLimiter(count, seconds, storage_url, key)
