"""The Celery backend (``[dispatch] backend = "celery"``): the Celery app and its tasks.

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
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

from celery import Celery, shared_task, signals
from kombu.utils.url import maybe_sanitize_url

from . import logs
from .store import PENDING, utcnow

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


def create_celery(dispatch: dict) -> Celery:
    """A Celery app for ``[dispatch]`` (one per Hub, so one process can talk to two brokers)."""
    app = Celery("sovereign_hub", broker=dispatch["broker_url"], set_as_current=False)
    app.conf.update(
        task_default_queue=dispatch["queue"],
        task_acks_late=True,  # a killed worker's message is handed out again
        worker_prefetch_multiplier=1,  # with acks_late: a busy worker does not sit on waiting messages
        task_ignore_result=True,
        task_serializer="json", accept_content=["json"],
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        broker_connection_timeout=2,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False,
        beat_schedule={"sweep": {"task": TASK_SWEEP, "schedule": dispatch["sweep_interval"],
                                 "options": {"expires": dispatch["sweep_interval"]}}},
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


# --- the worker's side -------------------------------------------------------------------------

_hub = None
_hub_lock = threading.Lock()


def worker_hub():
    """This worker process's Hub, loaded once from SOVEREIGN_HUB_CONFIG (``sovereign-hub worker``
    hands over the one it loaded instead)."""
    global _hub
    with _hub_lock:
        if _hub is None:
            from .core import Hub

            _hub = Hub.from_path(os.environ["SOVEREIGN_HUB_CONFIG"])
        return _hub


@shared_task(name=TASK_DELIVER, bind=True, acks_late=True, ignore_result=True)
def deliver(self, delivery_id: str) -> str:
    """One attempt at one delivery, if it is due; a retry is sent again for its due time."""
    hub = worker_hub()
    delivery = hub.dispatcher.process_one(delivery_id)
    if delivery is None:
        return "not due"  # succeeded, dead, running elsewhere or not yet due: a duplicate message
    if delivery.status == PENDING:
        wait = max(0.0, (delivery.next_attempt_at - utcnow()).total_seconds())
        if wait <= MAX_COUNTDOWN_SECONDS:
            try:
                send(self.app, [delivery_id], countdown=wait)
            except Exception as exc:  # noqa: BLE001 - the row is saved: the sweeper sends it when due
                logs.event(log, "celery.send_failed", logging.WARNING, delivery_id=delivery_id, error=str(exc))
    return delivery.status


@shared_task(name=TASK_SWEEP, bind=True, ignore_result=True)
def sweep(self) -> int:
    """Send ``deliver`` again for deliveries that look forgotten (at most ``sweep_limit``)."""
    dispatch = self.app.hub_dispatch
    ids = worker_hub().store.due_ids(dispatch["sweep_limit"], overdue_seconds=dispatch["sweep_interval"])
    if ids:
        send(self.app, ids)
        logs.event(log, "celery.swept", deliveries=len(ids))
    return len(ids)


def run_worker(hub, *, concurrency: int, beat: bool = True) -> int:
    """Run a Celery worker (threads, one Hub) until SIGTERM/SIGINT; returns its exit code.

    ``beat`` embeds the sweeper's schedule (in memory: no schedule file is written). On
    SIGTERM/SIGINT, deliveries in flight get ``shutdown_grace_seconds`` to finish, as with the
    embedded dispatcher; then their leases are given back and the process exits, leaving their
    messages unacknowledged (the broker hands them out again, the sweeper sends them anyway).
    """
    global _hub
    _hub = hub
    app = create_celery(hub.config.dispatch)
    ping(app)  # a wrong URL or password is one line at start, not a retry loop
    worker = app.Worker(
        hostname=f"sovereign-hub-{os.getpid()}@{socket.gethostname()}", pool="threads",
        concurrency=concurrency, beat=beat, scheduler="celery.beat:Scheduler",
        loglevel=hub.config.logging["level"], quiet=True, without_gossip=True, without_mingle=True)
    for chatty in ("celery.worker.strategy", "celery.app.trace", "celery.beat"):
        logging.getLogger(chatty).setLevel(logging.WARNING)  # hub.dispatch logs each attempt already
    logs.event(log, "celery.worker_started", queue=hub.config.dispatch["queue"], concurrency=concurrency,
               sweeper=beat, owner=hub.dispatcher.owner)
    grace = hub.config.dispatch["shutdown_grace_seconds"]
    signalled = []

    def give_up() -> None:
        released = hub.store.release(hub.dispatcher.owner)
        logs.event(log, "celery.worker_stopped", released=released, grace_exceeded=True)
        os._exit(0)

    def shutting_down(sig=None, how=None, **_) -> None:
        signalled.append(sig)
        if how == "Warm":
            timer = threading.Timer(grace, give_up)
            timer.daemon = True
            timer.start()

    signals.worker_shutting_down.connect(shutting_down, weak=False)
    worker.start()
    released = hub.store.release(hub.dispatcher.owner)
    logs.event(log, "celery.worker_stopped", released=released)
    # Celery exits 1 after SIGINT; a Ctrl-C or SIGINT-sending supervisor is a clean stop here, as with embedded
    return 0 if signalled and signalled[0] in ("SIGINT", "SIGTERM") else (worker.exitcode or 0)


# --- the web node's side ---------------------------------------------------------------------

class Enqueuer:
    """``Dispatcher.on_due`` on web nodes: sends ``deliver`` for committed deliveries. Never raises.

    Called with None (a requeue that did not name its rows), it sends what is due now. After a
    broker error it sends nothing for one sweep interval, so a broker that is down costs each
    webhook nothing; the sweeper delivers what was not sent.
    """

    def __init__(self, dispatch: dict, store):
        self.app = create_celery(dispatch)
        self.store = store
        self.limit = dispatch["sweep_limit"]
        self.pause = dispatch["sweep_interval"]
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
