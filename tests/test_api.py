"""The admin API (/api/...) and the dashboard's server side, over Flask's test client and a real
SQLite file. Every API answer is also checked against the hub's own OpenAPI document."""
from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timedelta

import pytest
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_spec_validator import validate as validate_spec

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from hub.store import utcnow
from hub.testing import closed_port, load_sample, signed_headers

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CUSTOMER = "+31623456789"  # the full sample's "+31 6 2345 6789", normalized


@pytest.fixture
def hub_config(hub_config, tmp_path):
    hub_config["server"] = {"public_url": "http://localhost"}
    hub_config["dispatch"].update(retry_delays=[0], max_attempts=1)
    hub_config["destinations"] = {
        "archive": {"type": "jsonl", "path": str(tmp_path / "calls.jsonl")},
        "hook": {"type": "webhook", "url": f"http://127.0.0.1:{closed_port()}/calls",
                 "when": "analysis.intent == 'complaint'"},
        "spare": {"type": "jsonl", "path": str(tmp_path / "spare.jsonl"), "when": "`false`"},
    }
    return hub_config


@pytest.fixture
def spec(app):
    with app.test_request_context():
        from hub.views.api import openapi_document

        return openapi_document()


_OPENAPI: dict[str, OpenAPI] = {}


def openapi_for(spec: dict) -> OpenAPI:
    """Building the validator checks the whole document (half a second): once per distinct document."""
    key = json.dumps(spec, sort_keys=True)
    if key not in _OPENAPI:
        _OPENAPI[key] = OpenAPI.from_dict(spec)
    return _OPENAPI[key]


@pytest.fixture
def api(client, spec):
    """``api("get", "/api/...", **kw)``: an authorized call whose answer must match the OpenAPI document."""
    openapi = openapi_for(spec)

    def call(method: str, path: str, *, headers: dict | None = None, **kwargs):
        all_headers = {**AUTH, **(headers or {})}
        response = getattr(client, method)(path, headers=all_headers, **kwargs)
        # A fresh request for the validator: the one the app read has its body stream consumed.
        sent = Request(EnvironBuilder(path, method=method.upper(), headers=all_headers, **kwargs).get_environ())
        openapi.validate_response(WerkzeugOpenAPIRequest(sent), WerkzeugOpenAPIResponse(response))
        return response

    return call


def ingest(app, *, call_id: str, received_at: datetime | None = None, customer: str | None = "+31 6 2345 6789",
           sample: str = "end-of-call-report-full", **message_fields) -> str:
    """Store one report as the receiver would (routing included), at a chosen received_at."""
    payload = load_sample(sample)
    payload["message"]["call"]["id"] = call_id
    payload["message"]["customer"] = {"number": customer} if customer else {}
    payload["message"].update(message_fields)
    source = app.hub.sources["hms"]
    return app.hub.ingest("hms", source.schema.load(copy.deepcopy(payload)), payload,
                          received_at=received_at).report_id


@pytest.fixture
def seeded(app, signed_post):
    """Three reports: a complaint (archive + hook, the hook goes dead), an older happy call
    (archive only, succeeds) and a web call from another day. Returns their ids."""
    now = utcnow()
    body = signed_post(load_sample("end-of-call-report-full")).get_json()
    complaint = body["report_id"]
    happy = ingest(app, call_id="call-happy", received_at=now - timedelta(days=1),
                   customer="+31 6 1111 2222", analysis={"sentiment": 9, "intent": "support",
                                                         "resolved": True, "follow_up_needed": False})
    web = ingest(app, call_id="call-web", received_at=now - timedelta(days=3), customer=None,
                 analysis={"sentiment": 6, "intent": "other", "resolved": True, "follow_up_needed": False})
    assert app.hub.dispatcher.run_due() == 4
    return {"complaint": complaint, "happy": happy, "web": web}


def delivery_of(app, report_id: str, destination: str):
    found = app.hub.store.list_deliveries(report_id=report_id, destination=destination)
    assert len(found) == 1
    return found[0]


# --- auth ---------------------------------------------------------------------------

@pytest.mark.parametrize("headers, code", [
    ({}, "unauthorized"),
    ({"Authorization": f"Basic {TOKEN}"}, "unauthorized"),
    ({"Authorization": "Bearer "}, "unauthorized"),
    ({"Authorization": "Bearer test-admin-token-0123456780"}, "invalid_token"),
    ({"Authorization": f"Bearer {TOKEN}x"}, "invalid_token"),
])
def test_missing_or_wrong_token_is_401(client, headers, code):
    response = client.get("/api/reports", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == code
    assert set(response.get_json()) == {"error", "message", "details"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_api_route_requires_the_token(app, client):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api"):
            continue
        path = re.sub(r"<[^>]+>", "x", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(path, method=method)
            assert response.status_code == 401, (method, path)


@pytest.fixture
def no_admin(hub_config):
    hub_config["admin"] = {}
    return hub_config


def test_no_token_configured_disables_api_and_dashboard(no_admin, client):
    for path in ("/api/reports", "/api/openapi.json", "/", "/login", "/reports/abc"):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 503, path
        body = response.get_json()
        assert body["error"] == "admin_disabled"
        assert body["details"] == {"config_key": "admin.token"}
        assert "[admin] token" in body["message"]
    html = client.get("/", headers={"Accept": "text/html"})
    assert html.status_code == 503 and "[admin] token" in html.get_data(as_text=True)


# --- reports -------------------------------------------------------------------------

def test_list_reports_newest_first_with_every_field(app, api, seeded):
    response = api("get", "/api/reports")
    assert response.status_code == 200
    body = response.get_json()
    assert [r["id"] for r in body["reports"]] == [seeded["complaint"], seeded["happy"], seeded["web"]]
    assert (body["count"], body["limit"], body["offset"], body["next_offset"]) == (3, 50, 0, None)
    first = body["reports"][0]
    assert first["call"] == {"id": "0b7e9a52-5d0c-4a8e-9f3e-2f1c6d8a4b11", "type": "outbound_phone_call",
                             "direction": "outbound", "status": "ended"}
    assert first["customer"]["number"] == CUSTOMER
    assert first["duration_seconds"] == 312
    assert first["analysis"] == {"sentiment": 2, "intent": "complaint", "resolved": False, "follow_up_needed": True}
    assert first["analysis_errors"] == []
    assert first["recording_url"] == "https://recordings.example.com/0b7e9a52.mp3"
    assert len(first["messages"]) == 5
    assert first["raw"]["message"]["type"] == "end-of-call-report"
    assert body["reports"][2]["customer"]["number"] is None


def test_list_reports_filters_and_pages(api, seeded):
    now = utcnow()
    since = (now - timedelta(days=2)).isoformat().replace("+00:00", "Z")
    ids = [r["id"] for r in api("get", f"/api/reports?since={since}").get_json()["reports"]]
    assert ids == [seeded["complaint"], seeded["happy"]]
    until = (now - timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%S")
    ids = [r["id"] for r in api("get", f"/api/reports?until={until}").get_json()["reports"]]
    assert ids == [seeded["happy"], seeded["web"]]
    ids = [r["id"] for r in api("get", "/api/reports?customer=%2B31623456789").get_json()["reports"]]
    assert ids == [seeded["complaint"]]
    page = api("get", "/api/reports?limit=2").get_json()
    assert [r["id"] for r in page["reports"]] == [seeded["complaint"], seeded["happy"]]
    assert page["next_offset"] == 2
    page = api("get", "/api/reports?limit=2&offset=2").get_json()
    assert [r["id"] for r in page["reports"]] == [seeded["web"]]
    assert page["next_offset"] is None


@pytest.mark.parametrize("query, param", [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset"),
    ("since=yesterday", "since"), ("since=0001-01-01T00:00:00%2B14:00", "since"),  # no UTC form: was a 500
    ("until=2026-13-01", "until"), ("customer=0612345678", "customer"),
    ("costumer=%2B31612345678", "costumer"),
])
def test_bad_report_query_is_400_naming_the_param(api, query, param):
    response = api("get", f"/api/reports?{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_parameter"
    assert body["details"] == {"param": param}
    assert body["message"].startswith(f"{param}: ")


def test_report_with_deliveries_and_attempts(app, api, seeded):
    response = api("get", f"/api/reports/{seeded['complaint']}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["report"]["id"] == seeded["complaint"]
    archive, hook = body["deliveries"]
    assert (archive["destination"], archive["status"], archive["attempts"]) == ("archive", "succeeded", 1)
    assert archive["result"] and archive["last_error"] is None
    assert archive["attempt_log"][0]["outcome"] == "succeeded"
    assert (hook["destination"], hook["status"], hook["attempts"]) == ("hook", "dead", 1)
    assert hook["next_attempt_at"] is None
    assert "Connection" in hook["last_error"] and "gave up after 1 attempts" in hook["last_error"]
    [attempt] = hook["attempt_log"]
    assert attempt["number"] == 1
    assert attempt["outcome"] == "dead"
    assert attempt["http_status"] is None
    assert attempt["error"] == hook["last_error"]
    assert attempt["duration_ms"] >= 0
    assert attempt["started_at"].endswith("Z")
    assert hook["report_id"] == seeded["complaint"]


def test_unknown_report_is_404(api):
    response = api("get", "/api/reports/nope")
    assert response.status_code == 404
    assert response.get_json() == {"error": "report_not_found", "message": "No report with id 'nope'.",
                                   "details": {"report_id": "nope"}}


# --- deliveries -------------------------------------------------------------------------

def test_list_deliveries_filters(app, api, seeded):
    dead = api("get", "/api/deliveries?status=dead").get_json()
    assert [(d["destination"], d["report_id"]) for d in dead["deliveries"]] == [("hook", seeded["complaint"])]
    assert "attempt_log" not in dead["deliveries"][0]
    archive = api("get", "/api/deliveries?destination=archive").get_json()["deliveries"]
    assert sorted(d["report_id"] for d in archive) == sorted(seeded.values())
    assert {d["status"] for d in archive} == {"succeeded"}
    one = api("get", f"/api/deliveries?report_id={seeded['happy']}").get_json()["deliveries"]
    assert [d["destination"] for d in one] == ["archive"]
    assert len(api("get", "/api/deliveries?limit=1").get_json()["deliveries"]) == 1
    bad = api("get", "/api/deliveries?status=lost")
    assert bad.status_code == 400 and bad.get_json()["details"] == {"param": "status"}
    single = api("get", f"/api/deliveries/{one[0]['id']}").get_json()
    assert single["id"] == one[0]["id"] and len(single["attempt_log"]) == 1
    assert api("get", "/api/deliveries/nope").status_code == 404


def test_retry_requeues_one_dead_delivery(app, api, seeded):
    hook = delivery_of(app, seeded["complaint"], "hook")
    response = api("post", f"/api/deliveries/{hook.id}/retry")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert (body["delivery"]["id"], body["delivery"]["status"], body["delivery"]["attempts"]) == (hook.id, "pending", 0)
    assert delivery_of(app, seeded["complaint"], "archive").status == "succeeded"  # the other one untouched
    assert app.hub.dispatcher.run_due() == 1
    assert delivery_of(app, seeded["complaint"], "hook").status == "dead"
    assert len(app.hub.store.list_attempts(hook.id)) == 2  # the history is kept


def test_retry_of_a_running_delivery_is_409(app, api, seeded):
    hook = delivery_of(app, seeded["complaint"], "hook")
    app.hub.store.requeue(report_id=seeded["complaint"], destination="hook")
    assert app.hub.store.claim("someone-else", 60, delivery_id=hook.id) is not None
    response = api("post", f"/api/deliveries/{hook.id}/retry")
    assert response.status_code == 409
    assert response.get_json()["error"] == "delivery_running"
    assert api("post", "/api/deliveries/nope/retry").status_code == 404


def test_replay_creates_the_missing_delivery(app, api, seeded):
    response = api("post", f"/api/reports/{seeded['happy']}/replay", json={"destination": "spare"})
    assert response.status_code == 202
    body = response.get_json()
    assert [(d["destination"], d["status"]) for d in body["deliveries"]] == [("spare", "pending")]
    assert body["skipped_running"] == []
    assert app.hub.dispatcher.run_due() == 1
    assert delivery_of(app, seeded["happy"], "spare").status == "succeeded"


def test_replay_every_delivery_of_a_report(app, api, seeded):
    body = api("post", f"/api/reports/{seeded['complaint']}/replay").get_json()
    assert sorted(d["destination"] for d in body["deliveries"]) == ["archive", "hook"]
    assert {d["status"] for d in body["deliveries"]} == {"pending"}


@pytest.mark.parametrize("payload, status, code", [
    ({"destination": "nowhere"}, 409, "destination_not_configured"),
    ({"destination": 3}, 400, "invalid_parameter"),
    ({"target": "spare"}, 400, "invalid_parameter"),
    ([1, 2], 400, "invalid_parameter"),
])
def test_bad_replay_requests(api, seeded, payload, status, code):
    response = api("post", f"/api/reports/{seeded['happy']}/replay", json=payload)
    assert response.status_code == status
    assert response.get_json()["error"] == code
    assert api("post", "/api/reports/nope/replay").status_code == 404


def test_retry_dead(app, api, seeded):
    body = api("post", "/api/deliveries/retry-dead", json={"destination": "archive"}).get_json()
    assert body["requeued"] == 0
    response = api("post", "/api/deliveries/retry-dead")
    assert response.status_code == 202
    body = response.get_json()
    assert body["requeued"] == 1
    assert body["delivery_ids"] == [delivery_of(app, seeded["complaint"], "hook").id]
    assert body["skipped_unconfigured"] == {}
    assert delivery_of(app, seeded["complaint"], "hook").status == "pending"
    assert api("post", "/api/deliveries/retry-dead", json={"destination": "gone"}).status_code == 409


# --- stats ---------------------------------------------------------------------------

def test_stats(app, api, seeded):
    response = api("get", "/api/stats?days=5")
    assert response.status_code == 200
    body = response.get_json()
    assert body["days"] == 5
    assert body["deliveries"] == {
        "archive": {"pending": 0, "running": 0, "succeeded": 3, "dead": 0},
        "hook": {"pending": 0, "running": 0, "succeeded": 0, "dead": 1},
        "spare": {"pending": 0, "running": 0, "succeeded": 0, "dead": 0},
    }
    assert body["delivery_totals"] == {"pending": 0, "running": 0, "succeeded": 3, "dead": 1}
    today = utcnow().date()
    assert [d["date"] for d in body["per_day"]] == [(today - timedelta(days=n)).isoformat() for n in range(4, -1, -1)]
    by_date = {d["date"]: d for d in body["per_day"]}
    assert by_date[today.isoformat()] == {"date": today.isoformat(), "reports": 1, "average_sentiment": 2.0}
    assert by_date[(today - timedelta(days=1)).isoformat()]["average_sentiment"] == 9.0
    assert by_date[(today - timedelta(days=3)).isoformat()]["reports"] == 1
    assert by_date[(today - timedelta(days=2)).isoformat()] == {
        "date": (today - timedelta(days=2)).isoformat(), "reports": 0, "average_sentiment": None}
    assert body["since"] == f"{(today - timedelta(days=4)).isoformat()}T00:00:00.000Z"
    assert api("get", "/api/stats?days=0").get_json()["details"] == {"param": "days"}


def test_stats_carry_the_analytics_of_the_window(app, api, client, seeded):
    ingest(app, call_id="call-other-line", phone_number={"number": "+31201234567"},
           assistant={"id": "a-2", "name": "Sales NL"}, duration_seconds=45,
           analysis={"sentiment": 7, "intent": "sales", "resolved": True, "follow_up_needed": True})
    app.hub.dispatcher.run_due()
    figures = api("get", "/api/stats?days=5").get_json()["analytics"]
    assert figures["calls"] == 4 and sum(figures["calls_per_day"]) == 4 and len(figures["dates"]) == 5
    assert figures["sentiment_per_day"][-1] == 4.5  # today: 2 (the complaint) and 7
    assert sum(map(sum, figures["hour_of_week"])) == 4
    by_name = {f["name"]: f for f in figures["fields"]}
    assert by_name["intent"]["counts"] == {"support": 1, "sales": 1, "complaint": 1, "other": 1}
    assert by_name["resolved"]["rate"] == 0.75 and by_name["follow_up_needed"]["rate"] == 0.5
    assert by_name["sentiment"]["average"] == 6.0 and by_name["sentiment"]["per_day"][-1] == 4.5
    assert {d["bucket"]: d["calls"] for d in figures["durations"]}["30 s to 1 min"] == 1
    archive = next(d for d in figures["destinations"] if d["name"] == "archive")
    assert (archive["deliveries"], archive["succeeded"], archive["dead"], archive["success_rate"]) == (4, 4, 0, 1.0)
    assert archive["p50_seconds"] is not None and archive["p95_seconds"] >= archive["p50_seconds"]
    hook = next(d for d in figures["destinations"] if d["name"] == "hook")
    assert (hook["success_rate"], hook["p50_seconds"]) == (0.0, None)
    assert figures["lines"] == ["+31201234567", "+31850835037"] and figures["assistants"] == ["Sales NL", "Support NL"]

    one_line = api("get", "/api/stats?days=5&line=%2B31201234567").get_json()["analytics"]
    assert one_line["calls"] == 1 and one_line["line"] == "+31201234567"
    assert api("get", "/api/stats?days=5&assistant=Support%20NL").get_json()["analytics"]["calls"] == 3
    assert api("get", "/api/stats?line=0201234567").get_json()["details"] == {"param": "line"}

    as_csv = client.get("/api/stats?days=5&format=csv", headers=AUTH)  # (openapi-core reads text as bytes)
    assert as_csv.mimetype == "text/csv"
    rows = as_csv.get_data(as_text=True).splitlines()
    assert rows[0] == "figure,key,value"
    assert "intent.count,sales,1" in rows and "resolved.rate_true,,0.75" in rows
    assert "destination.success_rate,archive,1.0" in rows


def test_analytics_page_reads_without_javascript(client, seeded):
    log_in(client)
    html = client.get("/analytics?days=5").get_data(as_text=True)
    assert "3 calls from" in html
    assert '<td>complaint</td><td>1</td>' in html and '<td>other</td><td>1</td>' in html
    assert "<td>archive</td><td>3</td><td>3</td><td>0</td><td>100.0%</td>" in html
    assert client.get("/analytics?line=nope").status_code == 400
    csv_answer = client.get("/analytics.csv?days=5")
    assert csv_answer.mimetype == "text/csv" and "calls_per_day," in csv_answer.get_data(as_text=True)


def test_stats_average_skips_non_numeric_sentiment(app, api):
    now = utcnow()
    for n, sentiment in enumerate([4, 8, "great", True, None]):
        ingest(app, call_id=f"call-{n}", received_at=now,
               analysis={"sentiment": sentiment} if sentiment is not None else None)
    today = api("get", "/api/stats?days=1").get_json()["per_day"][0]
    assert today["reports"] == 5
    assert today["average_sentiment"] == 6.0


# --- the OpenAPI document -----------------------------------------------------------

def test_openapi_document_is_valid_and_served(api, spec):
    validate_spec(spec)
    served = api("get", "/api/openapi.json")
    assert served.status_code == 200
    assert served.get_json()["openapi"] == "3.1.0"
    assert served.get_json()["paths"].keys() == spec["paths"].keys()


def test_openapi_covers_every_api_route_and_the_webhook(app, spec):
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.rule == "/webhooks/<source_name>":
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule).replace("{source_name}", "hms")
            routes |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert len(routes) >= 10
    missing = routes - documented
    assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"
    webhook = spec["paths"]["/webhooks/hms"]["post"]
    assert {p["name"] for p in webhook["parameters"]} == {"X-Webhook-Signature", "X-Webhook-Timestamp",
                                                          "X-Webhook-Event"}
    assert {"202", "200", "400", "401", "413", "415", "422"} <= set(webhook["responses"])
    error_schema = webhook["responses"]["401"]["content"]["application/json"]["schema"]
    assert error_schema == {"$ref": "#/components/schemas/Error"}


def test_webhook_answers_match_the_openapi_document(client, spec):
    openapi = openapi_for(spec)
    body = json.dumps(load_sample("end-of-call-report-full")).encode()
    for headers in (signed_headers(body), {**signed_headers(body), "X-Webhook-Signature": "sha256=00"}):
        response = client.post("/webhooks/hms", data=body, headers=headers)
        assert response.status_code in (202, 401)
        sent = Request(EnvironBuilder("/webhooks/hms", method="POST", headers=headers, data=body).get_environ())
        openapi.validate_response(WerkzeugOpenAPIRequest(sent), WerkzeugOpenAPIResponse(response))


# --- the dashboard, server side --------------------------------------------------------

def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client, token: str = TOKEN, next_url: str = "/"):
    form = client.get("/login")
    return client.post("/login", data={"csrf_token": csrf_of(form.get_data(as_text=True)), "token": token,
                                       "next": next_url})


def test_dashboard_redirects_to_login_and_back(client, seeded):
    response = client.get(f"/reports/{seeded['complaint']}")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/login?next=/reports/{seeded['complaint']}"
    answer = log_in(client, next_url=f"/reports/{seeded['complaint']}")
    assert answer.status_code == 303 and answer.headers["Location"] == f"/reports/{seeded['complaint']}"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and cookie.startswith("hub_session=")


def test_login_rejects_wrong_token_missing_csrf_and_foreign_next(client):
    wrong = log_in(client, token="not-the-token-at-all")
    assert wrong.status_code == 401 and "not the admin token" in wrong.get_data(as_text=True)
    assert "not-the-token-at-all" not in wrong.get_data(as_text=True)
    no_csrf = client.post("/login", data={"token": TOKEN})
    assert no_csrf.status_code == 400
    assert client.get("/").status_code == 302  # still logged out
    for foreign in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        assert log_in(client, next_url=foreign).headers["Location"] == "/"
        client.delete_cookie("hub_session")


def test_session_key_is_derived_from_the_token(app):
    from hub.views.dashboard import session_key

    assert app.secret_key == session_key(TOKEN)
    assert session_key(TOKEN) == session_key(TOKEN) != session_key(TOKEN + "x")


def test_index_masks_numbers_and_shows_badges_chart_and_dead_count(client, seeded):
    log_in(client)
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<title>Reports · Sovereign Hub</title>" in html
    assert "+316*****789" in html and CUSTOMER not in html
    assert "+316*****222" in html and "+31611112222" not in html
    assert 'badge-dead' in html and "hook: dead" in html and "archive: succeeded" in html
    assert '<svg class="chart"' in html and html.count('<rect class="bar"') == 30
    # one dot per day with a sentiment: a single day's average is visible without a line to draw
    assert html.count('<circle class="sentiment-dot"') == 3
    assert 'href="/deliveries?status=dead"' in html and "1 dead delivery" in html
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


def test_report_page_shows_everything_with_full_number(client, seeded):
    log_in(client)
    html = client.get(f"/reports/{seeded['complaint']}").get_data(as_text=True)
    assert CUSTOMER in html and 'href="/customers/+31623456789"' in html
    assert "charged twice and asked for a refund" in html
    assert "I was charged twice for February." in html
    assert 'href="https://recordings.example.com/0b7e9a52.mp3"' in html
    assert "complaint" in html and "follow_up_needed" in html
    assert "#1 dead" in html and "Connection refused" in html and "gave up after 1 attempts" in html
    # one name per action: Retry the failed delivery, Replay the report to the one that succeeded
    assert html.count('class="retry"') == 1 and html.count('class="replay"') == 1
    hook, archive = delivery_of(client.application, seeded["complaint"], "hook"), "archive"
    assert f'action="/deliveries/{hook.id}/retry"' in html
    assert f'<input type="hidden" name="destination" value="{archive}">' in html
    assert 'id="replay-destination"' in html and '<option value="spare">' in html
    assert client.get("/reports/nope").status_code == 404


def test_report_page_escapes_everything_and_never_links_a_script_url(app, client):
    report_id = ingest(app, call_id="call-xss", summary="<script>alert('x')</script>",
                       recording_url="javascript:alert(1)",
                       messages=[{"role": "user", "content": "<img src=x onerror=alert(1)>"}])
    log_in(client)
    html = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="javascript:' not in html


def test_retry_button_needs_csrf_and_requeues(app, client, seeded):
    log_in(client)
    hook = delivery_of(app, seeded["complaint"], "hook")
    assert client.post(f"/deliveries/{hook.id}/retry").status_code == 400
    assert delivery_of(app, seeded["complaint"], "hook").status == "dead"
    page = client.get("/deliveries?status=dead").get_data(as_text=True)
    assert "Retry all" in page and hook.id in page
    answer = client.post(f"/deliveries/{hook.id}/retry", data={"csrf_token": csrf_of(page),
                                                               "back": f"/reports/{seeded['complaint']}"})
    assert answer.status_code == 303 and answer.headers["Location"] == f"/reports/{seeded['complaint']}"
    assert delivery_of(app, seeded["complaint"], "hook").status == "pending"
    assert "Retry queued" in client.get(answer.headers["Location"]).get_data(as_text=True)


def delivery_rows(html: str) -> list[tuple[str, str]]:
    """(delivery id, status) of each row of the deliveries page, top to bottom."""
    return re.findall(r'<tr data-delivery-id="([^"]+)" data-status="([^"]+)">', html)


def status_counts(html: str) -> dict[str, str]:
    counts = re.search(r'<p class="counts" id="status-counts">(.*?)</p>', html, re.S).group(1)
    return dict(re.findall(r'data-status="(\w+)">\w+ (\d+)</a>', counts))


def test_deliveries_page_lists_every_status_newest_first_with_filters_and_counts(app, client, seeded):
    import sqlalchemy as sa
    from hub.store import deliveries

    old = delivery_of(app, seeded["happy"], "archive")
    with app.hub.store.engine.begin() as conn:  # one delivery last touched three days ago
        conn.execute(sa.update(deliveries).where(deliveries.c.id == old.id)
                     .values(updated_at=utcnow() - timedelta(days=3)))
    log_in(client)
    everything = client.get("/deliveries").get_data(as_text=True)
    rows = delivery_rows(everything)
    assert sorted(status for _, status in rows) == ["dead", "succeeded", "succeeded", "succeeded"]
    assert rows[-1] == (old.id, "succeeded")  # newest first
    assert status_counts(everything) == {"pending": "0", "running": "0", "succeeded": "3", "dead": "1"}
    hook = delivery_of(app, seeded["complaint"], "hook")
    assert everything.count(">Retry</button>") == 1 and f"/deliveries/{hook.id}/retry" in everything
    assert "Replay" not in everything

    assert delivery_rows(client.get("/deliveries?status=dead").get_data(as_text=True)) == [(hook.id, "dead")]
    archive = client.get("/deliveries?destination=archive").get_data(as_text=True)
    assert {status for _, status in delivery_rows(archive)} == {"succeeded"} and len(delivery_rows(archive)) == 3
    assert status_counts(archive)["dead"] == "0"
    recent = client.get("/deliveries?window=24h").get_data(as_text=True)
    assert old.id not in {i for i, _ in delivery_rows(recent)} and len(delivery_rows(recent)) == 3
    assert status_counts(recent) == {"pending": "0", "running": "0", "succeeded": "2", "dead": "1"}
    assert '<option value="24h" selected>' in recent
    empty = client.get("/deliveries?status=pending&window=1h").get_data(as_text=True)
    assert "No pending deliveries updated in the last 1h." in empty
    assert client.get("/deliveries?window=forever").status_code == 400


def test_retry_all_and_replay_buttons(app, client, seeded):
    log_in(client)
    token = csrf_of(client.get("/").get_data(as_text=True))
    assert client.post("/deliveries/retry-dead", data={"csrf_token": token}).status_code == 303
    assert delivery_of(app, seeded["complaint"], "hook").status == "pending"
    client.post(f"/reports/{seeded['happy']}/replay", data={"csrf_token": token, "destination": "spare"})
    assert delivery_of(app, seeded["happy"], "spare").status == "pending"


def test_customer_page_shows_full_number_and_history(app, client, seeded):
    ingest(app, call_id="call-again", received_at=utcnow() - timedelta(hours=1))
    log_in(client)
    html = client.get("/customers/+31623456789").get_data(as_text=True)
    assert "<h1>Customer <span class=\"number\">+31623456789</span></h1>" in html
    assert html.count("data-report-id=") == 2
    assert "+31611112222" not in html
    assert client.get("/customers/0623456789").status_code == 400


def test_logout(client, seeded):
    log_in(client)
    token = csrf_of(client.get("/").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/").status_code == 302


# --- the store's read-only queries behind the API (SQLite and PostgreSQL) ----------------

def test_store_report_days_and_deliveries_by_report(store, new_report):
    from dataclasses import replace

    day = datetime(2026, 3, 2, 10, tzinfo=utcnow().tzinfo)
    sentiments = [2, 7, "high", True, None, 4.5]
    ids = []
    for n, sentiment in enumerate(sentiments):
        report = replace(new_report(), received_at=day + timedelta(minutes=n),
                         analysis=None if sentiment is None else {"sentiment": sentiment})
        store.insert_report(report, ["archive", "hook"] if n == 0 else [])
        ids.append(report.id)
    store.insert_report(replace(new_report(), received_at=day + timedelta(days=1), analysis={"sentiment": 9}), [])
    days = store.report_days(day - timedelta(days=1))
    assert days == {"2026-03-02": {"reports": 6, "average_sentiment": 4.5},
                    "2026-03-03": {"reports": 1, "average_sentiment": 9.0}}
    assert store.report_days(day - timedelta(days=1), day + timedelta(hours=1)).keys() == {"2026-03-02"}
    found = store.deliveries_by_report([ids[0], ids[1], "nope"])
    assert [d.destination for d in found[ids[0]]] == ["archive", "hook"]
    assert found[ids[1]] == [] and found["nope"] == []
    assert store.deliveries_by_report([]) == {}


def test_report_days_answers_with_a_nul_escape_or_a_huge_number_in_a_stored_report(store, new_report):
    """A \\u0000 in any string (here the summary), or a sentiment beyond a double, made
    PostgreSQL fail the whole stats query: one such report broke /api/stats and the dashboard
    for good (and SQLite averaged to inf, which is not JSON)."""
    from dataclasses import replace

    day = datetime(2026, 3, 2, 10, tzinfo=utcnow().tzinfo)
    store.insert_report(replace(new_report(), received_at=day, summary="cut\x00off",
                                analysis={"sentiment": 3}), [])
    store.insert_report(replace(new_report(), received_at=day, analysis={"sentiment": 5}), [])
    store.insert_report(replace(new_report(), received_at=day, analysis={"sentiment": 10**400}), [])
    days = store.report_days(day - timedelta(days=1))
    # SQLite reads the NUL report's sentiment; PostgreSQL leaves it out rather than fail
    expected = 5.0 if store.is_postgres else 4.0
    assert days == {"2026-03-02": {"reports": 3, "average_sentiment": expected}}


# --- paused destinations ---------------------------------------------------------------------

def test_a_paused_destination_is_not_attempted_its_reports_queue_and_the_pause_survives_a_restart(
        app, api, runner, seeded):
    listed = api("get", "/api/destinations").get_json()["destinations"]
    assert listed == [{"name": n, "type": t, "paused": False, "paused_at": None}
                      for n, t in [("archive", "jsonl"), ("hook", "webhook"), ("spare", "jsonl")]]

    paused = api("post", "/api/destinations/archive/pause")
    assert paused.status_code == 200
    body = paused.get_json()
    assert (body["name"], body["type"], body["paused"]) == ("archive", "jsonl", True)
    assert api("post", "/api/destinations/archive/pause").get_json() == body, "pausing twice is one pause"

    queued = ingest(app, call_id="call-while-paused", analysis={"sentiment": 8, "intent": "support",
                                                                "resolved": True, "follow_up_needed": False})
    assert app.hub.dispatcher.run_due() == 0, "nothing is attempted while paused"
    delivery = delivery_of(app, queued, "archive")
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    assert app.hub.store.list_attempts(delivery.id) == []
    assert api("get", "/api/stats").get_json()["paused"] == ["archive"]

    # another process (the CLI, as after a restart) sees the pause in the store
    listing = runner.invoke(["destinations", "list"])
    assert listing.exit_code == 0, listing.output
    assert re.search(r"^archive\s+jsonl\s+paused since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", listing.output, re.M)
    assert re.search(r"^hook\s+webhook\s+active$", listing.output, re.M)
    assert "(paused)" in runner.invoke(["stats", "--days", "1"]).output.splitlines()[0]

    resumed = api("post", "/api/destinations/archive/resume")
    assert resumed.get_json() == {"name": "archive", "type": "jsonl", "paused": False, "paused_at": None}
    assert app.hub.dispatcher.run_due() == 1
    delivery = delivery_of(app, queued, "archive")
    assert (delivery.status, delivery.attempts) == ("succeeded", 1)


def test_pausing_an_unknown_destination_is_a_409_naming_it_and_changes_nothing(app, api, runner):
    for action in ("pause", "resume"):
        answer = api("post", f"/api/destinations/nope/{action}")
        assert answer.status_code == 409
        assert answer.get_json() == {
            "error": "destination_not_configured", "message": "No enabled destination named 'nope' is configured.",
            "details": {"destination": "nope", "configured": ["archive", "hook", "spare"]}}
    assert app.hub.store.paused() == {}
    done = runner.invoke(["destinations", "pause", "nope"])
    assert done.exit_code == 1 and "No enabled destination named 'nope' is configured." in done.output
    done = runner.invoke(["destinations", "pause", "hook"])
    assert done.exit_code == 0 and re.match(r"hook\s+webhook\s+paused since ", done.output)
    assert list(app.hub.store.paused()) == ["hook"]
    done = runner.invoke(["destinations", "resume", "hook"])
    assert done.exit_code == 0 and re.match(r"hook\s+webhook\s+active$", done.output)
    assert app.hub.store.paused() == {}
