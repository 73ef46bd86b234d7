"""POST /webhooks/vapi through Flask's test client, with payloads built by Vapi's own SDK.

``vapi-server-sdk``'s pydantic models (``ServerMessage``, ``ServerMessageEndOfCallReport``,
``Artifact``, ``Analysis``...) are the oracle of the shapes: each payload here is built from
them and serialized by them, so a field the SDK names differently breaks a test. The HMAC
credential's fields and defaults come from the SDK's ``HmacAuthenticationPlan``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.metadata
import json
import time
from pathlib import Path

import pytest
from vapi.types import (Analysis, Artifact, BotMessage, Call, CreateCustomerDto, HmacAuthenticationPlan, Mono,
                        Recording, ServerMessage, ServerMessageConversationUpdate, ServerMessageEndOfCallReport,
                        ServerMessageStatusUpdate, SystemMessage, UserMessage)

import hub_vapi

SECRET = "vapi_hmac_secret_0123456789abcdef"
CALL = {"id": "7a1c3a52-0000-4000-8000-00000000c0de", "orgId": "org-1", "createdAt": "2026-03-02T09:00:00Z",
        "updatedAt": "2026-03-02T09:05:00Z"}
PLAN = HmacAuthenticationPlan(secretKey=SECRET, algorithm="sha256")


def end_of_call_report(call_type: str = "inboundPhoneCall", **fields) -> dict:
    message = ServerMessageEndOfCallReport(
        type="end-of-call-report", endedReason="customer-ended-call", timestamp=1772442312512,
        startedAt="2026-03-02T10:00:00+01:00", endedAt="2026-03-02T10:05:12.512+01:00",
        call=Call(type=call_type, **CALL), customer=CreateCustomerDto(number="06-12345678", name="Jan"),
        phoneNumber={"provider": "byo-phone-number", "number": "+31850835037", "name": "Support line",
                     "credentialId": "cred-1"},
        assistant={"name": "Support NL", "metadata": {"crm_id": "51"},
                   "server": {"url": "https://hub.example.com/webhooks/vapi"}},
        artifact=Artifact(
            messages=[SystemMessage(role="system", message="You are the support assistant.", time=0.0,
                                    secondsFromStart=0.0),
                      BotMessage(role="bot", message="Good morning, how can I help?", time=1.0, endTime=2.5,
                                 secondsFromStart=0.5),
                      UserMessage(role="user", message="I was charged twice.", time=3.0, endTime=4.5,
                                  secondsFromStart=2.5)],
            transcript="AI: Good morning, how can I help?\nUser: I was charged twice.",
            recording=Recording(mono=Mono(combinedUrl="https://storage.vapi.ai/7a1c-mono.wav"))),
        analysis=Analysis(summary="Double charge; billing to call back.",
                          structuredData={"sentiment": 2, "intent": "complaint", "resolved": False,
                                          "follow_up_needed": True}, successEvaluation="false"),
        **fields)
    return json.loads(ServerMessage(message=message).model_dump_json(by_alias=True, exclude_none=True))


def status_update(status: str, ended_reason: str | None = None) -> dict:
    message = ServerMessageStatusUpdate(type="status-update", status=status, endedReason=ended_reason,
                                        timestamp=1772442300000, call=Call(type="outboundPhoneCall", **CALL),
                                        customer=CreateCustomerDto(number="+31612345678"))
    return json.loads(ServerMessage(message=message).model_dump_json(by_alias=True, exclude_none=True))


def hmac_headers(body: bytes, plan: HmacAuthenticationPlan = PLAN, timestamp: str | None = None) -> dict:
    """What Vapi sends under ``plan``: the defaults are the SDK's documented ones."""
    timestamp = timestamp or str(int(time.time() * 1000))
    include = plan.include_timestamp if plan.include_timestamp is not None else True
    fmt = plan.payload_format or ("{timestamp}.{body}" if include else "{body}")
    signed = fmt.replace("{timestamp}", timestamp).encode().replace(b"{body}", body)
    mac = hmac.new(plan.secret_key.encode(), signed, getattr(hashlib, plan.algorithm)).digest()
    encoded = mac.hex() if (plan.signature_encoding or "hex") == "hex" else base64.b64encode(mac).decode()
    headers = {"Content-Type": "application/json",
               plan.signature_header or "x-signature": f"{plan.signature_prefix or ''}{encoded}"}
    if include:
        headers[plan.timestamp_header or "x-timestamp"] = timestamp
    return headers


@pytest.fixture
def vapi_app(hub_config, tmp_path, request):
    """``vapi_app(**[sources.vapi] keys)``: the app with the vapi source configured and a jsonl
    destination for end-of-call reports and status updates."""
    def build(**settings):
        hub_config["sources"]["vapi"] = {"secret": SECRET, **settings}
        hub_config["destinations"]["file"] = {"type": "jsonl", "path": str(tmp_path / "calls.jsonl"),
                                              "events": ["end-of-call-report", "status-update"]}
        return request.getfixturevalue("app")
    return build


def post(app, payload: dict, headers=None):
    body = json.dumps(payload).encode()
    return app.test_client().post("/webhooks/vapi", data=body, headers=headers or hmac_headers(body))


# --- the end-of-call report --------------------------------------------------------------------------

def test_an_end_of_call_report_becomes_the_same_call_report_as_any_source(vapi_app):
    app = vapi_app()
    answer = post(app, end_of_call_report())
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["deliveries"] == [{"destination": "file", "status": "pending"}]
    [report] = app.hub.store.list_reports()
    assert (report.source, report.event, report.call.id, report.call.type, report.call.direction,
            report.call.status) == ("vapi", "end-of-call-report", CALL["id"], "inboundPhoneCall", "inbound", "ended")
    assert (report.customer.number, report.customer.name, report.phone_number.number, report.phone_number.name) == (
        "+31612345678", "Jan", "+31850835037", "Support line")
    assert report.occurred_at.isoformat() == "2026-03-02T09:05:12.512000+00:00", "endedAt, in UTC"
    assert report.duration_seconds == 313, "endedAt - startedAt, rounded"
    assert report.summary == "Double charge; billing to call back."
    assert report.analysis == {"sentiment": 2, "intent": "complaint", "resolved": False, "follow_up_needed": True}
    assert report.analysis_errors == []
    assert [(m.role, m.content) for m in report.messages] == [
        ("assistant", "Good morning, how can I help?"), ("user", "I was charged twice.")]
    assert report.recording_url == "https://storage.vapi.ai/7a1c-mono.wav"
    assert report.ended_reason == "customer-ended-call"
    assert report.assistant == {"name": "Support NL", "metadata": {"crm_id": "51"}}, "id, name, metadata only"
    assert app.hub.dispatcher.run_due() == 1


def test_the_same_report_again_is_a_duplicate(vapi_app):
    app = vapi_app()
    first, again = post(app, end_of_call_report()), post(app, end_of_call_report())
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate", "report_id": first.get_json()["report_id"]}


def test_a_web_call_has_no_customer_number_and_the_deprecated_recording_url_is_read(vapi_app):
    payload = end_of_call_report("webCall")
    payload["message"]["artifact"] = {"recordingUrl": "https://storage.vapi.ai/old.wav", "messages": []}
    app = vapi_app()
    assert post(app, payload).status_code == 202
    [report] = app.hub.store.list_reports()
    assert (report.call.direction, report.customer.number, report.customer.raw) == ("web", None, "06-12345678")
    assert report.recording_url == "https://storage.vapi.ai/old.wav" and report.messages == []


# --- other messages ------------------------------------------------------------------------------------

def test_each_status_update_of_a_call_is_its_own_event(vapi_app):
    app = vapi_app()
    answers = [post(app, status_update("in-progress")).get_json(),
               post(app, status_update("ended", "customer-ended-call")).get_json(),
               post(app, status_update("ended", "customer-ended-call")).get_json()]
    assert [a["status"] for a in answers] == ["accepted", "accepted", "duplicate"]
    reports = {r.call.status: r for r in app.hub.store.list_reports()}
    assert set(reports) == {"in-progress", "ended"}
    assert (reports["ended"].event, reports["ended"].ended_reason) == ("status-update", "customer-ended-call")
    assert reports["ended"].duration_seconds is None and reports["ended"].summary is None


def test_a_message_type_the_hub_does_not_take_is_answered_clearly(vapi_app):
    message = ServerMessageConversationUpdate(type="conversation-update", messagesOpenAIFormatted=[],
                                              call=Call(type="webCall", **CALL))
    payload = json.loads(ServerMessage(message=message).model_dump_json(by_alias=True, exclude_none=True))
    answer = post(vapi_app(), payload)
    assert answer.status_code == 422
    assert answer.get_json()["details"]["fields"] == {"message": {"type": [
        "The hub takes end-of-call-report, status-update from Vapi; leave other types out of the assistant's "
        "serverMessages."]}}


# --- authentication ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, code", [
    (lambda h: h.pop("x-signature"), "missing_signature"),
    (lambda h: h.pop("x-timestamp"), "missing_timestamp"),
    (lambda h: h.update({"x-timestamp": "yesterday"}), "malformed_timestamp"),
    (lambda h: h.update({"x-signature": "0" * 64}), "invalid_signature"),
])
def test_a_request_without_a_valid_hmac_signature_is_refused(vapi_app, change, code):
    app = vapi_app()
    body = json.dumps(end_of_call_report()).encode()
    headers = hmac_headers(body)
    change(headers)
    answer = app.test_client().post("/webhooks/vapi", data=body, headers=headers)
    assert answer.status_code == 401 and answer.get_json()["error"] == code
    assert app.hub.store.list_reports() == []


def test_a_tampered_body_or_an_old_timestamp_is_refused(vapi_app):
    app = vapi_app()
    body = json.dumps(end_of_call_report()).encode()
    headers = hmac_headers(body)
    tampered = body.replace(b"charged twice", b"charged thrice")
    assert app.test_client().post("/webhooks/vapi", data=tampered, headers=headers).get_json()["error"] == \
        "invalid_signature"
    old = hmac_headers(body, timestamp=str(int(time.time() * 1000) - 301_000))
    assert app.test_client().post("/webhooks/vapi", data=body, headers=old).get_json()["error"] == "stale_timestamp"


def test_a_timestamp_in_seconds_is_read_as_well_as_milliseconds(vapi_app):
    app = vapi_app()
    body = json.dumps(end_of_call_report()).encode()
    answer = app.test_client().post("/webhooks/vapi", data=body, headers=hmac_headers(body, timestamp=str(int(time.time()))))
    assert answer.status_code == 202


def test_every_hmac_plan_setting_the_sdk_offers_can_be_checked(vapi_app):
    plan = HmacAuthenticationPlan(secretKey=SECRET, algorithm="sha512", signatureHeader="x-vapi-signature",
                                  signaturePrefix="sha512=", includeTimestamp=False, signatureEncoding="base64")
    app = vapi_app(algorithm="sha512", signature_header="x-vapi-signature", signature_prefix="sha512=",
                   include_timestamp=False, signature_encoding="base64")
    body = json.dumps(end_of_call_report()).encode()
    headers = hmac_headers(body, plan)
    assert "x-timestamp" not in headers and headers["x-vapi-signature"].startswith("sha512=")
    assert app.test_client().post("/webhooks/vapi", data=body, headers=headers).status_code == 202


def test_the_legacy_x_vapi_secret_header(vapi_app):
    app = vapi_app(auth="x-vapi-secret")
    body = json.dumps(end_of_call_report()).encode()
    client = app.test_client()
    base = {"Content-Type": "application/json"}
    assert client.post("/webhooks/vapi", data=body, headers=base).get_json()["error"] == "missing_signature"
    wrong = client.post("/webhooks/vapi", data=body, headers={**base, "X-Vapi-Secret": "not-it"})
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_signature"
    assert client.post("/webhooks/vapi", data=body, headers={**base, "X-Vapi-Secret": SECRET}).status_code == 202


def test_an_installed_but_unconfigured_source_takes_nothing(client):
    body = json.dumps(end_of_call_report()).encode()
    answer = client.post("/webhooks/vapi", data=body, headers=hmac_headers(body))
    assert answer.status_code == 401 and answer.get_json()["error"] == "not_configured"


def test_a_payload_format_the_hub_cannot_check_is_a_config_problem(vapi_app):
    with pytest.raises(Exception) as info:
        vapi_app(payload_format="{method}.{url}.{body}")
    assert "sources.vapi.payload_format: the hub can check {timestamp} and {body} only, not {method}, {url}" in str(
        info.value)



def test_a_missing_secret_names_the_vapi_variable_and_where_vapi_shows_the_key(vapi_app):
    with pytest.raises(Exception) as info:
        vapi_app(secret="")
    assert ('sources.vapi.secret: no webhook secret is set; set secret = { env = "VAPI_WEBHOOK_SECRET" } to the '
            "secret key of the HMAC credential on the Vapi server URL") in str(info.value)

# --- a plugin as a third party writes one -------------------------------------------------------------------

def test_it_registers_through_the_entry_point_group_and_imports_only_the_public_surface():
    [entry] = [e for e in importlib.metadata.entry_points(group="sovereign_hub") if e.name == "vapi"]
    assert entry.load() is hub_vapi
    for path in Path(hub_vapi.__file__).parent.glob("*.py"):
        imports = [line for line in path.read_text().splitlines() if line.startswith(("import hub", "from hub"))]
        assert all(line.startswith(("from hub import", "import hub\n")) for line in imports), (path, imports)
