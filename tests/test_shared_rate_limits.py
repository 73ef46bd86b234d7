"""Cluster-wide rate limits: ``[ratelimit] storage`` on Redis makes every process count each
bucket together. Two real ``worker`` processes deliver to one receiver that records when each
request arrived; the destination's limit holds in every window. With Redis unreachable the
deliveries wait and are tried again, with the reason on the delivery and in the log."""
from __future__ import annotations

import uuid

import pytest

from hub.testing import (
    WebhookReceiver, assert_no_window_exceeded, closed_port, kill_process_group, load_sample, start_hub_process,
    toml_text, wait_until,
)

RATE = "5/1s"
REDIS = "redis://127.0.0.1:6379/0"


def post_reports(signed_post, count: int) -> list[str]:
    ids = []
    for n in range(count):
        payload = load_sample("end-of-call-report-full")
        payload["message"]["call"]["id"] = f"call-limit-{n}"
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
        assert_no_window_exceeded(receiver.arrived_at, RATE, jitter=0.05)  # see docs/configuration.md [ratelimit]
        assert max(receiver.arrived_at) - min(receiver.arrived_at) >= 3.0 - 1e-6, "20 at 5/1s take 3 s at least"


def test_redis_unreachable_the_deliveries_wait_and_the_reason_is_logged(hub_config, request, caplog):
    storage = f"redis://:s3cret-pass@127.0.0.1:{closed_port()}/0"
    hub_config["ratelimit"] = {"storage": storage}
    hub_config["destinations"] = {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{closed_port()}/x",
                                           "rate_limits": {"default": RATE}}}
    app, signed_post = request.getfixturevalue("app"), request.getfixturevalue("signed_post")
    [report_id] = post_reports(signed_post, 1)
    assert app.hub.dispatcher.run_due() == 1
    [delivery] = app.hub.store.list_deliveries(report_id=report_id)
    assert delivery.status == "pending"
    assert delivery.last_error.startswith("destination 'hook': rate-limit storage redis://:***@127.0.0.1:")
    assert "unreachable (ConnectionError); trying again in 5s" in delivery.last_error
    assert "s3cret-pass" not in caplog.text and "rate-limit storage" in caplog.text


def test_a_shared_storage_needs_whole_second_windows(runner, hub_config):
    hub_config["ratelimit"] = {"storage": REDIS}
    hub_config["destinations"] = {"hook": {"type": "webhook", "url": "https://example.com/x",
                                           "rate_limits": {"default": "5/0.5s"}}}
    done = runner.invoke(["check-config"])
    assert done.exit_code == 1
    assert ('destinations.hook.rate_limits.default: "5/0.5s": with [ratelimit] storage on Redis a window is '
            'whole seconds') in done.output
    hub_config["ratelimit"] = {"storage": "mongodb://x"}
    assert "ratelimit.storage: must be \"memory://\"" in runner.invoke(["check-config"]).output
