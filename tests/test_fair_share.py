"""A slow destination never delays another: each holds at most its share of the dispatcher's
threads (``max_in_flight``), and its connection pool has a connection for each of them.

The destinations are webhook destinations posting to real receivers on 127.0.0.1.
"""
from __future__ import annotations

import logging
import time

import pytest

from hub.testing import WebhookReceiver, load_sample, wait_until


def post_reports(signed_post, count: int) -> float:
    """``count`` end-of-call reports, each from its own caller; returns when the last was acknowledged."""
    for n in range(count):
        payload = load_sample("end-of-call-report-full")
        payload["message"]["call"]["id"] = f"call-fair-{n}"
        payload["message"]["customer"] = {"number": f"+3161000{n:04d}"}
        assert signed_post(payload).status_code == 202
    return time.monotonic()


@pytest.fixture
def receivers():
    with WebhookReceiver(delay=lambda: 2.0) as slow, WebhookReceiver() as fast:
        yield slow, fast


@pytest.fixture
def hub_config(hub_config, receivers):
    slow, fast = receivers
    hub_config["dispatch"].update(workers=4, poll_interval=0.5)
    hub_config["destinations"] = {"slow": {"type": "webhook", "url": slow.url, "timeout_seconds": 10},
                                  "fast": {"type": "webhook", "url": fast.url}}
    return hub_config


def test_the_fast_destination_finishes_soon_after_the_last_report_while_the_slow_one_holds_its_share(app, signed_post, receivers):
    slow, fast = receivers
    assert app.hub.dispatcher.fair_share(4) == 2
    app.hub.dispatcher.start(4)
    try:
        last_report = post_reports(signed_post, 40)
        assert wait_until(lambda: len(fast.succeeded()) == 40, timeout=30, interval=0.01)
        fast_done = time.monotonic()
        assert len(slow.started) <= 2 + 2 * int(fast_done - last_report + 2.5), "the slow one kept its share"
    finally:
        app.hub.dispatcher.stop(3)
    # The goal is 1 s; when every destination shared one pool, the fast one finished 20.5 s
    # late. The bound leaves room for a loaded CI machine and still fails that.
    assert fast_done - last_report < 4.0, f"the fast destination finished {fast_done - last_report:.2f}s late"


def test_max_in_flight_is_checked(runner, hub_config):
    hub_config["destinations"]["slow"]["max_in_flight"] = 0
    done = runner.invoke(["check-config"])
    assert done.exit_code == 1
    assert "destinations.slow.max_in_flight: must be a whole number of at least 1" in done.output


def test_sixteen_threads_on_one_destination_never_overflow_its_connection_pool(hub_config, request, caplog):
    with WebhookReceiver(delay=lambda: 0.05) as receiver:
        hub_config["destinations"] = {"only": {"type": "webhook", "url": receiver.url}}
        app, signed_post = request.getfixturevalue("app"), request.getfixturevalue("signed_post")
        caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
        app.hub.dispatcher.start(16)
        try:
            post_reports(signed_post, 48)
            assert wait_until(lambda: len(receiver.succeeded()) == 48, timeout=30)
        finally:
            app.hub.dispatcher.stop(3)
    assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]
