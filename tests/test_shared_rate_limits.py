"""Cluster-wide rate limits: ``[ratelimit] storage`` on Redis makes every process count each
bucket together. Two real ``worker`` processes deliver to one receiver that records when each
request arrived; the destination's limit holds in every window. With Redis unreachable the
deliveries wait, unattempted, and go out when it is back; the outage is logged once."""
from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
import uuid

import pytest
import redis

from hub import ratelimit
from hub.errors import Deferred
from hub.testing import (
    WebhookReceiver, assert_no_window_exceeded, closed_port, kill_process_group, load_sample, start_hub_process,
    toml_text, wait_until,
)

RATE = "5/1s"
REDIS = "redis://127.0.0.1:6379/0"


def post_reports(signed_post, count: int, tag: str = "limit") -> list[str]:
    ids = []
    for n in range(count):
        payload = load_sample("end-of-call-report-full")
        payload["message"]["call"]["id"] = f"call-{tag}-{n}"
        payload["message"]["customer"] = {"number": f"+3161200{n:04d}"}
        answer = signed_post(payload)
        assert answer.status_code == 202
        ids.append(answer.get_json()["report_id"])
    return ids


def test_two_worker_processes_share_each_bucket_through_redis(hub_config, request, tmp_path):
    with WebhookReceiver() as receiver:
        name = f"hook_{uuid.uuid4().hex[:8]}"  # its own buckets in Redis
        hub_config["ratelimit"] = {"storage": REDIS}
        hub_config["dispatch"].update(workers=4, poll_interval=0.1)
        hub_config["destinations"] = {name: {"type": "webhook", "url": receiver.url,
                                             "rate_limits": {"default": RATE}, "ordering": "none"}}
        signed_post = request.getfixturevalue("signed_post")
        config = tmp_path / "workers.toml"
        config.write_text(toml_text(hub_config))
        post_reports(signed_post, 20)
        workers = [start_hub_process("worker", config, tmp_path, f"worker-{n}.log") for n in range(2)]
        try:
            assert wait_until(lambda: len(receiver.succeeded()) == 20, timeout=60)
        finally:
            for worker in workers:
                kill_process_group(worker)
        both = [(tmp_path / f"worker-{n}.log").read_text() for n in range(2)]
        assert all("delivery.succeeded" in log for log in both), "both processes delivered"
        # arrival at the receiver lies between the grant and the answer, both inside the shared window:
        # no slack but the clocks' (the test's monotonic one, Redis' wall clock)
        assert_no_window_exceeded(receiver.arrived_at, RATE, jitter=0.001)
        assert max(receiver.arrived_at) - min(receiver.arrived_at) >= 3.0 - 1e-6, "20 at 5/1s take 3 s at least"


# --- a slot is held from send until the answer ------------------------------------------------

def limiter_in(storage: str, rate: str):
    return ratelimit.make_limiter(rate, storage, f"test:{uuid.uuid4().hex}")


@pytest.mark.parametrize("storage", ["memory://", REDIS])
def test_a_held_slot_counts_a_window_from_its_answer_and_a_waiting_caller_goes_then(storage):
    limiter = limiter_in(storage, "1/1s")
    slot = limiter.hold()
    waited = []
    waiter = threading.Thread(target=lambda: waited.append(limiter.acquire(max_wait=10)))
    waiter.start()
    time.sleep(0.4)  # the request is out, unanswered: the window it might be counted in is still open
    answered = time.monotonic()
    slot.release()
    waiter.join(15)
    went = time.monotonic()
    assert waited, "the waiting caller got its slot"
    assert went - answered >= 1.0 - 0.01, "a window after the answer, not after the grant"
    assert went - answered < 5.0


@pytest.mark.parametrize("storage", ["memory://", REDIS])
def test_every_slot_out_and_too_long_a_wait_is_deferred_at_once(storage):
    limiter = limiter_in(storage, "1/10s")
    with limiter.hold():
        started = time.monotonic()
        with pytest.raises(Deferred) as info:
            limiter.acquire(max_wait=5, who="destination 'crm': ")
    assert time.monotonic() - started < 2.0
    assert info.value.retry_after == pytest.approx(10, abs=0.1)
    assert info.value.reason.startswith("destination 'crm': rate limit (1/10s): next slot in")


@pytest.mark.parametrize("storage", ["memory://", REDIS])
def test_a_receiver_counting_on_arrival_never_sees_more_than_the_limit(hub_config, request, storage):
    """Its answer takes 0.3 s: each window's next request arrives a window after the last answer."""
    with WebhookReceiver(delay=lambda: 0.3) as receiver:
        hub_config["ratelimit"] = {"storage": storage}
        hub_config["dispatch"].update(workers=4, poll_interval=0.1)
        hub_config["destinations"] = {f"hook_{uuid.uuid4().hex[:8]}": {
            "type": "webhook", "url": receiver.url, "rate_limits": {"default": "2/1s"}, "ordering": "none"}}
        app, signed_post = request.getfixturevalue("app"), request.getfixturevalue("signed_post")
        post_reports(signed_post, 8, tag=f"arrival-{storage[:5]}")
        app.hub.dispatcher.start(4)
        try:
            assert wait_until(lambda: len(receiver.succeeded()) == 8, timeout=60)
        finally:
            app.hub.dispatcher.stop(5)
    arrived = sorted(receiver.arrived_at)
    assert_no_window_exceeded(arrived, "2/1s")
    gaps = [later - first for first, later in zip(arrived, arrived[2:])]
    assert min(gaps) >= 1.3 - 0.01, f"a request came less than a window after an answer: {gaps}"


class ThrowawayRedis:
    """A ``redis-server`` of its own on a free port, with a password, that a test can stop and start again."""

    PASSWORD = "s3cret-pass"

    def __init__(self, tmp_path):
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.port, self.dir, self.proc = closed_port(), tmp_path, None
        self.url = f"redis://:{self.PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.PASSWORD,
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, password=self.PASSWORD, socket_connect_timeout=1)
        assert wait_until(lambda: self._answers(client), timeout=10), "redis-server did not start"

    @staticmethod
    def _answers(client) -> bool:
        try:
            return client.ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def throwaway_redis(tmp_path):
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_unreachable_deliveries_wait_unattempted_and_resume_when_it_is_back(
        hub_config, request, caplog, throwaway_redis, monkeypatch):
    monkeypatch.setattr(ratelimit, "STORAGE_RETRY_SECONDS", 0.5)  # the outage's retry pace, not its handling
    caplog.set_level(logging.INFO)
    with WebhookReceiver() as receiver:
        hub_config["ratelimit"] = {"storage": throwaway_redis.url}
        # one attempt only: an outage that counted as an attempt would make every delivery dead
        hub_config["dispatch"].update(workers=2, poll_interval=0.1, max_attempts=1)
        hub_config["destinations"] = {"hook": {"type": "webhook", "url": receiver.url,
                                               "rate_limits": {"default": RATE}, "ordering": "none"}}
        app, signed_post = request.getfixturevalue("app"), request.getfixturevalue("signed_post")
        store, dispatcher = app.hub.store, app.hub.dispatcher
        dispatcher.start(2)
        try:
            [before] = post_reports(signed_post, 1, tag="before")
            assert wait_until(lambda: len(receiver.succeeded()) == 1, timeout=30)
            throwaway_redis.stop()
            during = post_reports(signed_post, 3, tag="during")

            def deferred() -> bool:
                return all(d.status == "pending" and d.last_error
                           for d in (store.list_deliveries(report_id=r)[0] for r in during))
            assert wait_until(deferred, timeout=30)
            time.sleep(2.0)  # several retry rounds of 0.5 s go by: still waiting, still not attempted
            rows = [store.list_deliveries(report_id=r)[0] for r in during]
            assert {d.status for d in rows} == {"pending"}
            assert {d.attempts for d in rows} == {0}
            assert all(store.list_attempts(d.id) == [] for d in rows)
            assert rows[0].last_error.startswith(f"destination 'hook': rate-limit storage "
                                                 f"redis://:***@127.0.0.1:{throwaway_redis.port}/0 unreachable "
                                                 f"(ConnectionError: ")
            assert len(receiver.succeeded()) == 1, "nothing is sent unpaced"
            throwaway_redis.start()
            assert wait_until(lambda: len(receiver.succeeded()) == 4, timeout=30)
            assert wait_until(lambda: all(store.list_deliveries(report_id=r)[0].status == "succeeded"
                                          for r in [before, *during]), timeout=10)
        finally:
            dispatcher.stop(5)
    for report_id in during:
        [delivery] = store.list_deliveries(report_id=report_id)
        assert delivery.attempts == 1 and [a["outcome"] for a in store.list_attempts(delivery.id)] == ["succeeded"]
    outage = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outage) == 1, f"logged once per outage, not per delivery or retry: {outage}"
    assert "deliveries that need a rate-limit slot wait, unattempted, until it is back" in outage[0]
    assert [r for r in caplog.records if "is reachable again" in r.getMessage()]
    assert ThrowawayRedis.PASSWORD not in caplog.text
    assert ThrowawayRedis.PASSWORD not in str([store.list_deliveries(report_id=r)[0].last_error for r in during])


def test_a_shared_storage_takes_any_window_and_names_a_wrong_one(runner, hub_config):
    hub_config["ratelimit"] = {"storage": REDIS}
    hub_config["destinations"] = {"hook": {"type": "webhook", "url": "https://example.com/x",
                                           "rate_limits": {"default": "5/0.5s"}}}
    assert runner.invoke(["check-config"]).exit_code == 0
    limiter = limiter_in(REDIS, "2/0.5s")
    limiter.acquire(), limiter.acquire()
    started = time.monotonic()
    limiter.acquire(max_wait=5)
    assert time.monotonic() - started >= 0.4, "a half-second window, counted in Redis"
    hub_config["ratelimit"] = {"storage": "mongodb://x"}
    assert "ratelimit.storage: must be \"memory://\"" in runner.invoke(["check-config"]).output
