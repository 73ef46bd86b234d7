"""What the hub shows of a delivery outside the store: to plugins, the API, the dashboard, the CLI.

The store keeps its own row type (with the lease); these records are the public, read-only
view of it, and plain Python (no SQLAlchemy), so ``import hub`` stays light.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AttemptRecord:
    """One try of a delivery: when, how long, the outcome (succeeded | retry | dead), the HTTP
    status of the last request, and the error (secrets redacted)."""

    number: int
    started_at: datetime
    duration_ms: float
    outcome: str
    http_status: int | None
    error: str | None


@dataclass(frozen=True)
class DeliveryRecord:
    """One report's delivery to one destination, as ``delivery_finished`` and ``Hub.deliveries`` give it.

    ``status`` is pending | running | succeeded | dead; ``next_attempt_at`` is None once it is
    dead; ``state`` is what the destination saved between attempts (the ids it created).
    """

    id: str
    report_id: str
    destination: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    lease_until: datetime | None
    last_error: str | None
    result: str | None
    state: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DeliveryDetail(DeliveryRecord):
    """A delivery with every attempt, oldest first (one delivery's or one report's view)."""

    attempt_log: tuple[AttemptRecord, ...] = field(default=())
