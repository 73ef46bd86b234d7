"""The dispatcher's promises with real destination classes, on SQLite and PostgreSQL.

Destinations here are ordinary ``hub.Destination`` subclasses handed to ``Dispatcher`` as a
dict of instances (or registered by a test plugin on a Hub's plugin manager, for the hook).
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hub import Destination, Permanent, Result, Retryable, hookimpl
from hub.dispatch import Dispatcher, RetryPolicy
from hub.redaction import register_secret
from hub.store import DEAD, PENDING, RUNNING, SUCCEEDED, deliveries, utcnow
from hub.testing import migrated, signed_headers, wait_until


# --- destinations used by the tests ---------------------------------------------------------------

class Recording(Destination):
    """Counts calls per delivery; ``behaviour(ctx)`` decides each attempt (default: succeed)."""

    type = "test-recording"

    def __init__(self, name="rec", config=None, settings=None, behaviour=None, pause: float = 0.0):
        super().__init__(name, config or {}, settings)
        self.behaviour = behaviour
        self.pause = pause
        self.calls: Counter = Counter()
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0

    def deliver(self, report, ctx):
        with self.lock:
            self.calls[ctx.delivery_id] += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if self.pause:
                time.sleep(self.pause)
            if self.behaviour is not None:
                return self.behaviour(ctx)
            return Result(f"delivered {report.id}")
        finally:
            with self.lock:
                self.running -= 1


def raising(exc):
    def behaviour(ctx):
        raise exc
    return behaviour


class ThreeSteps(Destination):
    """Find-or-create contact, then log the call, then create a task; each created id goes into
    ctx.state at once. ``fail_at`` makes the given step fail on the first attempt."""

    type = "test-three-steps"

    def __init__(self, fail_at: str, failure: Exception):
        super().__init__("crm", {})
        self.fail_at = fail_at
        self.failure = failure
        self.created: list[str] = []
        self.seen_states: list[dict] = []

    def deliver(self, report, ctx):
        self.seen_states.append(dict(ctx.state))
        for step in ("contact", "call", "task"):
            if step in ctx.state:
                continue
            if step == self.fail_at and ctx.attempt == 1:
                raise self.failure
            self.created.append(step)
            ctx.state[step] = f"{step}-{len(self.created)}"
        return Result("contact, call and task created")


# --- helpers ---------------------------------------------------------------------------------------

def dispatcher(store, destinations, *, delays=(60.0,), max_attempts=5, jitter=0.0, rng=None, lease=60.0,
               on_finished=None):
    policy = RetryPolicy(list(delays), max_attempts, jitter, **({"rng": rng} if rng else {}))
    return Dispatcher(store, destinations, policy, lease_seconds=lease, poll_interval=0.02,
                      on_finished=on_finished)


def one_delivery(store, new_report, destination="rec"):
    report = new_report()
    store.insert_report(report, [destination])
    [d] = store.list_deliveries(report_id=report.id)
    return d


def make_due(store, delivery_id):
    with store.engine.begin() as conn:
        conn.execute(deliveries.update().where(deliveries.c.id == delivery_id).values(next_attempt_at=utcnow()))


# --- the retry policy on its own --------------------------------------------------------------------

def test_retry_policy_follows_the_schedule_within_the_jitter_bounds():
    policy = RetryPolicy([5, 30, 120], max_attempts=4, jitter=0.1)
    for attempt, base in ((1, 5), (2, 30), (3, 120), (4, 120), (9, 120)):
        delays = [policy.delay(attempt) for _ in range(2000)]
        assert all(base * 0.9 <= d <= base * 1.1 for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > base * 0.15, "the jitter actually spreads retries"
    assert RetryPolicy([10], 3, 0.1, rng=lambda: 0.0).delay(1) == pytest.approx(9.0)
    assert RetryPolicy([10], 3, 0.1, rng=lambda: 0.5).delay(1) == pytest.approx(10.0)
    assert RetryPolicy([10], 3, 0.1, rng=lambda: 0.999999).delay(1) == pytest.approx(11.0, abs=1e-4)
    assert RetryPolicy([10], 3, 0.0).delay(1) == 10


def test_retry_after_is_a_floor_never_shortened():
    policy = RetryPolicy([10], max_attempts=3, jitter=0.1, rng=lambda: 0.999999)
    assert policy.delay(1, retry_after=300) == 300
    assert policy.delay(1, retry_after=2) == pytest.approx(11.0, abs=1e-4)
    assert policy.delay(1, retry_after=None) == pytest.approx(11.0, abs=1e-4)


def test_retry_policy_is_exhausted_at_max_attempts():
    policy = RetryPolicy([1, 2], max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


# --- outcomes -----------------------------------------------------------------------------------

def test_success_is_recorded(store, new_report):
    dest = Recording(pause=0.02)
    d = one_delivery(store, new_report)

    assert dispatcher(store, {"rec": dest}).run_due() == 1

    row = store.get_delivery(d.id)
    assert (row.status, row.attempts, row.result, row.last_error, row.lease_owner) == (
        SUCCEEDED, 1, f"delivered {d.report_id}", None, None)
    [attempt] = store.list_attempts(d.id)
    assert (attempt["number"], attempt["outcome"], attempt["http_status"], attempt["error"]) == (
        1, "succeeded", None, None)
    assert attempt["duration_ms"] >= 15
    assert dest.calls == Counter({d.id: 1})
    assert dispatcher(store, {"rec": dest}).run_due() == 0, "a delivered delivery is not attempted again"


class HttpDestination(Destination):
    type = "test-http"

    def deliver(self, report, ctx):
        response = ctx.send("POST", "https://api.example.test/calls", json={"id": report.id})
        return Result(f"HTTP {response.status_code}")


def test_http_status_of_each_attempt_is_recorded(store, new_report, mocked_http):
    mocked_http.post("https://api.example.test/calls", status=503, body="down for maintenance")
    mocked_http.post("https://api.example.test/calls", status=201, json={"ok": True})
    d = one_delivery(store, new_report, "api")
    disp = dispatcher(store, {"api": HttpDestination("api", {})}, delays=[0])

    assert disp.run_due() == 2

    assert [(a["number"], a["outcome"], a["http_status"]) for a in store.list_attempts(d.id)] == [
        (1, "retry", 503), (2, "succeeded", 201)]
    assert "down for maintenance" in store.list_attempts(d.id)[0]["error"]
    assert store.get_delivery(d.id).result == "HTTP 201"


def test_retryable_goes_back_to_pending_per_retry_delays_and_jitter(store, new_report):
    dest = Recording(behaviour=raising(Retryable("HTTP 503 from the API", http_status=503)))
    d = one_delivery(store, new_report)
    disp = dispatcher(store, {"rec": dest}, delays=[10, 60], max_attempts=5, jitter=0.1)

    for number, base in ((1, 10), (2, 60), (3, 60)):
        assert disp.process_one() is not None
        row = store.get_delivery(d.id)
        attempt = store.list_attempts(d.id)[-1]
        waited = (row.next_attempt_at - attempt["started_at"]).total_seconds()
        assert (row.status, row.attempts, row.lease_owner) == (PENDING, number, None)
        assert base * 0.9 - 0.001 <= waited <= base * 1.1 + 0.001, (number, waited)
        assert (attempt["number"], attempt["outcome"], attempt["http_status"]) == (number, "retry", 503)
        assert row.last_error == "HTTP 503 from the API"
        assert disp.process_one() is None, "not due before next_attempt_at"
        make_due(store, d.id)


@pytest.mark.parametrize("rng, expected", [(lambda: 0.0, 9.0), (lambda: 0.999999, 11.0)],
                         ids=["lowest", "highest"])
def test_the_jitter_bounds_reach_the_stored_next_attempt(store, new_report, rng, expected):
    d = one_delivery(store, new_report)
    disp = dispatcher(store, {"rec": Recording(behaviour=raising(Retryable("busy")))}, delays=[10],
                      jitter=0.1, rng=rng)
    disp.process_one()
    row = store.get_delivery(d.id)
    started = store.list_attempts(d.id)[0]["started_at"]
    assert (row.next_attempt_at - started).total_seconds() == pytest.approx(expected, abs=0.001)


@pytest.mark.parametrize("retry_after, delay, expected", [(300, 10, 300), (2, 10, 10)],
                         ids=["retry-after-longer", "retry-after-shorter"])
def test_retry_after_is_a_floor_for_the_next_attempt(store, new_report, retry_after, delay, expected):
    d = one_delivery(store, new_report)
    dest = Recording(behaviour=raising(Retryable("HTTP 429", retry_after=retry_after, http_status=429)))
    dispatcher(store, {"rec": dest}, delays=[delay], jitter=0.0).process_one()
    row = store.get_delivery(d.id)
    started = store.list_attempts(d.id)[0]["started_at"]
    assert row.status == PENDING
    assert (row.next_attempt_at - started).total_seconds() == pytest.approx(expected, abs=0.001)


def test_retry_after_header_from_the_far_side_is_honoured(store, new_report, mocked_http):
    mocked_http.post("https://api.example.test/calls", status=429, headers={"Retry-After": "120"})
    d = one_delivery(store, new_report, "api")
    dispatcher(store, {"api": HttpDestination("api", {})}, delays=[1], jitter=0.1).process_one()
    row = store.get_delivery(d.id)
    [attempt] = store.list_attempts(d.id)
    assert (row.next_attempt_at - attempt["started_at"]).total_seconds() >= 120
    assert (attempt["outcome"], attempt["http_status"]) == ("retry", 429)


def test_permanent_is_dead_at_once(store, new_report, mocked_http):
    mocked_http.post("https://api.example.test/calls", status=401, json={"message": "bad token"})
    d = one_delivery(store, new_report, "api")
    disp = dispatcher(store, {"api": HttpDestination("api", {})}, delays=[0], max_attempts=5)

    assert disp.run_due() == 1

    row = store.get_delivery(d.id)
    assert (row.status, row.attempts) == (DEAD, 1)
    assert "unauthorized" in row.last_error and "'api'" in row.last_error
    [attempt] = store.list_attempts(d.id)
    assert (attempt["outcome"], attempt["http_status"]) == ("dead", 401)


@pytest.mark.parametrize("failure", [Retryable("HTTP 502"), ConnectionResetError("reset by peer")],
                         ids=["retryable", "unexpected"])
def test_exhausting_max_attempts_is_dead(store, new_report, failure):
    dest = Recording(behaviour=raising(failure))
    d = one_delivery(store, new_report)
    disp = dispatcher(store, {"rec": dest}, delays=[0], max_attempts=3)

    assert disp.run_due() == 3

    row = store.get_delivery(d.id)
    assert (row.status, row.attempts) == (DEAD, 3)
    assert "gave up after 3 attempts" in row.last_error
    assert [(a["number"], a["outcome"]) for a in store.list_attempts(d.id)] == [
        (1, "retry"), (2, "retry"), (3, "dead")]
    assert dest.calls[d.id] == 3
    assert disp.run_due() == 0


def test_a_delivery_whose_workers_died_max_attempts_times_is_dead(store, new_report):
    """Leases that ran out (the worker was killed) count as attempts, so a delivery that kills
    its worker every time cannot loop forever."""
    dest = Recording()
    d = one_delivery(store, new_report)
    for _ in range(3):
        assert store.claim("killed-worker", 0.01) is not None
        time.sleep(0.03)
    assert dispatcher(store, {"rec": dest}, max_attempts=3).process_one() is not None
    row = store.get_delivery(d.id)
    assert row.status == DEAD and "gave up after 3 attempts" in row.last_error
    assert dest.calls == Counter()


@pytest.mark.parametrize("kind", ["retryable", "permanent", "unexpected"])
def test_every_attempt_is_recorded_with_the_secret_redacted(store, new_report, kind):
    secret = f"sk_live_{uuid.uuid4().hex}"
    register_secret(secret)
    message = f"the API refused token {secret} for this account"
    failure = {"retryable": Retryable(message, http_status=503), "permanent": Permanent(message, http_status=403),
               "unexpected": RuntimeError(message)}[kind]
    d = one_delivery(store, new_report)
    disp = dispatcher(store, {"rec": Recording(behaviour=raising(failure))}, delays=[0], max_attempts=2)

    disp.run_due()

    recorded = store.list_attempts(d.id)
    assert len(recorded) == (1 if kind == "permanent" else 2)
    row = store.get_delivery(d.id)
    everything = json.dumps([dataclasses.asdict(row), recorded], default=str)
    assert secret not in everything
    for attempt in recorded:
        assert "the API refused token [secret] for this account" in attempt["error"]
        assert attempt["duration_ms"] >= 0 and attempt["started_at"] is not None
        assert attempt["http_status"] == {"retryable": 503, "permanent": 403, "unexpected": None}[kind]
    assert [a["number"] for a in recorded] == list(range(1, len(recorded) + 1))
    assert "[secret]" in row.last_error


def test_a_success_message_is_stored_with_the_secret_redacted(store, new_report, mocked_http):
    """The webhook type's result names its URL, registered as a secret (a catch-hook URL is a
    password); the API and the CLI print the stored result as it is."""
    from hub.testing import make_destination

    url = f"https://hooks.example.test/catch/{uuid.uuid4().hex}/"
    mocked_http.post(url, status=200)
    d = one_delivery(store, new_report, "zap")

    assert dispatcher(store, {"zap": make_destination("webhook", {"url": url}, name="zap")}).run_due() == 1

    row = store.get_delivery(d.id)
    assert row.status == SUCCEEDED
    assert url not in json.dumps(dataclasses.asdict(row), default=str)
    assert row.result == "POST [secret] -> 200"


@pytest.mark.parametrize("failure", [Retryable("HTTP 503 on create call"), KeyError("boom")],
                         ids=["retryable", "unexpected"])
def test_state_persists_so_a_multi_step_delivery_resumes_where_it_failed(store, new_report, failure):
    dest = ThreeSteps(fail_at="call", failure=failure)
    d = one_delivery(store, new_report, "crm")
    disp = dispatcher(store, {"crm": dest}, delays=[30])

    disp.process_one()
    row = store.get_delivery(d.id)
    assert row.status == PENDING
    assert row.state == {"contact": "contact-1"}, "the contact created before the failure is saved"
    make_due(store, d.id)
    disp.process_one()

    row = store.get_delivery(d.id)
    assert row.status == SUCCEEDED
    assert dest.created == ["contact", "call", "task"], "step 1 is not redone on the retry"
    assert dest.seen_states == [{}, {"contact": "contact-1"}]
    assert row.state == {"contact": "contact-1", "call": "call-2", "task": "task-3"}


def test_an_unexpected_exception_is_retried_not_fatal(store, new_report):
    dest = Recording(behaviour=raising(ZeroDivisionError("division by zero")))
    d = one_delivery(store, new_report)
    disp = dispatcher(store, {"rec": dest}, delays=[5], max_attempts=3)

    assert disp.process_one() is not None  # returns: no exception escapes

    row = store.get_delivery(d.id)
    assert (row.status, row.attempts) == (PENDING, 1)
    assert row.last_error == "unexpected ZeroDivisionError: division by zero"
    assert store.list_attempts(d.id)[0]["outcome"] == "retry"
    assert row.next_attempt_at > utcnow() + timedelta(seconds=4)


def test_one_destination_failing_does_not_stop_another_of_the_same_report(store, new_report):
    dests = {
        "broken": Recording("broken", behaviour=raising(RuntimeError("plugin bug"))),
        "refused": Recording("refused", behaviour=raising(Permanent("400 bad field"))),
        "down": Recording("down", behaviour=raising(Retryable("503"))),
        "good": Recording("good"),
    }
    report = new_report()
    store.insert_report(report, list(dests))
    dispatcher(store, dests, delays=[60]).run_due()

    status = {d.destination: d.status for d in store.list_deliveries(report_id=report.id)}
    assert status == {"broken": PENDING, "refused": DEAD, "down": PENDING, "good": SUCCEEDED}
    assert all(sum(dest.calls.values()) == 1 for dest in dests.values())


def test_a_hanging_destination_does_not_hold_up_another(store, new_report):
    release = threading.Event()
    hanging = Recording("hanging", behaviour=lambda ctx: release.wait(10) and Result("late"))
    good = Recording("good")
    report = new_report()
    store.insert_report(report, ["hanging", "good"])
    disp = dispatcher(store, {"hanging": hanging, "good": good})
    disp.start(2)
    try:
        assert wait_until(lambda: {d.destination: d.status for d in store.list_deliveries(
            report_id=report.id)} == {"hanging": RUNNING, "good": SUCCEEDED}, timeout=10)
    finally:
        release.set()
        disp.stop(5)
    assert {d.status for d in store.list_deliveries(report_id=report.id)} == {SUCCEEDED}


def test_a_missing_destination_is_dead_with_the_fix_named(store, new_report):
    d = one_delivery(store, new_report, "removed")
    dispatcher(store, {}).run_due()
    row = store.get_delivery(d.id)
    assert row.status == DEAD and "not configured" in row.last_error and "replay" in row.last_error


def test_on_finished_is_called_for_succeeded_and_dead_only(store, new_report):
    seen = []
    dests = {"ok": Recording("ok"), "bad": Recording("bad", behaviour=raising(Permanent("no"))),
             "later": Recording("later", behaviour=raising(Retryable("503")))}
    report = new_report()
    store.insert_report(report, list(dests))
    disp = dispatcher(store, dests, on_finished=lambda d, r: seen.append((d.destination, d.status, r.id)))
    disp.run_due()
    assert sorted(seen) == [("bad", DEAD, report.id), ("ok", SUCCEEDED, report.id)]


def test_a_failing_on_finished_observer_changes_no_outcome(store, new_report):
    def observer(delivery, report):
        raise RuntimeError("observer bug")

    d = one_delivery(store, new_report)
    dispatcher(store, {"rec": Recording()}, on_finished=observer).run_due()
    assert store.get_delivery(d.id).status == SUCCEEDED


# --- the delivery_finished hook, through a Hub with a test plugin --------------------------------

class OkType(Destination):
    type = "test-ok"

    def deliver(self, report, ctx):
        return Result("ok")


class RefusedType(Destination):
    type = "test-refused"

    def deliver(self, report, ctx):
        raise Permanent("destination 'refused': HTTP 400: missing field", http_status=400)


class DownType(Destination):
    type = "test-down"

    def deliver(self, report, ctx):
        raise Retryable("destination 'down': HTTP 503", http_status=503)


class RecorderPlugin:
    def __init__(self):
        self.finished = []

    @hookimpl
    def register_destinations(self, register):
        for cls in (OkType, RefusedType, DownType):
            register(cls)

    @hookimpl
    def delivery_finished(self, delivery, report, hub):
        self.finished.append((delivery.destination, delivery.status, delivery.attempts, report.id, hub))


def test_delivery_finished_hook_fires_on_succeeded_and_dead(hub_config, sample_payload):
    from hub.app import create_app
    from hub.config import load_config
    from hub.plugins import collect, make_manager
    from hub.core import Hub

    plugin = RecorderPlugin()
    pm = make_manager(load_entry_points=False)
    pm.register(plugin, name="test-recorder")
    registry = collect(pm)
    hub_config["destinations"] = {"good": {"type": "test-ok"}, "refused": {"type": "test-refused"},
                                  "down": {"type": "test-down"}}
    hub_config["dispatch"].update(retry_delays=[0.05], jitter=0.0)  # max_attempts = 2
    migrated(hub_config["store"]["url"])
    hub = Hub(load_config(None, registry, data=hub_config), pm, registry)
    try:
        client = create_app(hub=hub).test_client()
        body = json.dumps(sample_payload).encode()
        response = client.post("/webhooks/hms", data=body, headers=signed_headers(body))
        assert response.status_code == 202, response.get_json()
        report_id = response.get_json()["report_id"]

        hub.dispatcher.run_due()
        assert sorted(f[:4] for f in plugin.finished) == [
            ("good", SUCCEEDED, 1, report_id), ("refused", DEAD, 1, report_id)]
        time.sleep(0.1)
        hub.dispatcher.run_due()
        assert sorted(f[:4] for f in plugin.finished) == [
            ("down", DEAD, 2, report_id), ("good", SUCCEEDED, 1, report_id), ("refused", DEAD, 1, report_id)]
        assert all(f[4] is hub.plugin_hub for f in plugin.finished)
    finally:
        hub.close()


# --- worker threads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("topology", [(1, 4), (2, 3)], ids=["one-dispatcher-4-threads", "two-dispatchers-3-threads"])
def test_worker_threads_deliver_concurrently_and_never_twice(store, new_report, topology):
    n_dispatchers, threads = topology
    dests = {"a": Recording("a", pause=0.02), "b": Recording("b", pause=0.02)}
    for _ in range(25):
        store.insert_report(new_report(), ["a", "b"])
    expected = {d.id for d in store.list_deliveries(limit=None)}
    dispatchers = [dispatcher(store, dests) for _ in range(n_dispatchers)]
    for disp in dispatchers:
        disp.start(threads)
    try:
        assert wait_until(lambda: store.delivery_counts() == {("a", SUCCEEDED): 25, ("b", SUCCEEDED): 25},
                          timeout=30), store.delivery_counts()
    finally:
        released = [disp.stop(5) for disp in dispatchers]
    assert released == [0] * n_dispatchers
    calls = dests["a"].calls + dests["b"].calls
    assert set(calls) == expected
    assert set(calls.values()) == {1}, "no delivery is attempted twice"
    assert max(dests["a"].max_running, dests["b"].max_running) >= 2, "deliveries ran concurrently"
    with store.engine.connect() as conn:
        per_delivery = conn.execute(sa.text(
            "SELECT delivery_id, COUNT(*) FROM attempts GROUP BY delivery_id")).all()
    assert len(per_delivery) == 50 and {n for _, n in per_delivery} == {1}


def test_stop_stops_claiming_and_lets_the_in_flight_delivery_finish(store, new_report):
    dest = Recording(pause=0.4)
    for _ in range(3):
        store.insert_report(new_report(), ["rec"])
    disp = dispatcher(store, {"rec": dest})
    disp.start(1)
    assert wait_until(lambda: dest.running == 1, timeout=10)

    assert disp.stop(grace_seconds=5) == 0

    rows = store.list_deliveries(limit=None)
    assert sorted(d.status for d in rows) == [PENDING, PENDING, SUCCEEDED]
    assert sum(dest.calls.values()) == 1
    assert all(d.attempts == 0 and d.lease_owner is None for d in rows if d.status == PENDING)


def test_stop_gives_back_a_delivery_that_overruns_the_grace_period(store, new_report):
    release = threading.Event()
    dest = Recording(behaviour=lambda ctx: release.wait(10) and Result("too late"))
    d = one_delivery(store, new_report)
    disp = dispatcher(store, {"rec": dest})
    disp.start(1)
    assert wait_until(lambda: dest.running == 1, timeout=10)

    started = time.monotonic()
    assert disp.stop(grace_seconds=0.2) == 1
    assert time.monotonic() - started < 2

    row = store.get_delivery(d.id)
    assert (row.status, row.attempts, row.lease_owner, row.lease_until) == (PENDING, 0, None, None)
    release.set()
    assert wait_until(lambda: dest.running == 0, timeout=5)
    time.sleep(0.1)
    row = store.get_delivery(d.id)
    assert (row.status, row.attempts) == (PENDING, 0), "the abandoned attempt's outcome is discarded"
    assert store.list_attempts(d.id) == []


@pytest.mark.parametrize("second", ["another-dispatcher", "same-dispatcher"])
def test_a_worker_that_lost_its_lease_does_not_overwrite_the_new_holder(store, new_report, second):
    """Worker A hangs past its lease; B (another worker, or another thread of the same
    dispatcher) takes the delivery over. A's late failure, finished while B still holds the
    delivery, must not turn B's attempt into a retry (which would deliver it a third time)."""
    b_started = threading.Event()
    calls = []

    def behaviour(ctx):
        calls.append(ctx.attempt)
        if ctx.attempt == 1:  # A
            assert b_started.wait(10)
            raise Retryable("A's late failure")
        b_started.set()  # B: hold the delivery until A has finished its attempt
        a.join(10)
        return Result("B delivered")

    dest = Recording(behaviour=behaviour)
    d = one_delivery(store, new_report)
    slow = dispatcher(store, {"rec": dest}, lease=0.3)
    fresh = slow if second == "same-dispatcher" else dispatcher(store, {"rec": dest})
    a = threading.Thread(target=slow.process_one)
    a.start()
    assert wait_until(lambda: calls == [1], timeout=10), "A holds the delivery first"
    assert wait_until(lambda: fresh.process_one() is not None, timeout=10)
    a.join(10)

    row = store.get_delivery(d.id)
    assert (row.status, row.result, row.attempts) == (SUCCEEDED, "B delivered", 2)
    assert [(x["number"], x["outcome"]) for x in store.list_attempts(d.id)] == [(2, "succeeded")]
    assert calls == [1, 2]
