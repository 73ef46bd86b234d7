"""``[dispatch] backend = "celery"`` end to end: a real broker (Redis and RabbitMQ), real
``sovereign-hub worker`` processes, PostgreSQL as the store.

Reports are POSTed to an app built from the same configuration file (Flask's test client);
the worker delivers them to a jsonl file and to a webhook receiver on 127.0.0.1. A broker that
does not answer skips its cases with the reason, unless CI is set: there they fail.
Each session uses its own Redis database number and its own queue name, purged at the end.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from hub.store import SUCCEEDED, Store, utcnow
from hub.testing import (TEST_SECRET, WebhookReceiver, kill_process_group, load_sample, migrated, signed_headers,
                         start_hub_process, wait_until)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals and process groups")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_HOST, REDIS_PORT = os.environ.get("HUB_TEST_REDIS", "127.0.0.1:6379").split(":")
AMQP_URL = os.environ.get("HUB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
SESSION = uuid.uuid4().hex[:8]
QUEUE = f"sovereign-hub-test-{os.getpid()}-{SESSION}"
DEADLINE = 20  # seconds for every delivery of one test to succeed
ADMIN_TOKEN = "celery-test-admin-token-0123456789"


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI is set: {reason}")
    pytest.skip(reason)


# --- the brokers: one Redis database and one queue name per session ---------------------------------

@pytest.fixture(scope="session")
def redis_url():
    try:
        import redis
    except ImportError:
        unavailable('redis is not installed (pip install "sovereign-hub[celery]")')
    marker = "sovereign-hub-test:session"
    for db in range(15, 0, -1):
        try:
            client = redis.Redis(host=REDIS_HOST, port=int(REDIS_PORT), db=db, socket_connect_timeout=2)
            taken = client.set(marker, SESSION, nx=True, ex=3600) and client.dbsize() == 1
        except redis.RedisError as exc:
            unavailable(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT} ({exc})")
        if taken:
            break
        if client.get(marker) == SESSION.encode():
            client.delete(marker)  # the database had other keys: not ours to use
    else:
        unavailable("no empty Redis database (1-15) to use for this session")
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def amqp_url():
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        unavailable(f"RabbitMQ is not reachable at {AMQP_URL} ({exc})")
    try:
        yield AMQP_URL
    finally:
        with Connection(AMQP_URL, connect_timeout=2) as conn:
            channel = conn.default_channel
            channel.queue_delete(QUEUE)
            channel.exchange_delete(QUEUE)  # Celery declares a direct exchange named after the queue


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request):
    pytest.importorskip("celery", reason='celery is not installed (pip install "sovereign-hub[celery]")')
    return request.getfixturevalue("redis_url" if request.param == "redis" else "amqp_url")


# --- helpers ---------------------------------------------------------------------------------------

def write_config(path: Path, *, store_url: str, broker_url: str, hook_url: str, jsonl: Path) -> Path:
    q = json.dumps  # a JSON string is a valid TOML basic string
    path.write_text("\n".join([
        "[store]", f"url = {q(store_url)}",
        "[dispatch]", 'backend = "celery"', f"broker_url = {q(broker_url)}", f"queue = {q(QUEUE)}",
        "workers = 2", "retry_delays = [0.5]", "max_attempts = 5", "jitter = 0", "lease_seconds = 3",
        "sweep_interval = 1", "shutdown_grace_seconds = 2",
        "[sources.hms]", f"secret = {q(TEST_SECRET)}",
        "[admin]", f"token = {q(ADMIN_TOKEN)}",
        "[logging]", 'level = "INFO"',
        "[destinations.hook]", 'type = "webhook"', f"url = {q(hook_url)}", "timeout_seconds = 10",
        "[destinations.file]", 'type = "jsonl"', f"path = {q(str(jsonl))}",
    ]) + "\n")
    return path


def logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-25:])
                     for p in sorted(tmp_path.glob("*.log")))


def post_reports(client, n: int, *, callers: bool = False) -> list[str]:
    """``n`` distinct signed reports through the receiver; their report ids (each answered 202).
    With ``callers`` each comes from its own number (else all from the sample's: one in turn)."""
    ids = []
    for k in range(n):
        payload = copy.deepcopy(load_sample("end-of-call-report-full"))
        payload["message"]["call"]["id"] = f"celery-{uuid.uuid4()}"
        if callers:
            payload["message"]["customer"] = {"number": f"+3161300{k:04d}"}
        body = json.dumps(payload).encode()
        response = client.post("/webhooks/hms", data=body, headers=signed_headers(body))
        assert response.status_code == 202, response.get_data(as_text=True)
        ids.append(response.get_json()["report_id"])
    return ids


class Setup:
    """A store, a receiver, a config file and an app over it; workers started on demand."""

    def __init__(self, tmp_path: Path, store_url: str, broker_url: str, receiver: WebhookReceiver):
        from hub.app import create_app

        self.tmp_path = tmp_path
        self.jsonl = tmp_path / "calls.jsonl"
        self.receiver = receiver
        self.config = write_config(tmp_path / "hub.toml", store_url=store_url, broker_url=broker_url,
                                   hook_url=receiver.url, jsonl=self.jsonl)
        self.app = create_app(str(self.config))
        self.client = self.app.test_client()
        self.store = Store(store_url)
        self.workers: list[subprocess.Popen] = []

    def worker(self) -> subprocess.Popen:
        proc = start_hub_process("worker", self.config, self.tmp_path, f"worker-{len(self.workers)}.log")
        self.workers.append(proc)
        return proc

    def deliveries(self, report_ids):
        wanted = set(report_ids)
        return [d for d in self.store.list_deliveries(limit=None) if d.report_id in wanted]

    def all_succeeded(self, report_ids) -> bool:
        rows = self.deliveries(report_ids)
        return len(rows) == 2 * len(report_ids) and {d.status for d in rows} == {SUCCEEDED}

    def in_jsonl(self) -> Counter:
        if not self.jsonl.exists():
            return Counter()
        return Counter(json.loads(line)["id"] for line in self.jsonl.read_text().splitlines() if line.strip())

    def close(self):
        for proc in self.workers:
            kill_process_group(proc)
        self.app.hub.close()
        self.store.close()
        self.receiver.close()


@pytest.fixture
def setup(tmp_path, pg_store_url, broker_url, request):
    options = dict(getattr(request, "param", {}))
    if options.pop("gate", False):  # held requests are answered 503: their sender was killed meanwhile
        options.update(hold=threading.Event(), held_status=503)
    receiver = WebhookReceiver(**options).start()
    s = Setup(tmp_path, pg_store_url, broker_url, receiver)
    yield s
    s.close()


# --- the tests -------------------------------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.parametrize("setup", [{"fail_first": True}], indirect=True)
def test_a_worker_delivers_every_report_and_retries_a_503(setup):
    setup.worker()
    report_ids = post_reports(setup.client, 3)

    assert wait_until(lambda: setup.all_succeeded(report_ids), DEADLINE), (
        f"{[(d.destination, d.status, d.attempts, d.last_error) for d in setup.deliveries(report_ids)]}\n"
        f"{logs(setup.tmp_path)}")
    hooks = [d for d in setup.deliveries(report_ids) if d.destination == "hook"]
    assert {d.attempts for d in hooks} == {2}, "503 once, then delivered by the countdown retry"
    assert setup.receiver.succeeded() == Counter({d.id: 1 for d in hooks})
    assert setup.in_jsonl() == Counter({r: 1 for r in report_ids})
    for d in hooks:
        first, second = setup.store.list_attempts(d.id)
        assert (first["outcome"], second["outcome"]) == ("retry", "succeeded")
        gap = (second["started_at"] - first["started_at"]).total_seconds()
        # retry_delays = [0.5]: sent again with a countdown, not left to the sweeper (due > 1 s)
        assert 0.5 <= gap < 1.4, f"the retry came {gap:.2f}s after the first attempt"


@pytest.mark.postgres
def test_a_delivery_whose_message_was_lost_is_delivered_by_the_sweeper(setup, tmp_path):
    from hub.app import create_app

    setup.worker()
    setup.app.hub.enqueuer.enabled = False  # committed, never sent
    lost = post_reports(setup.client, 2)
    # a web node whose broker URL is wrong: the 2xx is not held up, the rows are committed
    wrong = tmp_path / "wrong-broker.toml"
    text = setup.config.read_text()
    broker = next(line for line in text.splitlines() if line.startswith("broker_url"))
    dead_url = "redis://127.0.0.1:1/0" if "redis" in broker else "amqp://guest:guest@127.0.0.1:1//"
    wrong.write_text(text.replace(broker, f"broker_url = {json.dumps(dead_url)}"))
    app = create_app(str(wrong))
    try:
        started = time.monotonic()
        lost += post_reports(app.test_client(), 2)
        took = time.monotonic() - started
    finally:
        app.hub.close()
    assert took < 3, f"two webhooks took {took:.1f}s with the broker down"

    assert wait_until(lambda: setup.all_succeeded(lost), DEADLINE), logs(setup.tmp_path)
    hooks = [d for d in setup.deliveries(lost) if d.destination == "hook"]
    assert setup.receiver.succeeded() == Counter({d.id: 1 for d in hooks})
    assert setup.in_jsonl() == Counter({r: 1 for r in lost})


@pytest.mark.postgres
@pytest.mark.parametrize("setup", [{"gate": True}], indirect=True)
def test_a_worker_killed_mid_delivery_loses_nothing_and_delivers_nothing_twice(setup):
    first = setup.worker()
    report_ids = post_reports(setup.client, 5)
    # the worker's threads are now inside webhook requests the receiver holds open
    assert wait_until(lambda: len(setup.receiver.started) >= 1, timeout=15), logs(setup.tmp_path)
    kill_process_group(first)
    setup.receiver.hold.set()  # the held requests are answered 503, to a worker that is gone

    setup.worker()
    assert wait_until(lambda: setup.all_succeeded(report_ids), DEADLINE), (
        f"{[(d.destination, d.status, d.attempts) for d in setup.deliveries(report_ids)]}\n"
        f"{logs(setup.tmp_path)}")
    hooks = [d for d in setup.deliveries(report_ids) if d.destination == "hook"]
    assert setup.receiver.succeeded() == Counter({d.id: 1 for d in hooks}), "each webhook-id succeeded once"
    assert set(setup.in_jsonl()) == set(report_ids)
    cut = [d for d in hooks if d.attempts > 1]
    assert cut, "some delivery was cut short by the kill"
    for d in cut:  # the killed attempt left its claim (attempts) but no outcome
        assert [a["outcome"] for a in setup.store.list_attempts(d.id)] == ["succeeded"]


@pytest.mark.postgres
@pytest.mark.parametrize("setup", [{"gate": True}], indirect=True)
def test_sigterm_gives_in_flight_deliveries_the_grace_period_then_releases_them(setup):
    worker = setup.worker()
    report_ids = post_reports(setup.client, 1)
    assert wait_until(lambda: setup.receiver.started, timeout=15), logs(setup.tmp_path)
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(15)
    took = time.monotonic() - signalled

    assert code == 0, logs(setup.tmp_path)
    assert 2 <= took < 6, f"stopped {took:.1f}s after SIGTERM with shutdown_grace_seconds = 2"
    hook = next(d for d in setup.deliveries(report_ids) if d.destination == "hook")
    assert (hook.status, hook.attempts, hook.lease_owner) == ("pending", 0, None), "given back, not left to expire"
    setup.receiver.hold.set()
    setup.worker()
    assert wait_until(lambda: setup.all_succeeded(report_ids), DEADLINE), logs(setup.tmp_path)
    assert setup.receiver.succeeded() == Counter({hook.id: 1})


class Overlap:
    """A receiver's ``delay``: each request takes ``seconds``; ``peak`` is the most at once."""

    def __init__(self, seconds: float):
        self.seconds, self.now, self.peak, self.lock = seconds, 0, 0, threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1
        return 0.0


@pytest.mark.postgres
@pytest.mark.parametrize("setup", [{"delay": Overlap(1.0)}], indirect=True)
def test_a_slow_destination_holds_only_its_share_of_the_worker_threads(setup):
    # [dispatch] workers = 2 and two destinations: each may hold one thread (its fair share)
    report_ids = post_reports(setup.client, 6, callers=True)  # queued before the worker starts: 12 messages
    setup.worker()
    assert wait_until(lambda: setup.in_jsonl() == Counter({r: 1 for r in report_ids}), DEADLINE), logs(setup.tmp_path)
    hooks_done = sum(setup.receiver.succeeded().values())
    assert hooks_done <= 3, f"the fast destination waited behind the slow one ({hooks_done} of 6 slow ones done)"
    assert wait_until(lambda: setup.all_succeeded(report_ids), DEADLINE), logs(setup.tmp_path)
    assert setup.receiver.delay.peak == 1, "the slow destination held more than its one thread"
    hooks = [d for d in setup.deliveries(report_ids) if d.destination == "hook"]
    assert setup.receiver.succeeded() == Counter({d.id: 1 for d in hooks})
    assert {d.attempts for d in hooks} == {1}, "a message that found the share taken cost no attempt"


@pytest.mark.postgres
def test_a_replay_through_the_api_is_sent_to_the_workers(setup):
    setup.worker()
    report_id, = post_reports(setup.client, 1)
    assert wait_until(lambda: setup.all_succeeded([report_id]), DEADLINE), logs(setup.tmp_path)

    replayed_at = utcnow()
    response = setup.client.post(f"/api/reports/{report_id}/replay", json={},
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert wait_until(lambda: setup.all_succeeded([report_id])
                      and sum(setup.receiver.succeeded().values()) == 2, timeout=5), logs(setup.tmp_path)
    hook = next(d for d in setup.deliveries([report_id]) if d.destination == "hook")
    replay = max(a["started_at"] for a in setup.store.list_attempts(hook.id))
    # sent at once, not by the sweeper (which waits until a delivery has been due for 1 s)
    assert 0 < (replay - replayed_at).total_seconds() < 0.9
    assert setup.receiver.succeeded() == Counter({hook.id: 2}), "replayed under the same webhook-id"
    assert setup.in_jsonl() == Counter({report_id: 1}), "the jsonl line is kept in state: not written twice"


# --- configuration and start-up errors (no broker needed) --------------------------------------------

def celery_config(**dispatch) -> dict:
    return {"dispatch": {"backend": "celery", **dispatch}, "sources": {"hms": {"secret": TEST_SECRET}}}


@pytest.mark.parametrize("dispatch, expected", [
    ({}, 'dispatch.broker_url: required when backend = "celery": set broker_url = "redis://'),
    ({"broker_url": "http://127.0.0.1:6379"}, "dispatch.broker_url: not a broker URL: use redis://"),
    ({"broker_url": "redis://127.0.0.1:6379/0", "queue": "a queue"}, "dispatch.queue: letters, digits"),
    ({"broker_url": "redis://127.0.0.1:6379/0", "sweep_interval": 0}, "dispatch.sweep_interval:"),
])
def test_celery_settings_are_validated_naming_the_key(dispatch, expected):
    from hub.config import ConfigProblems, load_config
    from hub.plugins import collect, make_manager

    with pytest.raises(ConfigProblems) as caught:
        load_config(None, collect(make_manager()), data=celery_config(**dispatch))
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_a_broker_password_is_redacted_like_any_secret():
    from hub.config import load_config
    from hub.plugins import collect, make_manager
    from hub.redaction import redact

    load_config(None, collect(make_manager()), data=celery_config(broker_url="amqp://hub:s3cret-pw@rabbit:5672//"))
    assert redact("connecting to amqp://hub:s3cret-pw@rabbit:5672//") == "connecting to amqp://hub:[secret]@rabbit:5672//"


def test_worker_with_an_unreachable_broker_is_one_line_and_exit_1(tmp_path):
    pytest.importorskip("celery", reason='celery is not installed (pip install "sovereign-hub[celery]")')
    q = json.dumps
    config = tmp_path / "hub.toml"
    config.write_text("\n".join([
        "[store]", f"url = {q(migrated('sqlite:///' + str(tmp_path / 'hub.db')))}",
        "[dispatch]", 'backend = "celery"', 'broker_url = "amqp://hub:s3cret-pw@127.0.0.1:1//"',
        "[sources.hms]", f"secret = {q(TEST_SECRET)}",
    ]) + "\n")
    done = subprocess.run([sys.executable, "-m", "hub", "worker", "-c", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors[-1].startswith("Error: the broker is not reachable at amqp://hub:**@127.0.0.1:1//"), done.stderr
    assert "Traceback" not in done.stderr and "s3cret-pw" not in done.stderr + done.stdout


# --- the sweeper's query --------------------------------------------------------------------------

def test_due_ids_lists_forgotten_deliveries_oldest_first_without_claiming(store, new_report):
    from datetime import timedelta

    from hub.store import PENDING, RUNNING
    from hub.store import deliveries as table

    for _ in range(4):
        store.insert_report(new_report(), ["a"])
    fresh, old, expired, leased = sorted(store.list_deliveries(limit=None), key=lambda d: d.created_at)
    now = utcnow()
    with store.write() as conn:  # arrange the rows' states directly
        def put(delivery, **values):
            conn.execute(table.update().where(table.c.id == delivery.id).values(**values))

        put(fresh, next_attempt_at=now - timedelta(seconds=0.5))
        put(old, next_attempt_at=now - timedelta(seconds=30))
        put(expired, status=RUNNING, lease_owner="gone", lease_until=now - timedelta(seconds=1),
            next_attempt_at=now - timedelta(seconds=20))
        put(leased, status=RUNNING, lease_owner="alive", lease_until=now + timedelta(seconds=60),
            next_attempt_at=now - timedelta(seconds=40))

    assert store.due_ids(10, now=now) == [old.id, expired.id, fresh.id]
    assert store.due_ids(10, overdue_seconds=5, now=now) == [old.id, expired.id], "due for 5 s or more"
    assert store.due_ids(1, now=now) == [old.id]
    assert store.get_delivery(old.id).status == PENDING, "a read: nothing claimed"
