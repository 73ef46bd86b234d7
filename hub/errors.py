"""The exceptions a destination raises, and the one the configuration raises.

A destination never decides when to retry: it says *whether* retrying can help
(``Retryable``) or not (``Permanent``), and the dispatcher applies the schedule.
"""
from __future__ import annotations


class DeliveryError(Exception):
    """Base of the two delivery outcomes that are not success."""

    def __init__(self, reason: str, *, http_status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


class Retryable(DeliveryError):
    """A failure that time may fix: 429, 5xx, timeouts, connection errors.

    ``retry_after`` (seconds) is the earliest the far side wants to hear from us again;
    the dispatcher waits at least that long before the next attempt.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None, http_status: int | None = None):
        super().__init__(reason, http_status=http_status)
        self.retry_after = retry_after


class Deferred(Retryable):
    """Not attempted, and not to be counted as an attempt: the delivery waits ``retry_after``
    seconds and is tried again (the hub's own rate-limit window is full for longer than an
    attempt may wait, or its shared storage cannot be reached).

    A ``Retryable``, so code that handles failures in general treats it as one; the dispatcher
    gives the delivery back instead of recording a failed attempt, so it never goes dead of it.
    """


class Permanent(DeliveryError):
    """A failure retrying cannot fix: bad credentials, a rejected field, a broken template."""


class ConfigError(Exception):
    """A configuration problem; the message names the key and the fix."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class UnknownDestination(KeyError):
    """A destination name that is not configured (and enabled); the message lists the ones that are."""

    def __str__(self) -> str:
        return str(self.args[0])
