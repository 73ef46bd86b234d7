"""A new report starts delivering at once in another process: the web side announces it (a Unix
socket on SQLite, NOTIFY on PostgreSQL) and the ``worker``'s dispatcher wakes, long before its
poll (30 s here) would have found the row."""
from __future__ import annotations

import time

import pytest

from hub.testing import WebhookReceiver, kill_process_group, load_sample, start_hub_process, toml_text, wait_until


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def hub_config(request, hub_config):
    if request.param == "postgresql":
        hub_config["store"]["url"] = request.getfixturevalue("new_pg_database")()
    hub_config["dispatch"].update(workers=2, poll_interval=30)
    return hub_config


def test_a_worker_process_is_woken_by_a_new_report(hub_config, request, tmp_path):
    with WebhookReceiver() as receiver:
        hub_config["destinations"] = {"hook": {"type": "webhook", "url": receiver.url}}
        signed_post = request.getfixturevalue("signed_post")  # migrates the store, as serve would
        config = tmp_path / "worker.toml"
        config.write_text(toml_text(hub_config))
        worker = start_hub_process("worker", config, tmp_path, "worker.log")
        try:
            assert wait_until(lambda: "dispatcher.started" in (tmp_path / "worker.log").read_text(), timeout=30)
            time.sleep(0.5)  # its first look at the store (nothing due) is over: it waits for 30 s now
            for n in range(3):
                payload = load_sample("end-of-call-report-full")
                payload["message"]["call"]["id"] = f"call-wake-{n}"
                posted = time.monotonic()
                assert signed_post(payload).status_code == 202
                assert wait_until(lambda: len(receiver.succeeded()) == n + 1, timeout=10, interval=0.01)
                assert time.monotonic() - posted < 5, "delivered by the wake, not by the 30 s poll"
        finally:
            kill_process_group(worker)
