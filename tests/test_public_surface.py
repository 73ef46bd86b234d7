"""What plugins are written against: ``import hub`` is light, hooks get the ``PluginHub`` and
``DeliveryRecord``, and one failing observer never silences the others."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

import hub
from hub.store import DEAD, SUCCEEDED
from hub.testing import load_sample, signed_headers


def test_import_hub_loads_neither_flask_nor_sqlalchemy_nor_click():
    script = ("import sys, hub; "
              "print(sorted(m for m in ('flask', 'werkzeug', 'sqlalchemy', 'click', 'responses', 'pytest') "
              "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_pass_hub_is_still_reachable_from_hub():
    from hub.cli import pass_hub

    assert hub.pass_hub is pass_hub
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        hub.no_such_name  # noqa: B018


def test_every_exported_name_exists():
    assert all(hasattr(hub, name) for name in hub.__all__)


class Watcher:
    def __init__(self, name: str, fail: bool = False):
        self.name, self.fail, self.seen = name, fail, []

    @hub.hookimpl
    def report_received(self, report, hub):
        self.seen.append(("report_received", report.id, hub))
        if self.fail:
            raise RuntimeError(f"{self.name} is broken")

    @hub.hookimpl
    def delivery_finished(self, delivery):  # names only what it uses
        self.seen.append(("delivery_finished", delivery))
        if self.fail:
            raise RuntimeError(f"{self.name} is broken")


@pytest.fixture
def watched(register_plugin, hub_config, tmp_path):
    hub_config["destinations"] = {"archive": {"type": "jsonl", "path": str(tmp_path / "calls.jsonl")}}
    first, broken, last = Watcher("first"), Watcher("broken", fail=True), Watcher("last")
    app = register_plugin(first, broken, last)
    return app, (first, broken, last)


def test_one_failing_observer_does_not_silence_the_others(watched, caplog):
    app, watchers = watched
    body = json.dumps(load_sample("end-of-call-report-full")).encode()
    with caplog.at_level(logging.ERROR):
        response = app.test_client().post("/webhooks/hms", data=body, headers=signed_headers(body))
        assert response.status_code == 202
        assert app.hub.dispatcher.run_due() == 1
    report_id = response.get_json()["report_id"]
    for watcher in watchers:
        (hook, seen_id, given), (finished, delivery) = watcher.seen
        assert (hook, seen_id, given) == ("report_received", report_id, app.hub.plugin_hub)
        assert finished == "delivery_finished"
        assert isinstance(delivery, hub.DeliveryRecord)
        assert (delivery.report_id, delivery.destination, delivery.status) == (report_id, "archive", SUCCEEDED)
    failures = [r for r in caplog.records if r.getMessage().endswith("hook failed")]
    assert [(r.getMessage(), r.fields["report_id"]) for r in failures] == [
        ("report_received hook failed", report_id), ("delivery_finished hook failed", report_id)]
    assert all(r.exc_info and "broken is broken" in str(r.exc_info[1]) for r in failures)
    assert len({r.fields["plugin"] for r in failures}) == 1  # the broken plugin, named each time


def test_delivery_finished_gets_the_dead_record_not_the_store_row(register_plugin, hub_config):
    seen = Watcher("only")
    hub_config["destinations"] = {"nowhere": {"type": "webhook", "url": "http://127.0.0.1:9/x"}}
    hub_config["dispatch"].update(retry_delays=[0], max_attempts=1)
    app = register_plugin(seen)
    body = json.dumps(load_sample("end-of-call-report-full")).encode()
    assert app.test_client().post("/webhooks/hms", data=body, headers=signed_headers(body)).status_code == 202
    assert app.hub.dispatcher.run_due() == 1
    delivery = seen.seen[-1][1]
    assert type(delivery) is hub.DeliveryRecord
    assert (delivery.status, delivery.next_attempt_at, delivery.attempts) == (DEAD, None, 1)
    assert not hasattr(delivery, "lease_owner")


def test_the_plugin_hub_is_narrow(app, sample_report):
    view = app.hub.plugin_hub
    for internal in ("store", "dispatcher", "pm", "app", "config", "ingest"):
        assert not hasattr(view, internal), internal
    assert view.settings.public_url == app.hub.settings.public_url
    assert view.reports() == [] and view.deliveries() == [] and view.report("nope") is None
    with pytest.raises(KeyError, match="no enabled destination named 'nope'"):
        view.destination("nope")
