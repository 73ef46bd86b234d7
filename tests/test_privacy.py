"""Personal data: retention (prune, once across processes), erasure of one caller (CLI, API,
dashboard), access (export), minimization (store_messages / store_raw)."""
from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hub import Destination, Result, hookimpl, jobs, retention, sessions
from hub import operations as ops
from hub.erasures import run_due
from hub.store import attempts, deliveries, erasures, reports, scheduled_jobs, utcnow
from hub.testing import WebhookReceiver, load_sample, wait_until

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CALLER = "+31623456789"  # the sample's customer ("+31 6 2345 6789")


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def hub_config(hub_config, receiver, tmp_path):
    hub_config["dispatch"].update(retry_delays=[0], max_attempts=1)
    hub_config["destinations"] = {
        "archive": {"type": "jsonl", "path": str(tmp_path / "calls.jsonl")},
        "hook": {"type": "webhook", "url": receiver.url},
    }
    return hub_config


def post_call(signed_post, call_id: str, *, number: str = "+31 6 2345 6789", days_ago: float = 0) -> str:
    payload = load_sample("end-of-call-report-full")
    payload["message"]["call"]["id"] = call_id
    payload["message"]["customer"]["number"] = number
    payload["message"]["timestamp"] = (utcnow() - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")
    answer = signed_post(payload)
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()["report_id"]


def counts(app) -> dict[str, int]:
    with app.hub.store.engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                for t in (reports, deliveries, attempts, erasures)}


def dashboard_client(app):
    client = app.test_client()
    with client.session_transaction() as session:
        session.update(sid=sessions.start(app.hub.store, timedelta(hours=1)), csrf="csrf-token")  # a live session
    return client


# --- erasure ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["+31623456789", "0623456789", "+31 (0)6 2345 6789", "0031623456789"])
def test_forget_over_the_api_erases_every_row_of_the_caller_whatever_the_format(app, client, signed_post, given):
    mine = [post_call(signed_post, "call-a"), post_call(signed_post, "call-b", number="06-23456789")]
    other = post_call(signed_post, "call-c", number="+31611111111")
    assert app.hub.dispatcher.run_due() == 6

    answer = client.delete(f"/api/customers/{given}", headers=AUTH)
    assert answer.status_code == 200
    body = answer.get_json()
    assert {k: body[k] for k in ("status", "number", "counts", "destinations")} == {
        "status": "erased", "number": "+316*****789", "counts": {"reports": 2, "deliveries": 4, "attempts": 4},
        "destinations": {}}
    assert body["erasure"]["counts"] == body["counts"] and body["erasure"]["queued"] == []
    assert all(app.hub.store.get_report(r) is None for r in mine)
    assert app.hub.store.get_report(other) is not None
    assert counts(app) == {"reports": 1, "deliveries": 2, "attempts": 2, "erasures": 1}
    [record] = app.hub.store.list_erasures()
    assert (record["actor"], record["reports"], record["deliveries"], record["attempts"]) == ("api", 2, 4, 4)
    with app.hub.store.engine.connect() as conn:
        text = json.dumps([dict(r._mapping) for r in conn.execute(sa.select(erasures))], default=str)
    assert "623456789" not in text and "charged" not in text


def test_forget_of_what_is_not_a_number_is_a_400_naming_it_and_changes_nothing(app, client, signed_post):
    post_call(signed_post, "call-a")
    before = counts(app)
    answer = client.delete("/api/customers/not-a-number", headers=AUTH)
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["error"] == "invalid_parameter" and body["details"] == {"param": "number"}
    assert body["message"].startswith("number: ") and "is not a phone number" in body["message"]
    assert counts(app) == before


def test_forget_from_the_cli_prints_the_counts_and_says_which_destinations_cannot_erase(app, runner, signed_post):
    post_call(signed_post, "call-a")
    assert app.hub.dispatcher.run_due() == 2
    result = runner.invoke(["forget", "0623456789", "--destinations"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "erased +316*****789: 1 reports, 2 deliveries, 2 attempts (erasure 1)",
        "  archive: cannot erase: the 'jsonl' type has no erasure (what it was sent stays there)",
        "  hook: cannot erase: the 'webhook' type has no erasure (what it was sent stays there)"]
    [record] = app.hub.store.list_erasures()
    assert record["actor"] == "cli" and record["destinations"] == {
        "archive": "cannot erase: the 'jsonl' type has no erasure (what it was sent stays there)",
        "hook": "cannot erase: the 'webhook' type has no erasure (what it was sent stays there)"}


def test_the_dashboard_button_erases_the_caller(app, signed_post):
    post_call(signed_post, "call-a")
    client = dashboard_client(app)
    page = client.get(f"/customers/{CALLER}").get_data(as_text=True)
    assert 'id="forget"' in page and f'action="/customers/{CALLER}/forget"' in page.replace("%2B", "+")
    answer = client.post(f"/customers/{CALLER}/forget", data={"csrf_token": "csrf-token"})
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/erasures#erasure-1")
    with client.session_transaction() as session:
        assert session["_flashes"] == [("ok", "Erased +316*****789: 1 reports, 2 deliveries, 0 attempts.")]
    assert counts(app)["reports"] == 0 and app.hub.store.list_erasures()[0]["actor"] == "dashboard"


def test_a_delivery_in_flight_when_its_caller_is_erased_is_stopped_not_resent(app, signed_post, receiver):
    """The webhook is held mid-request while the caller is erased: the attempt ends, records
    nothing, and the delivery is never attempted again."""
    post_call(signed_post, "call-a")
    receiver.hold = threading.Event()
    worker = threading.Thread(target=app.hub.dispatcher.run_due)
    worker.start()
    assert wait_until(lambda: receiver.snapshot()[0])
    assert ops.forget(app.hub, CALLER, actor="api").counts["reports"] == 1
    receiver.hold.set()
    worker.join(10)
    assert counts(app) == {"reports": 0, "deliveries": 0, "attempts": 0, "erasures": 1}
    assert app.hub.dispatcher.run_due() == 0 and len(receiver.snapshot()[0]) == 1


# --- access ----------------------------------------------------------------------------------------

def test_export_customer_holds_every_report_delivery_and_attempt_of_the_caller(app, client, runner, signed_post,
                                                                             tmp_path):
    first = post_call(signed_post, "call-a", days_ago=2)
    second = post_call(signed_post, "call-b", number="0623456789")
    post_call(signed_post, "call-c", number="+31611111111")
    assert app.hub.dispatcher.run_due() == 6

    answer = client.get("/api/customers/0623456789/export", headers=AUTH)
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["number"] == CALLER and [r["report"]["id"] for r in body["reports"]] == [first, second]
    for item in body["reports"]:
        assert item["report"]["customer"]["number"] == CALLER and item["report"]["messages"]
        assert sorted(d["destination"] for d in item["deliveries"]) == ["archive", "hook"]
        assert all(d["status"] == "succeeded" and len(d["attempt_log"]) == 1 for d in item["deliveries"])

    result = runner.invoke(["export-customer", CALLER, "-o", str(tmp_path / "export.json")])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "export.json").read_text())
    assert written["reports"] == body["reports"]
    assert (tmp_path / "export.json").stat().st_mode & 0o777 == 0o600


# --- retention -------------------------------------------------------------------------------------

@pytest.fixture
def retained(hub_config):
    hub_config["privacy"] = {"retention_days": 30}
    return hub_config


def test_prune_removes_expired_reports_and_keeps_those_with_a_delivery_unfinished(retained, app, runner,
                                                                                 signed_post, receiver):
    old = post_call(signed_post, "call-old", days_ago=40)
    young = post_call(signed_post, "call-young", days_ago=5)
    assert app.hub.dispatcher.run_due() == 4
    waiting = post_call(signed_post, "call-waiting", days_ago=45)  # its deliveries are still pending

    dry = runner.invoke(["prune", "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith("would remove 1 reports, 2 deliveries, 2 attempts"), \
        dry.output
    assert app.hub.store.get_report(old) is not None

    result = runner.invoke(["prune"])
    assert result.exit_code == 0 and result.output.startswith("removed 1 reports, 2 deliveries, 2 attempts")
    assert app.hub.store.get_report(old) is None
    assert app.hub.store.get_report(young) is not None and app.hub.store.get_report(waiting) is not None

    assert app.hub.dispatcher.run_due() == 2  # the waiting report's deliveries end: now it expires too
    assert runner.invoke(["prune"]).output.startswith("removed 1 reports, 2 deliveries, 2 attempts")
    assert [r.id for r in app.hub.store.list_reports()] == [young]


def test_prune_without_a_retention_says_which_key_to_set(app, runner):
    result = runner.invoke(["prune"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: [privacy] retention_days is not set, so nothing expires; set it to "
                                     "the number of days a report is kept.")


def test_the_scheduled_prune_runs_once_across_processes_and_keeps_its_counts(retained, app, signed_post):
    post_call(signed_post, "call-old", days_ago=40)
    assert app.hub.dispatcher.run_due() == 2
    first = retention.scheduler_for(app.hub)
    second = retention.scheduler_for(app.hub)
    second.owner = "another-node:1"
    outcomes = []
    threads = [threading.Thread(target=lambda s=s: outcomes.append(s.run_if_due())) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes, key=str) == [None, {"attempts": 2, "deliveries": 2, "reports": 1}]
    assert jobs.last_run(app.hub.store, retention.JOB).result == {"attempts": 2, "deliveries": 2, "reports": 1}
    with app.hub.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(scheduled_jobs)).scalar() == 1


# --- minimization ----------------------------------------------------------------------------------

@pytest.fixture
def minimal(hub_config):
    hub_config["privacy"] = {"store_messages": False, "store_raw": False}
    return hub_config


def test_transcript_and_raw_are_kept_while_a_delivery_is_unfinished_then_removed(minimal, app, client, signed_post,
                                                                                receiver):
    report_id = post_call(signed_post, "call-a")
    stored = app.hub.store.get_report(report_id)
    assert stored.messages and stored.raw and stored.not_kept == ()  # a retry after a crash sends them

    app.hub.dispatcher.run_due()
    [_, body] = receiver.snapshot()[1][0]
    assert body["messages"], "the delivery sent the transcript"
    stored = app.hub.store.get_report(report_id)
    assert stored.messages == [] and stored.raw == {} and stored.not_kept == ("messages", "raw")

    answer = client.get(f"/api/reports/{report_id}", headers=AUTH).get_json()
    assert answer["report"]["messages"] == [] and answer["report"]["not_kept"] == ["messages", "raw"]
    page = dashboard_client(app).get(f"/reports/{report_id}").get_data(as_text=True)
    assert "Transcript not kept" in page and "Raw payload not kept" in page


def test_a_report_no_destination_wants_is_stored_without_what_is_not_kept(minimal, app, signed_post):
    payload = load_sample("status-update")
    answer = signed_post(payload).get_json()
    stored = app.hub.store.get_report(answer["report_id"])
    assert stored.raw == {} and stored.not_kept == ("messages", "raw")


# --- scrubbing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "623456789", "0623456789", "06-23 45 67 89", "0031623456789", "0031 (0)6 23456789", "+31 (0)6 2345 6789",
    "+31623456789", "+31 6 2345 6789", "31623456789", "q=FIND+%7B31623456789+OR+0623456789%7D",
    "Phone+%3D+%27%2B31623456789%27", "+31+6+2345+6789"])
def test_the_number_in_play_is_masked_in_every_form(text):
    from hub.redaction import in_play, scrub

    with in_play([CALLER]):
        scrubbed = scrub(f"HTTP 400: {text} is not valid")
    assert "23456789" not in scrubbed.replace("+", "").replace("%2B", "") and "+316*****789" in scrubbed


def test_other_digits_are_left_alone_and_the_number_is_not_masked_outside_its_block():
    from hub.redaction import in_play, scrub

    with in_play([CALLER]):
        assert scrub("contact 1623456789 and deal 6234567890 at 2026-03-02") == \
            "contact 1623456789 and deal 6234567890 at 2026-03-02"
    assert scrub("623456789") == "623456789"


def test_a_secret_url_is_hidden_by_its_path_and_query_and_a_plain_path_is_not():
    from hub.redaction import register_secret, scrub

    register_secret("https://hooks.example.org/services/T0LEAK01/B0LEAK01/pathsecretpathsecret")
    register_secret("https://api.example.org/v1/hook?sig=querysecret42")
    register_secret("http://127.0.0.1:9/reports")
    text = scrub("Max retries exceeded with url: /services/T0LEAK01/B0LEAK01/pathsecretpathsecret (Caused by "
                 "x); also /v1/hook?sig=querysecret42 and GET /reports")
    assert text == "Max retries exceeded with url: [secret] (Caused by x); also [secret] and GET /reports"


def test_a_token_sent_in_an_attempt_is_hidden_in_that_attempts_errors_only():
    from hub.redaction import hold_secret, in_play, scrub

    with in_play():
        hold_secret("Bearer 00Dxx-runtime-access-token")
        assert scrub("refused 00Dxx-runtime-access-token") == "refused [secret]"
    assert scrub("refused 00Dxx-runtime-access-token") == "refused 00Dxx-runtime-access-token"


class _Broken(Destination):
    type = "broken_eraser"

    def deliver(self, report, ctx):
        return Result("delivered")

    def forget(self, number, ctx):
        raise RuntimeError(f"no such table for {number}")


class _BrokenPlugin:
    @hookimpl
    def register_destinations(self, register):
        register(_Broken)


def test_a_destination_whose_forget_breaks_is_its_own_dead_erasure_and_the_erasure_is_recorded(
        hub_config, register_plugin):
    hub_config["destinations"]["eraser"] = {"type": "broken_eraser"}
    app = register_plugin(_BrokenPlugin())
    outcome = ops.forget(app.hub, "0623456789", actor="cli", destinations=True)
    assert outcome.destinations["eraser"] == "queued"
    assert outcome.destinations["hook"] == \
        "cannot erase: the 'webhook' type has no erasure (what it was sent stays there)"
    assert app.hub.store.list_erasures()[0]["destinations"] == outcome.destinations
    assert run_due(app.hub) == {"succeeded": 0, "retry": 0, "dead": 1}  # max_attempts = 1
    [job] = ops.get_erasure(app.hub, outcome.erasure.id).queued
    assert job.status == "dead" and job.last_error == "unexpected RuntimeError: no such table for +316*****789"
