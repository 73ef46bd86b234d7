"""The Celery backend (``[dispatch] backend = "celery"``): the Celery app and the web node's side.

A message only says "look at delivery X"; the delivery row stays the record of truth and
the worker's claim decides. So a duplicate message (a redelivery after a worker was
killed, a sweep, a replay) is a no-op claim, and a lost one (the broker was down when the
report came in) costs at most two sweep intervals:

- web nodes send one ``deliver`` per new delivery after the commit (``Enqueuer``);
- ``deliver(delivery_id)`` makes one attempt with ``Dispatcher.process_one`` and, after a
  retryable failure, sends itself again with a countdown to the row's ``next_attempt_at``;
- ``sweep`` (every ``sweep_interval`` seconds, from the beat embedded in ``sovereign-hub
  worker``) sends ``deliver`` again for rows due longer than one sweep interval and for rows
  whose lease ran out: lost messages, killed workers, retries too far off for a countdown.

The worker's side (the tasks and ``run_worker``) is ``celery_worker.py``: it builds a Hub,
which this module, used by the Hub, must not.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from . import logs

if TYPE_CHECKING:
    from .config import DispatchConfig

log = logging.getLogger(__name__)

TASK_DELIVER = "sovereign_hub.deliver"
TASK_SWEEP = "sovereign_hub.sweep"
# A countdown message is held, unacknowledged, by a worker until it is due. Redis hands an
# unacknowledged message out again after its visibility timeout (1 hour) and RabbitMQ closes
# a channel that holds one past its consumer timeout (30 minutes), so retries further off
# than this are left to the sweeper, which sends them when the row falls due.
MAX_COUNTDOWN_SECONDS = 600.0
# Sending from a web node must not hold up the webhook's answer when the broker is down.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


class BrokerUnreachable(Exception):
    """The worker cannot connect to ``[dispatch] broker_url`` at start."""


def create_celery(dispatch: DispatchConfig) -> Celery:
    """A Celery app for ``[dispatch]`` (one per Hub, so one process can talk to two brokers)."""
    app = Celery("sovereign_hub", broker=dispatch.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=dispatch.queue,
        task_acks_late=True,  # a killed worker's message is handed out again
        worker_prefetch_multiplier=1,  # with acks_late: a busy worker does not sit on waiting messages
        task_ignore_result=True,
        task_serializer="json", accept_content=["json"],
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        broker_connection_timeout=2,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False,
        beat_schedule={"sweep": {"task": TASK_SWEEP, "schedule": dispatch.sweep_interval,
                                 "options": {"expires": dispatch.sweep_interval}}},
    )
    app.hub_dispatch = dispatch
    return app


def ping(app: Celery) -> None:
    """Connect to the broker once; ``BrokerUnreachable`` (one line, password masked) if that fails."""
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=5)
    except Exception as exc:  # noqa: BLE001 - every transport has its own connection errors
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BrokerUnreachable(f"the broker is not reachable at {maybe_sanitize_url(app.conf.broker_url)}: "
                                f"{reason} (check [dispatch] broker_url)") from None


def send(app: Celery, delivery_ids, *, countdown: float | None = None) -> int:
    """Send one ``deliver`` per id over one connection; returns how many were sent. Raises on a broker error."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for delivery_id in delivery_ids:
            app.send_task(TASK_DELIVER, (delivery_id,), countdown=countdown, producer=producer)
            sent += 1
    return sent


# --- the web node's side ---------------------------------------------------------------------

class Enqueuer:
    """``Dispatcher.on_due`` on web nodes: sends ``deliver`` for committed deliveries. Never raises.

    Called with None (a requeue that did not name its rows), it sends what is due now. After a
    broker error it sends nothing for one sweep interval, so a broker that is down costs each
    webhook nothing; the sweeper delivers what was not sent.
    """

    def __init__(self, dispatch: DispatchConfig, store):
        self.app = create_celery(dispatch)
        self.store = store
        self.limit = dispatch.sweep_limit
        self.pause = dispatch.sweep_interval
        self.enabled = True  # tests switch it off to lose messages on purpose
        self._paused_until = 0.0

    def __call__(self, delivery_ids: list[str] | None) -> None:
        if not self.enabled or time.monotonic() < self._paused_until:
            return
        try:
            ids = self.store.due_ids(self.limit) if delivery_ids is None else delivery_ids
            if ids:
                send(self.app, ids)
        except Exception as exc:  # noqa: BLE001 - committed rows: the sweeper delivers them
            self._paused_until = time.monotonic() + self.pause
            logs.event(log, "celery.send_failed", logging.WARNING, deliveries=len(delivery_ids or []),
                       error=f"{type(exc).__name__}: {exc}", paused_seconds=self.pause)

    def close(self) -> None:
        self.app.close()
