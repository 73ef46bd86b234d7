"""The Celery worker's side: the ``deliver`` and ``sweep`` tasks and ``run_worker``.

``celery_app.py`` says how the backend works; this module holds what runs in a worker
process (``sovereign-hub worker`` with ``backend = "celery"``), where a Hub is built.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from celery import shared_task, signals

from . import logs
from .celery_app import MAX_COUNTDOWN_SECONDS, TASK_DELIVER, TASK_SWEEP, create_celery, ping, send
from .core import Hub
from .store import PENDING, utcnow

log = logging.getLogger(__name__)

_hub = None
_hub_lock = threading.Lock()


def worker_hub(app):
    """This worker process's Hub, loaded once from SOVEREIGN_HUB_CONFIG with ``app``'s
    concurrency shared among the destinations (``sovereign-hub worker`` hands over the one it
    loaded instead)."""
    global _hub
    with _hub_lock:
        if _hub is None:
            _hub = Hub.from_path(os.environ["SOVEREIGN_HUB_CONFIG"], wait_for_schema=True)
            _hub.dispatcher.share_threads(app.conf.worker_concurrency or os.cpu_count() or 1)
        return _hub


@shared_task(name=TASK_DELIVER, bind=True, acks_late=True, ignore_result=True)
def deliver(self, delivery_id: str) -> list[str]:
    """One attempt at one delivery, if it is due and its destination has a thread free here (then
    its next due ones: ``Dispatcher.process_in_turn``); each retry is sent again for its due time."""
    attempted = worker_hub(self.app).dispatcher.process_in_turn(delivery_id)
    for delivery in attempted:
        if delivery.status != PENDING:
            continue
        wait = max(0.0, (delivery.next_attempt_at - utcnow()).total_seconds())
        if wait <= MAX_COUNTDOWN_SECONDS:
            try:
                send(self.app, [delivery.id], countdown=wait)
            except Exception as exc:  # noqa: BLE001 - the row is saved: the sweeper sends it when due
                logs.event(log, "celery.send_failed", logging.WARNING, delivery_id=delivery.id, error=str(exc))
    # [] is a duplicate message (succeeded, dead, running elsewhere, not due) or a destination whose share is taken
    return [delivery.status for delivery in attempted]


@shared_task(name=TASK_SWEEP, bind=True, ignore_result=True)
def sweep(self) -> int:
    """Send ``deliver`` again for deliveries that look forgotten (at most ``sweep_limit``)."""
    dispatch = self.app.hub_dispatch
    ids = worker_hub(self.app).store.due_ids(dispatch.sweep_limit, overdue_seconds=dispatch.sweep_interval)
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
    hub.dispatcher.share_threads(concurrency)  # each destination's max_in_flight of these threads
    app = create_celery(hub.config.dispatch)
    ping(app)  # a wrong URL or password is one line at start, not a retry loop
    worker = app.Worker(
        hostname=f"sovereign-hub-{os.getpid()}@{socket.gethostname()}", pool="threads",
        concurrency=concurrency, beat=beat, scheduler="celery.beat:Scheduler",
        loglevel=hub.config.logging.level, quiet=True, without_gossip=True, without_mingle=True)
    for chatty in ("celery.worker.strategy", "celery.app.trace", "celery.beat"):
        logging.getLogger(chatty).setLevel(logging.WARNING)  # hub.dispatch logs each attempt already
    logs.event(log, "celery.worker_started", queue=hub.config.dispatch.queue, concurrency=concurrency,
               sweeper=beat, owner=hub.dispatcher.owner)
    grace = hub.config.dispatch.shutdown_grace_seconds
    signalled = []

    def give_up() -> None:
        released = hub.store.release(hub.dispatcher.owner)
        logs.event(log, "celery.worker_stopped", released=released, grace_exceeded=True)
        os._exit(0)

    def shutting_down(sig=None, how=None, **_) -> None:
        signalled.append(sig)
        hub.dispatcher.stop_claiming()  # a thread going through a destination's due deliveries stops after its own
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
