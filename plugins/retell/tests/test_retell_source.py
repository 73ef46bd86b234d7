"""POST /webhooks/retell through Flask's test client, with Retell's own SDK as the oracle.

``retell-sdk`` signs (``retell.lib.webhook_auth``, what Retell's servers compute) and verifies
(``Retell.verify(body, api_key, signature)``); its ``PhoneCallResponse`` / ``WebCallResponse``
models build and serialize the ``call`` object of each event.
"""
from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path

import pytest
from retell import Retell
from retell.lib.webhook_auth import symmetric
from retell.types import PhoneCallResponse, WebCallResponse

import hub_retell
from hub_retell.source import sign

API_KEY = "key_webhook_badge_0123456789abcdef"
START = 1772442000000  # 2026-03-02T09:00:00Z, epoch ms


def phone_call(direction: str = "inbound", **fields) -> dict:
    numbers = {"from_number": "+31612345678", "to_number": "+31850835037"}
    if direction == "outbound":
        numbers = {"from_number": "+31850835037", "to_number": "06-12345678"}
    values = dict(
        call_id="Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6", call_type="phone_call", direction=direction, agent_id="agent_1",
        agent_version=1, agent_name="Support NL", call_status="ended", start_timestamp=START,
        end_timestamp=START + 312_400, duration_ms=312_400, disconnection_reason="user_hangup",
        recording_url="https://dxc03zgurdly9.cloudfront.net/call.wav", metadata={"crm_id": "51"},
        transcript="Agent: Good morning\nUser: I was charged twice",
        transcript_object=[{"role": "agent", "content": "Good morning", "words": []},
                           {"role": "user", "content": "I was charged twice", "words": []}],
        **numbers)
    call = PhoneCallResponse(**{**values, **fields})
    return json.loads(call.model_dump_json(exclude_none=True))


def analysis() -> dict:
    return {"call_summary": "Double charge; billing to call back.", "user_sentiment": "Negative",
            "call_successful": False, "in_voicemail": False,
            "custom_analysis_data": {"sentiment": 2, "intent": "complaint", "resolved": False,
                                     "follow_up_needed": True}}


def event(name: str, call: dict) -> bytes:
    return json.dumps({"event": name, "call": call}, separators=(",", ":"), ensure_ascii=False).encode()


def retell_headers(body: bytes, timestamp_ms: int | None = None) -> dict:
    """As Retell's servers send it: signed by the SDK's own ``sign``."""
    signature = symmetric["sign"](body.decode(), API_KEY, timestamp_ms or int(time.time() * 1000))
    return {"Content-Type": "application/json", "x-retell-signature": signature}


@pytest.fixture
def retell_app(hub_config, tmp_path, request):
    hub_config["sources"]["retell"] = {"secret": API_KEY}
    hub_config["destinations"]["file"] = {"type": "jsonl", "path": str(tmp_path / "calls.jsonl"),
                                          "events": ["end-of-call-report", "call_ended"]}
    return request.getfixturevalue("app")


def post(app, body: bytes, headers=None):
    return app.test_client().post("/webhooks/retell", data=body, headers=headers or retell_headers(body))


# --- the signature, exactly as retell-sdk computes it ---------------------------------------------------

def test_the_hubs_signature_is_the_one_retell_sdk_verifies():
    body = event("call_analyzed", phone_call(call_analysis=analysis()))
    now = int(time.time() * 1000)
    ours = sign(body, API_KEY, now)
    assert ours == symmetric["sign"](body.decode(), API_KEY, now)
    assert Retell(api_key=API_KEY).verify(body.decode(), API_KEY, ours) is True
    assert Retell(api_key=API_KEY).verify(body.decode() + " ", API_KEY, ours) is False


@pytest.mark.parametrize("signature, code", [
    (None, "missing_signature"),
    ("d=abc,v=1", "malformed_signature"),
    ("v={now},d=" + "A" * 64, "malformed_signature"),  # the SDK's pattern takes lowercase hex only
    ("v={now},d=" + "0" * 64, "invalid_signature"),
    ("v={old},d=" + "0" * 64, "stale_timestamp"),
])
def test_what_retell_sdk_refuses_the_hub_refuses(retell_app, signature, code):
    body = event("call_ended", phone_call())
    now = int(time.time() * 1000)
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["x-retell-signature"] = signature.format(now=now, old=now - 301_000)
        assert Retell(api_key=API_KEY).verify(body.decode(), API_KEY, headers["x-retell-signature"]) is False
    answer = post(retell_app, body, headers)
    assert answer.status_code == 401 and answer.get_json()["error"] == code
    assert retell_app.hub.store.list_reports() == []


def test_a_tampered_body_is_refused(retell_app):
    body = event("call_ended", phone_call())
    headers = retell_headers(body)
    answer = post(retell_app, body.replace(b"user_hangup", b"agent_hangup"), headers)
    assert answer.status_code == 401 and answer.get_json()["error"] == "invalid_signature"


# --- the events ---------------------------------------------------------------------------------------------

def test_call_analyzed_becomes_the_end_of_call_report(retell_app):
    answer = post(retell_app, event("call_analyzed", phone_call(call_analysis=analysis())))
    assert answer.status_code == 202, answer.get_json()
    [report] = retell_app.hub.store.list_reports()
    assert (report.source, report.event, report.call.id, report.call.type, report.call.direction,
            report.call.status) == ("retell", "end-of-call-report", "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6",
                                    "inbound_phone_call", "inbound", "ended")
    assert (report.customer.number, report.phone_number.number) == ("+31612345678", "+31850835037")
    assert report.occurred_at.isoformat() == "2026-03-02T09:05:12.400000+00:00"
    assert report.duration_seconds == 312
    assert report.summary == "Double charge; billing to call back."
    assert report.analysis == analysis()["custom_analysis_data"] and report.analysis_errors == []
    assert [(m.role, m.content) for m in report.messages] == [("assistant", "Good morning"),
                                                              ("user", "I was charged twice")]
    assert (report.recording_url, report.ended_reason) == ("https://dxc03zgurdly9.cloudfront.net/call.wav",
                                                           "user_hangup")
    assert report.assistant == {"id": "agent_1", "name": "Support NL", "metadata": {"crm_id": "51"}}
    assert retell_app.hub.dispatcher.run_due() == 1


def test_an_outbound_call_puts_the_callee_in_customer(retell_app):
    assert post(retell_app, event("call_analyzed", phone_call("outbound", call_analysis=analysis()))).status_code == 202
    [report] = retell_app.hub.store.list_reports()
    assert (report.call.direction, report.customer.number, report.phone_number.number) == (
        "outbound", "+31612345678", "+31850835037")


def test_a_web_call_has_no_customer_number(retell_app):
    call = json.loads(WebCallResponse(call_id="web_1", call_type="web_call", access_token="tok", agent_id="agent_1",
                                      agent_version=1, call_status="ended", start_timestamp=START,
                                      end_timestamp=START + 60_000).model_dump_json(exclude_none=True))
    assert post(retell_app, event("call_analyzed", call)).status_code == 202
    [report] = retell_app.hub.store.list_reports()
    assert (report.call.type, report.call.direction, report.customer.number) == ("web_call", "web", None)
    assert report.duration_seconds == 60, "from the timestamps when duration_ms is absent"


def test_each_event_of_a_call_is_stored_once_as_its_own_type_and_retries_are_duplicates(retell_app):
    started = phone_call(call_status="ongoing", end_timestamp=None, duration_ms=None, disconnection_reason=None)
    bodies = [event("call_started", started), event("call_ended", phone_call()),
              event("call_analyzed", phone_call(call_analysis=analysis())), event("call_ended", phone_call())]
    answers = [post(retell_app, body).get_json()["status"] for body in bodies]
    assert answers == ["ignored", "accepted", "accepted", "duplicate"], "Retell retries a non-2xx up to 3 times"
    events = {r.event: r for r in retell_app.hub.store.list_reports()}
    assert set(events) == {"call_started", "call_ended", "end-of-call-report"}
    assert events["call_started"].occurred_at.isoformat() == "2026-03-02T09:00:00+00:00"
    assert events["call_ended"].summary is None and events["call_ended"].analysis is None


def test_an_event_the_hub_does_not_take_is_answered_clearly(retell_app):
    answer = post(retell_app, event("transcript_updated", phone_call()))
    assert answer.status_code == 422
    assert answer.get_json()["details"]["fields"] == {"event": [
        "The hub takes call_analyzed, call_started, call_ended from Retell; leave other events out of the agent's "
        "webhook_events."]}


def test_an_installed_but_unconfigured_source_takes_nothing(client):
    body = event("call_ended", phone_call())
    answer = client.post("/webhooks/retell", data=body, headers=retell_headers(body))
    assert answer.status_code == 401 and answer.get_json()["error"] == "not_configured"


def test_it_registers_through_the_entry_point_group_and_imports_only_the_public_surface():
    [entry] = [e for e in importlib.metadata.entry_points(group="sovereign_hub") if e.name == "retell"]
    assert entry.load() is hub_retell
    for path in Path(hub_retell.__file__).parent.glob("*.py"):
        imports = [line for line in path.read_text().splitlines() if line.startswith(("import hub", "from hub"))]
        assert all(line.startswith("from hub import") for line in imports), (path, imports)
