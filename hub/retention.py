"""The scheduled prune: ``[privacy] retention_days``, applied by the running hub once across
every process and node (the store's lease, ``hub.jobs``), hourly, in small batches."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from . import jobs, operations

JOB = "prune"
EVERY = timedelta(hours=1)
LEASE = timedelta(minutes=30)


def scheduler_for(hub, *, poll: float = 60.0) -> jobs.Scheduler | None:
    """The thread that prunes every hour; None when no retention is configured."""
    if hub.config.privacy.retention_days is None:
        return None

    def run() -> dict[str, Any]:
        return operations.prune(hub).counts

    return jobs.Scheduler(hub.store, JOB, run, owner=hub.dispatcher.owner, every=EVERY, lease=LEASE, poll=poll)
