"""POST /webhooks/hms over real HTTP (Flask's test client) and a real SQLite file."""
import hashlib
import hmac
import json
import time

import pytest
import sqlalchemy as sa

from hub.sources.hms import sign
from hub.store import deliveries, reports
from hub.testing import TEST_SECRET, load_sample, migrated, signed_headers


def rows(app, table):
    with app.hub.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table))]


@pytest.fixture
def hub_config(hub_config, tmp_path):
    hub_config["destinations"] = {
        "calls_file": {"type": "jsonl", "path": str(tmp_path / "calls.jsonl")},
        "complaints": {"type": "jsonl", "path": str(tmp_path / "complaints.jsonl"),
                       "when": "analysis.intent == 'complaint'"},
        "errors": {"type": "jsonl", "path": str(tmp_path / "errors.jsonl"), "events": ["status-update"],
                   "when": "call.status == 'ended-with-error'"},
    }
    return hub_config


def test_platform_test_vector():
    """PLATFORM.md: HMAC-SHA256(secret, "<timestamp>.<raw body>"), hex, sha256= prefix."""
    expected = hmac.new(b"whsec_test_secret_12345", b'1700000000.{"test":true}', hashlib.sha256).hexdigest()
    assert sign("whsec_test_secret_12345", "1700000000", b'{"test":true}') == f"sha256={expected}"
    assert len(expected) == 64


def test_new_report_is_accepted_after_commit(app, signed_post):
    response = signed_post(load_sample("end-of-call-report-full"))
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "accepted"
    assert sorted(body["deliveries"], key=lambda d: d["destination"]) == [
        {"destination": "calls_file", "status": "pending"},
        {"destination": "complaints", "status": "pending"},
    ]
    stored = rows(app, reports)
    assert [r["id"] for r in stored] == [body["report_id"]]
    assert stored[0]["call_id"] == "0b7e9a52-5d0c-4a8e-9f3e-2f1c6d8a4b11"
    assert stored[0]["customer_number"] == "+31623456789"
    assert {d["destination"] for d in rows(app, deliveries)} == {"calls_file", "complaints"}


def test_rule_that_does_not_match_creates_no_delivery(app, signed_post):
    body = signed_post(load_sample("end-of-call-report")).get_json()
    assert body["deliveries"] == [{"destination": "calls_file", "status": "pending"}]


def test_same_report_twice_is_a_duplicate_and_delivers_nothing_new(app, signed_post):
    first = signed_post(load_sample("end-of-call-report-full")).get_json()
    again = signed_post(load_sample("end-of-call-report-full"))
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate", "report_id": first["report_id"]}
    assert len(rows(app, reports)) == 1
    assert len(rows(app, deliveries)) == 2


def test_duplicate_is_per_event_type(app, signed_post):
    signed_post(load_sample("end-of-call-report-full"))
    status = load_sample("status-update")  # same call id, another event
    response = signed_post(status)
    assert response.status_code == 202
    assert response.get_json()["deliveries"] == [{"destination": "errors", "status": "pending"}]


@pytest.mark.parametrize("event", ["tool-calls", "assistant-request"])
def test_event_types_without_destination_are_stored_and_ignored(app, signed_post, event):
    payload = load_sample("status-update")
    payload["message"]["type"] = event
    response = signed_post(payload, headers={"X-Webhook-Event": event})
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ignored"
    assert [r["event"] for r in rows(app, reports)] == [event]
    assert rows(app, deliveries) == []


def test_a_rule_that_cannot_read_the_analysis_does_not_fail_the_ack(hub_config, tmp_path, signed_post):
    """analysis is not validated (only checked), so a rule can meet any type: it must not 500."""
    from hub.app import create_app

    hub_config["destinations"] = {"long": {"type": "jsonl", "path": str(tmp_path / "long.jsonl"),
                                           "when": "length(analysis.notes) > `3`"}}
    app = create_app(config_data=hub_config)
    try:
        payload = load_sample("end-of-call-report-full")
        payload["message"]["analysis"]["notes"] = 42
        body = json.dumps(payload).encode()
        response = app.test_client().post("/webhooks/hms", data=body, headers=signed_headers(body))
        assert response.status_code == 202 and response.get_json()["deliveries"] == []
        payload["message"]["call"]["id"] = "another-call"
        payload["message"]["analysis"]["notes"] = "a long note"
        body = json.dumps(payload).encode()
        response = app.test_client().post("/webhooks/hms", data=body, headers=signed_headers(body))
        assert response.get_json()["deliveries"] == [{"destination": "long", "status": "pending"}]
    finally:
        app.hub.close()


def test_status_update_not_matching_rule_is_ignored(app, signed_post):
    payload = load_sample("status-update")
    payload["message"]["call"]["status"] = "in-progress"
    response = signed_post(payload, headers={"X-Webhook-Event": "status-update"})
    assert response.status_code == 200 and response.get_json()["status"] == "ignored"


def test_web_call_without_number_is_accepted(app, signed_post):
    response = signed_post(load_sample("end-of-call-report-web-call"))
    assert response.status_code == 202
    report = app.hub.store.get_report(response.get_json()["report_id"])
    assert report.customer.number is None and report.call.direction == "web"


# --- signature ------------------------------------------------------------------------

def post_raw(client, body: bytes, headers: dict):
    return client.post("/webhooks/hms", data=body, headers=headers)


@pytest.fixture
def body():
    return json.dumps(load_sample("end-of-call-report")).encode()


def test_signature_without_prefix_is_accepted(client, body):
    headers = signed_headers(body)
    headers["X-Webhook-Signature"] = headers["X-Webhook-Signature"].removeprefix("sha256=")
    assert post_raw(client, body, headers).status_code == 202


def test_uppercase_hex_is_accepted(client, body):
    headers = signed_headers(body)
    headers["X-Webhook-Signature"] = "sha256=" + headers["X-Webhook-Signature"][7:].upper()
    assert post_raw(client, body, headers).status_code == 202


@pytest.mark.parametrize("change, code", [
    (lambda h: h.pop("X-Webhook-Signature"), "missing_signature"),
    (lambda h: h.pop("X-Webhook-Timestamp"), "missing_timestamp"),
    (lambda h: h.update({"X-Webhook-Timestamp": "yesterday"}), "malformed_timestamp"),
    (lambda h: h.update({"X-Webhook-Signature": "sha256=xyz"}), "malformed_signature"),
    (lambda h: h.update({"X-Webhook-Signature": "sha1=" + "a" * 40}), "malformed_signature"),
    (lambda h: h.update({"X-Webhook-Signature": "sha256=" + "0" * 64}), "invalid_signature"),
])
def test_bad_signature_headers_are_401_naming_the_problem(app, client, body, change, code):
    headers = signed_headers(body)
    change(headers)
    response = post_raw(client, body, headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == code
    assert response.get_json()["message"]
    assert rows(app, reports) == []


def test_wrong_secret_is_401(client, body):
    response = post_raw(client, body, signed_headers(body, secret="whsec_someone_else"))
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_signature"


def test_tampered_body_is_401(client, body):
    headers = signed_headers(body)
    tampered = body.replace(b"opening hours", b"closing hours")
    assert post_raw(client, tampered, headers).get_json()["error"] == "invalid_signature"


def test_signature_covers_the_timestamp(client, body):
    now = int(time.time())
    headers = signed_headers(body, timestamp=now)
    headers["X-Webhook-Timestamp"] = str(now + 1)
    assert post_raw(client, body, headers).get_json()["error"] == "invalid_signature"


@pytest.mark.parametrize("offset", [-301, 301, -86400])
def test_stale_or_future_timestamp_is_401(client, body, offset):
    response = post_raw(client, body, signed_headers(body, timestamp=int(time.time()) + offset))
    assert response.status_code == 401 and response.get_json()["error"] == "stale_timestamp"


@pytest.mark.parametrize("offset", [-290, 290])
def test_timestamp_within_tolerance_is_accepted(client, body, offset):
    assert post_raw(client, body, signed_headers(body, timestamp=int(time.time()) + offset)).status_code == 202


def test_signature_is_compared_in_constant_time(client, body, monkeypatch):
    """Timing cannot be asserted reliably; that the comparison goes through hmac.compare_digest can."""
    from hub.sources import hms

    compared, real = [], hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hms.hmac, "compare_digest", spy)
    headers = signed_headers(body)
    assert post_raw(client, body, headers).status_code == 202
    assert compared == [(headers["X-Webhook-Signature"][7:], headers["X-Webhook-Signature"][7:])]


def test_signature_checked_before_parsing(client):
    """A body that is not JSON but is unsigned gets 401, not 400: nothing unverified is parsed."""
    response = post_raw(client, b"{not json", {"Content-Type": "application/json"})
    assert response.status_code == 401


# --- limits and validation -------------------------------------------------------------

def test_oversize_body_is_413(app, client):
    limit = app.hub.config.server.max_body_bytes
    big = json.dumps({"message": {"summary": "x" * limit}}).encode()
    response = post_raw(client, big, signed_headers(big))
    assert response.status_code == 413
    assert response.get_json()["error"] == "body_too_large"
    assert response.get_json()["details"] == {"max_body_bytes": limit}


def test_oversize_chunked_body_is_413(app, client):
    """No Content-Length (chunked): the limit still holds."""
    limit = app.hub.config.server.max_body_bytes
    big = b'{"message": "' + b"x" * (limit + 10) + b'"}'
    headers = signed_headers(big)
    response = client.post("/webhooks/hms", input_stream=__import__("io").BytesIO(big),
                           headers={**headers, "Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert response.get_json()["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client, body, content_type):
    headers = signed_headers(body)
    if content_type:
        headers["Content-Type"] = content_type
    else:
        headers.pop("Content-Type")
    response = post_raw(client, body, headers)
    assert response.status_code == 415
    assert response.get_json()["error"] == "unsupported_media_type"


def test_json_with_charset_is_accepted(client, body):
    headers = signed_headers(body)
    headers["Content-Type"] = "application/json; charset=utf-8"
    assert post_raw(client, body, headers).status_code == 202


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe\x00", b'{"message": '])
def test_broken_json_is_400(app, client, raw):
    response = post_raw(client, raw, signed_headers(raw))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_json"
    assert rows(app, reports) == []


@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000,                      # deeper than Python's recursion limit
    b'{"message": {"type": "end-of-call-report", "duration_seconds": NaN}}',
    b'{"message": {"type": "end-of-call-report", "duration_seconds": -Infinity}}',
    b'{"message": {"type": "end-of-call-report", "duration_seconds": 1e999}}',  # Python: inf
])
def test_json_python_accepts_but_is_not_json_is_400(app, client, raw):
    """Signed, so it reaches the parser: nesting deeper than the recursion limit, and NaN/Infinity
    (which Python's json takes but which, once stored, break SQLite's json_extract in /api/stats)."""
    response = post_raw(client, raw, signed_headers(raw))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_json"
    assert rows(app, reports) == []


@pytest.mark.parametrize("timestamp", ["\u00b2", "9" * 400, "9" * 5000, "0x10", "+1700000000"])
def test_odd_timestamp_header_is_401_not_5xx(client, body, timestamp):
    """Checked before the signature, so anyone can send these: "²" passes str.isdigit() but not
    int(); 400 digits overflow float arithmetic; 5000 exceed int()'s digit limit."""
    headers = signed_headers(body)
    headers["X-Webhook-Timestamp"] = timestamp
    response = post_raw(client, body, headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "malformed_timestamp"


@pytest.mark.parametrize("mutate, path", [
    (lambda m: m.pop("call"), ("message", "call")),
    (lambda m: m["call"].pop("id"), ("message", "call", "id")),
    (lambda m: m["call"].update(id="call\x00id"), ("message", "call", "id")),  # PostgreSQL: a 503 before
    (lambda m: m.update(type="call-started"), ("message", "type")),
    (lambda m: m.update(timestamp="last tuesday"), ("message", "timestamp")),
    (lambda m: m.update(timestamp="9999-12-31T23:59:59-14:00"), ("message", "timestamp")),  # was a 500
    (lambda m: m.update(timestamp="0001-01-01T00:00:00+14:00"), ("message", "timestamp")),
    (lambda m: m.pop("duration_seconds"), ("message", "duration_seconds")),
    (lambda m: m.update(duration_seconds="84"), ("message", "duration_seconds")),
    (lambda m: m.update(duration_seconds=-1), ("message", "duration_seconds")),
    (lambda m: m.pop("summary"), ("message", "summary")),
    (lambda m: m.update(analysis=["not", "an", "object"]), ("message", "analysis")),
    (lambda m: m.update(messages=[{"role": "user"}]), ("message", "messages", "0", "content")),
])
def test_schema_mismatch_is_422_with_field_path(app, signed_post, mutate, path):
    payload = load_sample("end-of-call-report-full")
    mutate(payload["message"])
    response = signed_post(payload)
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "invalid_payload"
    node = body["details"]["fields"]
    for key in path:
        node = node[int(key)] if isinstance(node, dict) and key.isdigit() and int(key) in node else node[key]
    assert node
    assert rows(app, reports) == []


@pytest.mark.parametrize("payload", [[], "text", 42, {"msg": {}}])
def test_json_that_is_not_a_payload_is_422(signed_post, payload):
    response = signed_post(json.dumps(payload).encode())
    assert response.status_code == 422


def test_event_header_disagreeing_with_body_is_422(signed_post):
    response = signed_post(load_sample("end-of-call-report"), headers={"X-Webhook-Event": "status-update"})
    assert response.status_code == 422 and response.get_json()["error"] == "event_mismatch"


def test_unknown_source_is_404_json(client, body):
    response = post_raw(client, body, signed_headers(body)).status_code, client.post("/webhooks/nope", data=body)
    assert response[1].status_code == 404
    assert response[1].get_json()["error"] == "unknown_source"


def test_get_on_webhook_is_405_json(client):
    response = client.get("/webhooks/hms")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_garbage_never_gives_5xx(client):
    """Random bodies and headers a sender could send: always a 4xx with a JSON error."""
    import random

    rng = random.Random(7)
    sample = json.dumps(load_sample("end-of-call-report-full")).encode()
    for _ in range(300):
        choice = rng.random()
        if choice < 0.3:
            body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
        elif choice < 0.6:
            cut = rng.randint(0, len(sample))
            body = sample[:cut] + bytes([rng.getrandbits(8)]) + sample[cut + 1:]
        else:
            data = load_sample("end-of-call-report-full")
            key = rng.choice(list(data["message"]))
            data["message"][key] = rng.choice([None, 1, -5, 2.5, "x", [], {}, [1], {"a": None}, True])
            body = json.dumps(data).encode()
        headers = signed_headers(body)
        if rng.random() < 0.2:
            headers["X-Webhook-Timestamp"] = rng.choice(["", "-1", "1e9", "99999999999999999999", " 12"])
        response = post_raw(client, body, headers)
        assert response.status_code < 500, (body, response.get_data())
        if response.status_code >= 400:
            assert response.get_json()["error"]


# --- secure by default -----------------------------------------------------------------

def test_no_secret_refuses_to_start(hub_config):
    from hub.app import create_app
    from hub.config import ConfigProblems

    hub_config["sources"] = {"hms": {}}
    with pytest.raises(ConfigProblems) as info:
        create_app(config_data=hub_config)
    assert "sources.hms.secret" in str(info.value)


def test_allow_unsigned_accepts_and_warns(hub_config, caplog):
    from hub.app import create_app

    hub_config["sources"] = {"hms": {"allow_unsigned": True}}
    migrated(hub_config["store"]["url"])
    with caplog.at_level("WARNING"):
        app = create_app(config_data=hub_config)
    try:
        assert any("allow_unsigned" in str(getattr(r, "fields", {})) for r in caplog.records)
        body = json.dumps(load_sample("end-of-call-report")).encode()
        response = app.test_client().post("/webhooks/hms", data=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 202
    finally:
        app.hub.close()


# --- operations ------------------------------------------------------------------------

def test_health_and_ready(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_ready_is_503_when_store_unreachable(app, client):
    app.hub.store.engine.dispose()
    app.hub.store.engine = sa.create_engine("sqlite:////nonexistent-dir/hub.db")
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["error"] == "store_unavailable"


def test_metrics_count_reports_deliveries_and_queue(app, client, signed_post):
    signed_post(load_sample("end-of-call-report-full"))
    signed_post(load_sample("end-of-call-report-full"))
    signed_post(b"{broken")
    app.hub.dispatcher.run_due()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sovereign_hub_reports_received_total{source="hms",status="accepted"}' in text
    assert 'sovereign_hub_reports_received_total{source="hms",status="duplicate"}' in text
    assert 'sovereign_hub_reports_received_total{source="hms",status="rejected"}' in text
    assert 'sovereign_hub_deliveries_total{destination="calls_file",outcome="succeeded"}' in text
    assert 'sovereign_hub_delivery_attempt_seconds_bucket{destination="complaints"' in text
    assert 'sovereign_hub_queue_depth{destination="calls_file",status="succeeded"} 1.0' in text


def test_delivered_report_reaches_the_jsonl_file(app, signed_post, tmp_path):
    report_id = signed_post(load_sample("end-of-call-report-full")).get_json()["report_id"]
    assert app.hub.dispatcher.run_due() == 2
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [report_id]
    assert json.loads(lines[0])["customer"]["number"] == "+31623456789"


def test_logs_mask_the_customer_number(app, signed_post, caplog):
    from hub.logs import JsonFormatter

    with caplog.at_level("INFO"):
        signed_post(load_sample("end-of-call-report-full"))
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "report.accepted" in text
    assert "+31623456789" not in text and "+316*****789" in text
    assert TEST_SECRET not in text


def test_a_failing_report_received_hook_does_not_fail_the_ack(app, signed_post):
    from hub import hookimpl

    seen = []

    class Broken:
        @hookimpl
        def report_received(self, report, hub):
            raise RuntimeError("observer bug")

    class Watcher:
        @hookimpl
        def report_received(self, report, hub):
            seen.append(report.id)

    app.hub.pm.register(Broken(), name="broken-observer")
    app.hub.pm.register(Watcher(), name="watcher")
    response = signed_post(load_sample("end-of-call-report-full"))
    assert response.status_code == 202
    assert seen == [response.get_json()["report_id"]]
    assert app.hub.dispatcher.run_due() == 2
