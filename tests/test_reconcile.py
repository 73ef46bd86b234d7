"""Reconcile: ended calls the hub never received come back from the platform's calls API.

The calls API is a local stand-in (a real HTTP server on 127.0.0.1) that pages exactly as the
official Node SDK expects (``offset``/``limit`` in, ``pagination.total`` out, more while
``offset + len(calls) < total``) and refuses a request without the right Bearer key or with
query parameters the SDK would not send.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from hub.cli import cli
from hub.reconcile import CallsApi, CallsApiError, Unusable, reconcile, report_payload, scheduler_for
from hub.testing import TEST_SECRET, answer_json, load_sample, signed_headers

API_KEY = "hms_live_k3y_0123456789abcdef"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def ended_call(n: int, **fields) -> dict:
    """A Call as GET /calls returns it (fields per PLATFORM.md, "The calls API")."""
    started = NOW - timedelta(hours=2, minutes=n)
    call = {
        "id": f"00000000-0000-4000-8000-{n:012d}", "caller_phone": "+31612345678", "assistant_phone": "+31850835037",
        "status": "ended", "direction": "inbound", "end_reason": "customer-ended-call", "error": None,
        "started_at": started.isoformat().replace("+00:00", "Z"),
        "ended_at": (started + timedelta(seconds=95)).isoformat().replace("+00:00", "Z"),
        "duration_seconds": 95, "summary": f"Call {n} about an invoice.",
        "analysis_result": {"sentiment": 4, "intent": "support", "resolved": True, "follow_up_needed": False},
        "messages": [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "About my invoice."}],
        "recording_url": f"https://recordings.example.com/{n}.mp3", "agent_id": "agent-1", "number_id": "num-1",
        "agent_name": "Support NL", "business_name": "Acme", "phone_number": "+31850835037",
        "created_at": started.isoformat(), "updated_at": (started + timedelta(seconds=96)).isoformat(),
    }
    call.update(fields)
    return call


class CallsApiStandIn:
    """``GET /api/v1/calls`` over ``calls``; ``fail`` is a list of statuses to answer first, one per request."""

    def __init__(self, calls: list[dict]):
        self.calls, self.fail, self.requests = calls, [], []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                stand_in.requests.append(query)
                if url.path != "/api/v1/calls":
                    return self.answer(404, {"error": "Not found"})
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self.answer(401, {"error": "Invalid API key"})
                if stand_in.fail:
                    return self.answer(stand_in.fail.pop(0), {"error": "Slow down"})
                problems = stand_in.check(query)
                if problems:
                    return self.answer(400, {"error": "Bad request", "message": "; ".join(problems)})
                start, end = (datetime.fromisoformat(query[k].replace("Z", "+00:00")) for k in ("start_date", "end_date"))
                matching = [c for c in stand_in.calls if c["status"] == query["status"] and (
                    not c.get("started_at") or start <= datetime.fromisoformat(c["started_at"].replace("Z", "+00:00")) <= end)]
                offset, limit = int(query["offset"]), int(query["limit"])
                self.answer(200, {"calls": matching[offset:offset + limit],
                                  "pagination": {"total": len(matching), "limit": limit, "offset": offset}})

            def answer(self, status, body):
                answer_json(self, status, body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @staticmethod
    def check(query: dict) -> list[str]:
        """The query the SDK's ``calls.listAll({status, start_date, end_date})`` sends."""
        problems = [f"{key} is missing" for key in ("status", "start_date", "end_date", "limit", "offset")
                    if key not in query]
        if query.get("limit") != "100":
            problems.append("the SDK pages by 100")
        if query.get("status") not in ("connecting", "in-progress", "ended", "failed"):
            problems.append("status is not a call status")
        return problems

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def calls_api():
    stand_in = CallsApiStandIn([])
    yield stand_in
    stand_in.close()


@pytest.fixture
def reconcile_config(hub_config, calls_api, tmp_path):
    """``hub_config`` with the calls API key and URL, and a jsonl destination for end-of-call reports."""
    hub_config["sources"]["hms"].update(api_key=API_KEY, api_url=calls_api.url)
    hub_config["destinations"]["file"] = {"type": "jsonl", "path": str(tmp_path / "calls.jsonl")}
    return hub_config


@pytest.fixture
def reconcile_app(reconcile_config):
    from hub.app import create_app
    from hub.testing import migrated

    migrated(reconcile_config["store"]["url"])
    app = create_app(config_data=reconcile_config, start_dispatcher=False)
    yield app
    app.hub.close()


@pytest.fixture
def hub(reconcile_app):
    return reconcile_app.hub


def api(calls_api, sleeps=None, key=API_KEY) -> CallsApi:
    return CallsApi(calls_api.url, key, sleep=(sleeps.append if sleeps is not None else lambda _: None))


def window():
    return NOW - timedelta(hours=24), NOW


def write_toml(path, config: dict) -> str:
    hms = config["sources"]["hms"]
    path.write_text(f'[store]\nurl = {json.dumps(config["store"]["url"])}\n[phone]\ndefault_region = "NL"\n'
                    f'[sources.hms]\nsecret = {json.dumps(TEST_SECRET)}\napi_key = {{ env = "HMS_API_KEY" }}\n'
                    f'api_url = {json.dumps(hms["api_url"])}\n'
                    f'[destinations.file]\ntype = "jsonl"\npath = {json.dumps(config["destinations"]["file"]["path"])}\n')
    return str(path)


# --- the command ------------------------------------------------------------------------------------

def test_reconcile_pages_through_every_ended_call_and_a_second_run_ingests_nothing(
        hub, reconcile_app, calls_api, reconcile_config, tmp_path, monkeypatch):
    calls_api.calls = [ended_call(n) for n in range(250)]
    calls_api.calls[7] = ended_call(7, duration_seconds=None, started_at=None)
    calls_api.calls.append(ended_call(900, status="failed"))  # not asked for: the filter is status=ended
    received = load_sample("end-of-call-report-full")
    received["message"]["call"]["id"] = calls_api.calls[3]["id"]
    body = json.dumps(received).encode()
    assert reconcile_app.test_client().post("/webhooks/hms", data=body, headers=signed_headers(body)).status_code == 202

    monkeypatch.setenv("HMS_API_KEY", API_KEY)
    config = write_toml(tmp_path / "hub.toml", reconcile_config)
    first = CliRunner().invoke(cli, ["reconcile", "--since", "24h", "-c", config])
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[-1] == "250 calls seen, 1 already received, 248 ingested, 1 skipped"
    assert (f"skipped {calls_api.calls[7]['id']}: it has no duration_seconds, and no started_at and ended_at to "
            f"take it from") in first.output
    assert "reconcile: 100/250 calls" in first.output and "reconcile: 250/250 calls" in first.output
    assert [(q["offset"], q["limit"], q["status"]) for q in calls_api.requests] == [
        ("0", "100", "ended"), ("100", "100", "ended"), ("200", "100", "ended")]

    stored = hub.store.list_reports(limit=1000)
    assert len(stored) == 249 and len({r.call.id for r in stored}) == 249
    assert sum(d.destination == "file" for d in hub.store.list_deliveries(limit=1000)) == 249, "each one is delivered"
    assert hub.dispatcher.run_due() == 249
    assert len((tmp_path / "calls.jsonl").read_text().splitlines()) == 249

    second = CliRunner().invoke(cli, ["reconcile", "-c", config])
    assert second.exit_code == 0, second.output
    assert second.output.splitlines()[-1] == "250 calls seen, 249 already received, 0 ingested, 1 skipped"
    assert len(hub.store.list_reports(limit=1000)) == 249


def test_a_webhook_arriving_after_reconcile_ingested_its_call_is_a_duplicate(hub, reconcile_app, calls_api):
    calls_api.calls = [ended_call(1)]
    assert reconcile(hub, api(calls_api), *window()).ingested == 1
    [report] = hub.store.list_reports()
    late = load_sample("end-of-call-report-full")
    late["message"]["call"]["id"] = calls_api.calls[0]["id"]
    body = json.dumps(late).encode()
    answer = reconcile_app.test_client().post("/webhooks/hms", data=body, headers=signed_headers(body))
    assert answer.status_code == 200 and answer.get_json() == {"status": "duplicate", "report_id": report.id}


def test_a_reconciled_call_becomes_the_report_its_webhook_would_have_made(hub, calls_api):
    outbound = ended_call(2, direction="outbound", caller_phone="06-12345678", duration_seconds=None,
                          started_at="2026-03-02T10:14:07+01:00", ended_at="2026-03-02T10:16:12+01:00",
                          summary=None, analysis_result=None, end_reason="assistant-ended-call")
    calls_api.calls = [ended_call(1), outbound]
    reconcile(hub, api(calls_api), datetime(2026, 1, 1, tzinfo=timezone.utc), NOW)
    reports = {r.call.id: r for r in hub.store.list_reports()}
    inbound = reports[calls_api.calls[0]["id"]]
    assert (inbound.source, inbound.event, inbound.call.type, inbound.call.direction, inbound.call.status) == (
        "hms", "end-of-call-report", "inbound_phone_call", "inbound", "ended")
    assert (inbound.customer.number, inbound.phone_number.number) == ("+31612345678", "+31850835037")
    assert inbound.analysis == calls_api.calls[0]["analysis_result"] and inbound.analysis_errors == []
    assert [(m.role, m.content) for m in inbound.messages] == [("assistant", "Hello!"), ("user", "About my invoice.")]
    assert (inbound.recording_url, inbound.duration_seconds, inbound.ended_reason) == (
        "https://recordings.example.com/1.mp3", 95, "customer-ended-call")
    assert inbound.summary == "Call 1 about an invoice." and inbound.assistant == {"id": "agent-1", "name": "Support NL"}
    other = reports[outbound["id"]]
    assert (other.call.type, other.call.direction, other.customer.number) == (
        "outbound_phone_call", "outbound", "+31612345678")
    assert other.duration_seconds == 125, "from started_at and ended_at"
    assert other.occurred_at == datetime(2026, 3, 2, 9, 16, 12, tzinfo=timezone.utc), "ended_at, in UTC"
    assert (other.summary, other.analysis, other.ended_reason) == ("", None, "assistant-ended-call")


def test_calls_that_cannot_become_a_report_are_skipped_with_their_id_and_reason(hub, calls_api):
    calls_api.calls = [ended_call(1, ended_at="yesterday"), ended_call(2, messages=[{"role": "user"}]),
                       ended_call(3, analysis_result="positive"), ended_call(4)]
    outcome = reconcile(hub, api(calls_api), *window())
    assert outcome.ingested == 1 and outcome.seen == 4
    assert dict(outcome.skipped) == {
        calls_api.calls[0]["id"]: "ended_at is not an ISO 8601 time",
        calls_api.calls[1]["id"]: "not a valid report: message.messages.0.content: Missing data for required field.",
        calls_api.calls[2]["id"]: "not a valid report: message.analysis: Not a valid mapping type.",
    }


def test_dry_run_counts_and_stores_nothing(hub, calls_api):
    calls_api.calls = [ended_call(n) for n in range(3)]
    outcome = reconcile(hub, api(calls_api), *window(), dry_run=True)
    assert (outcome.seen, outcome.ingested, outcome.dry_run) == (3, 3, True)
    assert hub.store.list_reports() == []


# --- the API as it behaves ------------------------------------------------------------------------------

def test_a_refused_key_is_one_line_naming_the_key_and_never_showing_it(hub, calls_api, reconcile_config,
                                                                         tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HMS_API_KEY", "hms_live_wrong_key_0000000000")
    config = write_toml(tmp_path / "hub.toml", reconcile_config)
    with caplog.at_level(logging.DEBUG):
        result = CliRunner().invoke(cli, ["reconcile", "-c", config])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: sources.hms.api_key: the calls API refused the key (401 Invalid API "
                                     "key); set it to a valid API key of the platform account")
    assert "hms_live_wrong_key" not in result.output + caplog.text and "Traceback" not in result.output


def test_429_and_5xx_are_retried_with_the_sdks_backoff(hub, calls_api, caplog):
    calls_api.calls = [ended_call(1)]
    calls_api.fail = [429, 503, 502]
    sleeps = []
    with caplog.at_level(logging.INFO):
        assert reconcile(hub, api(calls_api, sleeps), *window()).ingested == 1
    assert sleeps == [1.0, 2.0, 4.0]
    assert API_KEY not in caplog.text and "reconcile.retry" in caplog.text


def test_an_api_that_keeps_failing_stops_after_the_last_backoff_of_8_seconds(calls_api, caplog):
    calls_api.fail = [503] * 10
    sleeps = []
    with caplog.at_level(logging.INFO), pytest.raises(CallsApiError) as info:
        list(api(calls_api, sleeps).ended_calls(*window()))
    assert sleeps == [1.0, 2.0, 4.0, 8.0]
    assert str(info.value) == "the calls API answered 503 Slow down, after 5 tries"
    assert API_KEY not in caplog.text + str(info.value)


def test_an_unreachable_api_is_retried_then_one_line(hub):
    sleeps = []
    unreachable = CallsApi("http://127.0.0.1:9/api/v1", API_KEY, sleep=sleeps.append)
    with pytest.raises(CallsApiError) as info:
        reconcile(hub, unreachable, *window())
    assert str(info.value) == "could not reach the calls API (ConnectionError), after 5 tries"
    assert sleeps == [1.0, 2.0, 4.0, 8.0]


def test_a_missing_key_is_one_line_naming_the_key(tmp_path, hub_config):
    from hub.testing import migrated

    migrated(hub_config["store"]["url"])
    config = tmp_path / "hub.toml"
    config.write_text(f'[store]\nurl = {json.dumps(hub_config["store"]["url"])}\n'
                      f'[sources.hms]\nsecret = {json.dumps(TEST_SECRET)}\n')
    result = CliRunner().invoke(cli, ["reconcile", "-c", str(config)])
    assert result.exit_code == 1
    assert result.output.strip() == ('Error: sources.hms.api_key: not set; set api_key = { env = "HMS_API_KEY" } '
                                     'to an API key of the platform account')


def test_the_mapping_refuses_a_call_that_has_not_ended():
    with pytest.raises(Unusable) as info:
        report_payload(ended_call(1, status="in-progress"))
    assert str(info.value) == "its status is 'in-progress', not 'ended'"


# --- on a schedule, once across processes -------------------------------------------------------------

def test_the_schedule_runs_once_across_processes_and_shows_on_the_dashboard_and_metrics(
        reconcile_config, calls_api):
    from hub.app import create_app
    from hub.testing import migrated

    reconcile_config["sources"]["hms"]["reconcile"] = {"every": "15m", "window": "24h"}
    migrated(reconcile_config["store"]["url"])
    apps = [create_app(config_data=reconcile_config, start_dispatcher=False) for _ in range(3)]
    calls_api.calls = [ended_call(n) for n in range(5)]
    try:
        schedulers = [scheduler_for(app.hub, sleep=lambda _: None) for app in apps]
        barrier = threading.Barrier(len(schedulers))
        results = []

        def offer(scheduler):
            barrier.wait()
            results.append(scheduler.run_if_due())

        threads = [threading.Thread(target=offer, args=(s,)) for s in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ran = [r for r in results if r is not None]
        assert len(ran) == 1 and (ran[0]["seen"], ran[0]["ingested"]) == (5, 5)
        assert all(s.run_if_due() is None for s in schedulers), "not due again for 15 minutes"
        assert len(apps[0].hub.store.list_reports()) == 5

        client = apps[1].test_client()
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'sovereign_hub_reconcile_last_run_calls{outcome="ingested"} 5.0' in metrics
        assert 'sovereign_hub_reconcile_last_run_calls{outcome="seen"} 5.0' in metrics
        assert "sovereign_hub_reconcile_last_run_failed 0.0" in metrics
        assert "sovereign_hub_reconcile_last_run_timestamp_seconds " in metrics
        form = client.get("/login").get_data(as_text=True)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        client.post("/login", data={"csrf_token": csrf, "token": reconcile_config["admin"]["token"], "next": "/"})
        page = client.get("/").get_data(as_text=True)
        assert "Every 15m 0s, over the last 24h 0m 0s." in page
        assert "5 seen, 0 already received,\n      5 ingested, 0 skipped" in page
    finally:
        for app in apps:
            app.hub.close()


def test_a_scheduled_run_that_fails_is_recorded_and_shown_without_the_key(reconcile_config, calls_api):
    from hub.app import create_app
    from hub.testing import migrated

    reconcile_config["sources"]["hms"].update(reconcile={"every": "15m"}, api_key="hms_live_wrong_key_000000")
    migrated(reconcile_config["store"]["url"])
    app = create_app(config_data=reconcile_config, start_dispatcher=False)
    try:
        result = scheduler_for(app.hub).run_if_due()
        assert result == {"error": "CallsApiError: sources.hms.api_key: the calls API refused the key (401 Invalid "
                                   "API key); set it to a valid API key of the platform account"}
        metrics = app.test_client().get("/metrics").get_data(as_text=True)
        assert "sovereign_hub_reconcile_last_run_failed 1.0" in metrics and "hms_live_wrong_key" not in metrics
    finally:
        app.hub.close()


@pytest.mark.parametrize("reconcile, problem", [
    ({"every": "15m"}, 'sources.hms.reconcile: needs sources.hms.api_key: set api_key = { env = "HMS_API_KEY" } '
                       "(an API key of the platform account)"),
    ({"every": "soon", "window": "24h"}, "sources.hms.reconcile.every: 'soon' is not a duration: use a number and a "
                                         "unit, e.g. 30s, 15m, 24h, 7d"),
])
def test_a_schedule_that_cannot_run_is_a_config_problem_naming_the_key(hub_config, reconcile, problem):
    from hub.config import ConfigProblems, load_config
    from hub.plugins import collect, make_manager

    hub_config["sources"]["hms"]["reconcile"] = reconcile
    if "window" in reconcile:
        hub_config["sources"]["hms"]["api_key"] = API_KEY
    with pytest.raises(ConfigProblems) as info:
        load_config(None, collect(make_manager()), data=hub_config)
    assert info.value.problems == [problem]


def test_running_worker_processes_reconcile_by_themselves_once_between_them(calls_api, tmp_path):
    """Two real ``sovereign-hub worker`` processes with a schedule: the calls missed come back
    without anyone running a command, fetched by one of the two (one page asked for, once)."""
    import sqlite3
    import time

    from hub.testing import kill_process_group, migrated, start_hub_process

    calls_api.calls = [ended_call(n) for n in range(3)]
    db = tmp_path / "hub.db"
    config = tmp_path / "hub.toml"
    config.write_text(f'[store]\nurl = {json.dumps(migrated(f"sqlite:///{db}"))}\n'
                      f'[dispatch]\npoll_interval = 0.1\n'
                      f'[sources.hms]\nsecret = {json.dumps(TEST_SECRET)}\napi_key = {json.dumps(API_KEY)}\n'
                      f'api_url = {json.dumps(calls_api.url)}\n'
                      f'[sources.hms.reconcile]\nevery = "1h"\nwindow = "24h"\n'
                      f'[destinations.file]\ntype = "jsonl"\npath = {json.dumps(str(tmp_path / "calls.jsonl"))}\n')
    workers = [start_hub_process("worker", config, tmp_path, f"worker-{n}.log") for n in range(2)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = tmp_path / "calls.jsonl"
            if out.exists() and len(out.read_text().splitlines()) == 3:
                break
            time.sleep(0.2)
        time.sleep(1)  # the other process has offered by now, and found the job taken
        assert all(w.poll() is None for w in workers), [(tmp_path / f"worker-{n}.log").read_text() for n in range(2)]
    finally:
        for w in workers:
            kill_process_group(w)
    delivered = [json.loads(line)["call"]["id"] for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert sorted(delivered) == sorted(c["id"] for c in calls_api.calls)
    assert len(calls_api.requests) == 1, calls_api.requests
    with sqlite3.connect(db) as conn:
        result = json.loads(conn.execute("SELECT last_result FROM scheduled_jobs WHERE name = 'reconcile'").fetchone()[0])
        stored = "\n".join(conn.iterdump())
    assert (result["seen"], result["ingested"]) == (3, 3), result
    assert API_KEY not in stored + "".join((tmp_path / f"worker-{n}.log").read_text() for n in range(2))
