"""Erasure at the destinations, queued and run by the hub like a delivery (hub.erasures).

``forget --destinations`` (CLI, API, dashboard) queues one erasure per enabled destination that
can erase and returns at once; the running hub attempts each (here HubSpot's GDPR delete, mocked
with ``responses``), retries it on ``[dispatch] retry_delays`` up to ``max_attempts``, holds it
while the destination is paused, picks it up again after a restart, and drops the number the
moment it ends. Every attempt is recorded, scrubbed, and shown by ``sovereign-hub erasures``, the
API and the dashboard's erasures page.
"""
from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
import responses
import sqlalchemy as sa

from hub import erasures, sessions
from hub import operations as ops
from hub.store import destination_erasures, metadata, utcnow
from hub.testing import load_sample, wait_until

pytestmark = pytest.mark.hub_plugins("hubspot")

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HUBSPOT_TOKEN = "pat-eu1-erasure-token-0000"
API = "https://api.hubapi.com"
SEARCH = f"{API}/crm/objects/2026-03/contacts/search"
GDPR = f"{API}/crm/objects/2026-03/contacts/gdpr-delete"
CONTACT = {"id": "51", "properties": {"phone": "06-23456789"}}
CALLER = "+31623456789"  # the sample's customer
NUMBER_FORMS = ["+31623456789", "0031623456789", "623456789", "23456789"]
CANNOT = "cannot erase: the 'jsonl' type has no erasure (what it was sent stays there)"
HOUR = 3600


@pytest.fixture
def hub_config(hub_config, tmp_path):
    hub_config["dispatch"].update(retry_delays=[HOUR], max_attempts=3)
    hub_config["destinations"] = {"crm": {"type": "hubspot", "token": HUBSPOT_TOKEN},
                                  "archive": {"type": "jsonl", "path": str(tmp_path / "calls.jsonl")}}
    return hub_config


def hubspot_knows_the_caller(mocked_http, *gdpr_answers: dict) -> None:
    mocked_http.post(SEARCH, json={"total": 1, "results": [CONTACT]})
    for answer in gdpr_answers or ({"status": 204},):
        mocked_http.post(GDPR, **answer)


def queued_rows(app) -> list[dict]:
    with app.hub.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(destination_erasures))]


def make_due(app) -> None:
    """What an hour's wait would do: every pending erasure is due now."""
    with app.hub.store.engine.begin() as conn:
        conn.execute(destination_erasures.update().values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def every_table(app) -> dict[str, str]:
    with app.hub.store.engine.connect() as conn:
        return {t.name: json.dumps([dict(r._mapping) for r in conn.execute(sa.select(t))], default=str)
                for t in metadata.sorted_tables}


def assert_number_nowhere(app) -> None:
    for name, text in every_table(app).items():
        for form in NUMBER_FORMS:
            assert form not in text, f"{form!r} in table {name}: {text[:400]}"


def post_call(client) -> str:
    from hub.testing import signed_headers

    body = json.dumps(load_sample("end-of-call-report-full")).encode()
    answer = client.post("/webhooks/hms", data=body, headers=signed_headers(body))
    assert answer.status_code == 202
    return answer.get_json()["report_id"]


# --- queued, then run by the hub -------------------------------------------------------------------

def test_forget_queues_the_erasure_and_the_running_hub_gdpr_deletes_the_contact(app, runner, mocked_http):
    hubspot_knows_the_caller(mocked_http)
    post_call(app.test_client())
    result = runner.invoke(["forget", "0623456789", "--destinations"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "erased +316*****789: 1 reports, 2 deliveries, 0 attempts (erasure 1)",
        f"  archive: {CANNOT}",
        "  crm: queued",
        "the running hub erases at the destinations; follow them with `sovereign-hub erasures 1`"]
    assert len(mocked_http.calls) == 0, "the CLI itself sends nothing"
    [row] = queued_rows(app)
    assert (row["destination"], row["status"], row["subject"], row["attempts"]) == ("crm", "pending", CALLER, 0)

    assert erasures.run_due(app.hub) == {"succeeded": 1, "retry": 0, "dead": 0}
    search, delete = mocked_http.calls
    assert (delete.request.method, delete.request.url) == ("POST", GDPR)
    assert json.loads(delete.request.body) == {"objectId": "51"}
    assert delete.request.headers["Authorization"] == f"Bearer {HUBSPOT_TOKEN}"
    [row] = queued_rows(app)
    assert (row["status"], row["subject"], row["attempts"], row["result"]) == (
        "succeeded", None, 1, "GDPR-deleted 1 contact(s): 51")
    assert erasures.run_due(app.hub) == {"succeeded": 0, "retry": 0, "dead": 0}, "done once"

    shown = runner.invoke(["erasures", "1"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith("erasure 1 at ") and lines[0].endswith(" by cli: 1 reports, 2 deliveries, 0 attempts")
    assert lines[1:3] == [f"  archive: {CANNOT}", "  crm: erased (1 attempt): GDPR-deleted 1 contact(s): 51"]
    assert lines[3].startswith("    attempt 1 at ") and lines[3].endswith(": succeeded")
    assert_number_nowhere(app)


def test_a_failing_erasure_retries_on_the_schedule_then_goes_dead_and_says_so(app, runner, mocked_http):
    hubspot_knows_the_caller(mocked_http, {"status": 503, "body": f"upstream down for {CALLER}"})
    started = time.monotonic()
    result = runner.invoke(["forget", CALLER, "--destinations"])
    assert result.exit_code == 0 and time.monotonic() - started < 30, "the CLI returns without waiting an hour"

    before = utcnow()
    assert erasures.run_due(app.hub) == {"succeeded": 0, "retry": 1, "dead": 0}
    [job] = ops.get_erasure(app.hub, 1).queued
    assert job.status == "pending" and job.attempts == 1
    # retry_delays = [3600] with the dispatcher's 10 % jitter
    assert before + timedelta(seconds=0.89 * HOUR) <= job.next_attempt_at <= utcnow() + timedelta(seconds=1.11 * HOUR)
    assert job.last_error.startswith("destination 'crm': HTTP 503") and "+316*****789" in job.last_error
    assert erasures.run_due(app.hub) == {"succeeded": 0, "retry": 0, "dead": 0}, "not due for an hour"
    pending = runner.invoke(["erasures"])
    assert pending.exit_code == 0 and "  crm: pending (1 attempt so far), next attempt " in pending.output

    make_due(app)
    assert erasures.run_due(app.hub)["retry"] == 1
    make_due(app)
    assert erasures.run_due(app.hub) == {"succeeded": 0, "retry": 0, "dead": 1}, "max_attempts = 3"
    [job] = ops.get_erasure(app.hub, 1).queued
    assert (job.status, job.attempts, job.next_attempt_at) == ("dead", 3, None)
    assert [a.outcome for a in job.attempt_log] == ["retry", "retry", "dead"]
    assert all(a.http_status == 503 and "+316*****789" in a.error for a in job.attempt_log)
    assert [c.request.url for c in mocked_http.calls] == [SEARCH, GDPR] * 3

    shown = runner.invoke(["erasures", "1"])
    assert shown.exit_code == 1, "a dead erasure is a failure"
    assert "  crm: dead after 3 attempts: destination 'crm': HTTP 503" in shown.output
    listed = runner.invoke(["erasures"])
    assert listed.exit_code == 0 and "  crm: dead after 3 attempts" in listed.output, "a list is not a failure"
    assert queued_rows(app)[0]["subject"] is None
    assert_number_nowhere(app)


def test_a_permanent_refusal_is_dead_at_once_and_an_unknown_caller_is_a_success(app, mocked_http):
    mocked_http.post(SEARCH, json={"total": 1, "results": [CONTACT]})
    mocked_http.post(GDPR, status=403, json={"status": "error", "category": "MISSING_SCOPES",
                                             "message": "This app hasn't been granted all required scopes"})
    ops.forget(app.hub, CALLER, actor="api", destinations=True)
    assert erasures.run_due(app.hub)["dead"] == 1
    [job] = ops.get_erasure(app.hub, 1).queued
    assert job.attempts == 1 and "crm.objects.contacts.write" in job.last_error

    mocked_http.replace(responses.POST, SEARCH, json={"total": 0, "results": []})
    ops.forget(app.hub, "+31611111111", actor="api", destinations=True)
    assert erasures.run_due(app.hub)["succeeded"] == 1
    assert ops.get_erasure(app.hub, 2).queued[0].result == "no HubSpot contact has this number"


def test_a_queued_erasure_survives_a_restart_and_a_killed_attempt_is_taken_up_again(register_plugin, mocked_http):
    hubspot_knows_the_caller(mocked_http, {"status": 503}, {"status": 204})
    first = register_plugin()
    ops.forget(first.hub, CALLER, actor="cli", destinations=True)
    assert erasures.run_due(first.hub)["retry"] == 1
    first.hub.close()

    second = register_plugin()  # the hub started again on the same store
    [job] = ops.get_erasure(second.hub, 1).queued
    assert job.status == "pending" and job.attempts == 1
    make_due(second)
    # a process claims it and dies mid-attempt: its lease runs out and the row comes back
    [claimed] = second.hub.store.claim_erasures("killed-process", 0.0, 10, ["crm"])
    assert claimed.attempts == 2 and claimed.subject == CALLER
    assert erasures.run_due(second.hub) == {"succeeded": 1, "retry": 0, "dead": 0}
    [job] = ops.get_erasure(second.hub, 1).queued
    assert (job.status, job.attempts) == ("succeeded", 3)
    assert [a.number for a in job.attempt_log] == [1, 3], "the killed attempt recorded nothing"
    assert_number_nowhere(second)


def test_each_erasure_is_claimed_by_one_process_only(app, register_plugin):
    ops.forget(app.hub, CALLER, actor="cli", destinations=True)
    other = register_plugin()
    taken = []
    barrier = threading.Barrier(2)

    def claim(hub, owner):
        barrier.wait()
        taken.extend(hub.store.claim_erasures(owner, 60, 10, ["crm"]))

    threads = [threading.Thread(target=claim, args=(hub, owner))
               for hub, owner in ((app.hub, "a"), (other.hub, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(taken) == 1


def test_a_paused_destination_holds_its_erasures_until_it_is_resumed(app, client, mocked_http):
    hubspot_knows_the_caller(mocked_http)
    ops.pause_destination(app.hub, "crm")
    ops.forget(app.hub, CALLER, actor="api", destinations=True)
    assert erasures.run_due(app.hub) == {"succeeded": 0, "retry": 0, "dead": 0}
    assert not app.hub.store.has_due_erasures(["crm"])
    answer = client.get("/api/erasures/1", headers=AUTH).get_json()
    assert answer["queued"][0]["status"] == "pending"
    assert answer["queued"][0]["held"] == "the destination is paused; the erasure runs when it is resumed"
    assert len(mocked_http.calls) == 0

    ops.resume_destination(app.hub, "crm")
    assert erasures.run_due(app.hub)["succeeded"] == 1


def test_the_runner_thread_of_a_running_hub_does_the_work(app, mocked_http):
    hubspot_knows_the_caller(mocked_http)
    runner = erasures.runner_for(app.hub, poll=0.05).start()
    try:
        ops.forget(app.hub, CALLER, actor="cli", destinations=True)
        assert wait_until(lambda: ops.get_erasure(app.hub, 1).ended)
    finally:
        runner.stop(timeout=10)
    assert ops.get_erasure(app.hub, 1).queued[0].status == "succeeded"


def test_forget_wait_follows_the_erasures_the_running_hub_makes(app, runner, mocked_http):
    hubspot_knows_the_caller(mocked_http, {"status": 503}, {"status": 204})
    app.hub.dispatcher.policy.delays = [0.05]
    running = erasures.runner_for(app.hub, poll=0.05).start()
    try:
        result = runner.invoke(["forget", CALLER, "--destinations", "--wait", "--timeout", "60"])
    finally:
        running.stop(timeout=10)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:3] == ["erased +316*****789: 0 reports, 0 deliveries, 0 attempts (erasure 1)",
                         f"  archive: {CANNOT}", "  crm: queued"]
    assert lines[-1] == "  crm: erased (2 attempts): GDPR-deleted 1 contact(s): 51"


def test_forget_wait_stops_at_its_timeout_when_no_hub_runs_them(app, runner):
    result = runner.invoke(["forget", CALLER, "--destinations", "--wait", "--timeout", "0.3"])
    assert result.exit_code == 2, result.output
    assert "  crm: pending (0 attempts so far), next attempt " in result.output
    assert "stopped waiting: the hub goes on with the erasures still pending" in result.output
    assert queued_rows(app)[0]["status"] == "pending"


def test_forget_wait_without_destinations_is_a_usage_error_that_changes_nothing(app, runner):
    post_call(app.test_client())
    result = runner.invoke(["forget", CALLER, "--wait"])
    assert result.exit_code == 2 and "--wait and --timeout follow the destinations' erasures" in result.output
    assert app.hub.store.list_erasures() == [] and len(app.hub.store.customer_report_ids(CALLER)) == 1


# --- the API ------------------------------------------------------------------------------------------

def test_the_api_queues_with_destinations_true_and_answers_each_erasure_state(app, client, mocked_http):
    hubspot_knows_the_caller(mocked_http)
    post_call(client)
    answer = client.delete("/api/customers/0623456789?destinations=true", headers=AUTH)
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["status"], body["number"], body["counts"]) == (
        "erased", "+316*****789", {"reports": 1, "deliveries": 2, "attempts": 0})
    assert body["destinations"] == {"archive": CANNOT, "crm": "queued"}
    erasure = body["erasure"]
    assert (erasure["id"], erasure["actor"], erasure["ended"]) == (1, "api", False)
    [queued] = erasure["queued"]
    assert queued | {"next_attempt_at": None, "updated_at": None} == {
        "destination": "crm", "status": "pending", "attempts": 0, "next_attempt_at": None, "held": None,
        "last_error": None, "result": None, "updated_at": None, "attempt_log": []}

    erasures.run_due(app.hub)
    one = client.get("/api/erasures/1", headers=AUTH)
    assert one.status_code == 200
    [done] = one.get_json()["queued"]
    assert (done["status"], done["result"], done["next_attempt_at"]) == (
        "succeeded", "GDPR-deleted 1 contact(s): 51", None)
    assert [(a["number"], a["outcome"], a["http_status"]) for a in done["attempt_log"]] == [(1, "succeeded", 204)]
    listed = client.get("/api/erasures?limit=5", headers=AUTH).get_json()
    assert [e["id"] for e in listed["erasures"]] == [1] and listed["erasures"][0]["ended"] is True
    for form in NUMBER_FORMS:
        assert form not in one.get_data(as_text=True) + json.dumps(listed)


def test_the_api_without_destinations_queues_nothing(app, client):
    body = client.delete(f"/api/customers/{CALLER}", headers=AUTH).get_json()
    assert body["destinations"] == {} and body["erasure"]["queued"] == [] and body["erasure"]["ended"] is True
    assert queued_rows(app) == []


@pytest.mark.parametrize("path, status, code, param", [
    ("/api/erasures/99", 404, "erasure_not_found", None),
    ("/api/erasures/x", 404, "erasure_not_found", None),
    ("/api/erasures/99999999999999999999", 404, "erasure_not_found", None),
    ("/api/erasures?limit=0", 400, "invalid_parameter", "limit"),
    ("/api/erasures/1?x=1", 400, "invalid_parameter", "x"),
])
def test_erasure_reads_name_what_is_wrong(app, client, path, status, code, param):
    ops.forget(app.hub, CALLER, actor="api")
    answer = client.get(path, headers=AUTH)
    assert answer.status_code == status
    body = answer.get_json()
    assert body["error"] == code and (param is None or body["details"]["param"] == param)


def test_a_forget_with_a_bad_destinations_flag_is_a_400_and_erases_nothing(app, client):
    report_id = post_call(client)
    answer = client.delete(f"/api/customers/{CALLER}?destinations=maybe", headers=AUTH)
    assert answer.status_code == 400 and answer.get_json()["details"]["param"] == "destinations"
    assert app.hub.store.get_report(report_id) is not None and app.hub.store.list_erasures() == []


def test_the_erasure_routes_need_the_token(app, client):
    assert client.get("/api/erasures").status_code == 401
    assert client.get("/api/erasures/1").status_code == 401


# --- the dashboard (without a browser; the Chromium test is in test_dashboard_browser.py) ----------

def test_the_erasures_page_shows_each_destinations_erasure_and_never_the_number(app, mocked_http):
    hubspot_knows_the_caller(mocked_http, {"status": 503, "body": f"no luck for {CALLER}"})
    client = app.test_client()
    post_call(client)
    with client.session_transaction() as session:
        session.update(sid=sessions.start(app.hub.store, timedelta(hours=1)), csrf="csrf-token")
    answer = client.post(f"/customers/{CALLER}/forget", data={"csrf_token": "csrf-token", "destinations": "yes"})
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/erasures#erasure-1")
    erasures.run_due(app.hub)
    page = client.get("/erasures").get_data(as_text=True)
    assert 'data-erasure-id="1"' in page and 'data-destination="crm" data-status="pending"' in page
    assert 'data-destination="archive" data-status="cannot-erase"' in page
    assert "HTTP 503" in page and "+316*****789" in page
    for form in NUMBER_FORMS:
        assert form not in page


# --- real processes: the worker runs them, and a killed worker's erasure is taken up again ---------

class LocalHubSpot:
    """HubSpot's contact search and GDPR delete on 127.0.0.1: the first GDPR delete answers 503,
    the next ones 204; every request is kept (path, JSON body)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from hub.testing import answer_json

        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append((self.path, body))
                if self.path.endswith("/contacts/search"):
                    answer_json(self, 200, {"total": 1, "results": [CONTACT]})
                elif sum(1 for path, _ in seen if path.endswith("/gdpr-delete")) == 1:
                    answer_json(self, 503, {"status": "error", "message": "try later"})
                else:
                    self.send_response(204)
                    self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def gdpr_deletes(self) -> list[dict]:
        return [body for path, body in self.seen if path.endswith("/gdpr-delete")]


def test_the_worker_process_runs_the_erasure_and_a_restarted_one_finishes_it(hub_config, runner, tmp_path):
    from hub.testing import kill_process_group, migrated, start_hub_process, toml_text

    hubspot = LocalHubSpot()
    hub_config["destinations"]["crm"]["base_url"] = hubspot.url
    hub_config["dispatch"].update(retry_delays=[1], max_attempts=3)
    config = tmp_path / "worker.toml"
    config.write_text(toml_text(hub_config))
    migrated(hub_config["store"]["url"])
    assert runner.invoke(["forget", CALLER, "--destinations"]).exit_code == 0

    def state():
        return runner.invoke(["erasures", "1"]).output

    worker = start_hub_process("worker", config, tmp_path, "worker-1.log")
    try:
        assert wait_until(lambda: len(hubspot.gdpr_deletes()) == 1, timeout=60), (tmp_path / "worker-1.log").read_text()
        assert wait_until(lambda: "crm: pending (1 attempt so far)" in state(), timeout=30), state()
        assert wait_until(lambda: '"erasure.retry"' in (tmp_path / "worker-1.log").read_text(), timeout=10)
    finally:
        kill_process_group(worker)  # killed, not stopped: nothing is handed back
    worker = start_hub_process("worker", config, tmp_path, "worker-2.log")
    try:
        assert wait_until(lambda: "crm: erased (2 attempts)" in state(), timeout=60), (
            state() + (tmp_path / "worker-2.log").read_text())
        # the log line follows the stored outcome: a kill in between would lose it
        assert wait_until(lambda: '"erasure.succeeded"' in (tmp_path / "worker-2.log").read_text(), timeout=10)
    finally:
        kill_process_group(worker)
    assert hubspot.gdpr_deletes() == [{"objectId": "51"}, {"objectId": "51"}]
    hubspot.server.shutdown()
    for log, event in (("worker-1.log", '"erasure.retry"'), ("worker-2.log", '"erasure.succeeded"')):
        text = (tmp_path / log).read_text()
        assert event in text, text
        for form in NUMBER_FORMS:
            assert form not in text, f"{form!r} in {log}"
