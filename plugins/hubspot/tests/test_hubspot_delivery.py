"""The HubSpot flow, request by request, against a portal mocked with ``responses``.

Paths, bodies and association type ids follow HubSpot's 2026-03 reference (the default
``api_version``): objects (``/crm/objects/2026-03/{contacts,calls,tasks,deals}``), search
(``.../search`` with ``filterGroups``), properties (``GET /crm/properties/2026-03/contacts``), and
the HUBSPOT_DEFINED association types call->contact 194, task->contact 204, task->deal 216,
deal->contact 3, call->company 182. The last section checks every request against HubSpot's
official SDK, and the paths of each ``api_version``.
"""
from __future__ import annotations

import json
import re

import pytest
import requests
import responses

from hub import Permanent, Retryable
from hub.config import ConfigProblems
from hub.testing import FakeClock, assert_no_window_exceeded, deliver, make_destination, probe_connection
from hub_hubspot import flow

API = "https://api.hubapi.com"
TOKEN = "pat-eu1-test-token-0000"
NUMBER = "+31623456789"

DEFINITIONS = [
    {"name": "phone", "type": "string", "fieldType": "phonenumber"},
    {"name": "last_call_sentiment", "type": "number", "fieldType": "number"},
    {"name": "last_call_intent", "type": "enumeration", "fieldType": "select",
     "options": [{"label": "Complaint", "value": "complaint"}, {"label": "Sales", "value": "sales"}]},
    {"name": "last_call_resolved", "type": "bool", "fieldType": "booleancheckbox",
     "options": [{"label": "Yes", "value": "true"}, {"label": "No", "value": "false"}]},
    {"name": "last_call_at", "type": "datetime", "fieldType": "date"},
    {"name": "hs_calculated_phone_number", "type": "string", "fieldType": "text", "calculated": True,
     "modificationMetadata": {"readOnlyValue": True}},
]
PROPERTIES = {"last_call_sentiment": "analysis.sentiment", "last_call_intent": "analysis.intent",
              "last_call_resolved": "analysis.resolved", "last_call_at": "occurred_at"}
OPTIONS = {
    "token": TOKEN,
    "owner_id": 4242,
    "properties": PROPERTIES,
    "deal": {"when": "analysis.intent == 'complaint'", "pipeline": "default", "stage": "appointmentscheduled",
             "amount": "`1500`", "close_in_days": 30},
}
CALL_ASSOC = [{"to": {"id": "501"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}]


class Portal:
    """A HubSpot portal behind ``responses``: hands out ids, can fail a request once."""

    def __init__(self, rsps, *, contacts=None, found=None, objects="/crm/objects/2026-03",
                 properties="/crm/properties/2026-03"):
        self.contacts = contacts or []  # search hits for the phone lookup
        self.found = found or {}        # object type -> hits of a lookup search
        self.fail: dict[tuple[str, str], object] = {}
        self.created: list[tuple[str, dict]] = []
        self.ids = {"contacts": 501, "calls": 701, "deals": 801, "tasks": 901}
        self.clock = None               # with a FakeClock: when each search arrived, in searched_at
        self.searched_at: list[float] = []
        rsps.add_callback(responses.GET, re.compile(rf"{API}{properties}/contacts"), callback=self.handle)
        for method in ("POST", "PATCH"):
            rsps.add_callback(method, re.compile(rf"{API}{objects}/.*"), callback=self.handle)

    def handle(self, request):
        path = request.path_url
        failure = self.fail.pop((request.method, path), None)
        if isinstance(failure, Exception):
            raise failure
        if failure is not None:
            status, headers, body = failure
            return status, headers, json.dumps(body)
        body = json.loads(request.body) if request.body else None
        if request.method == "GET":
            return 200, {}, json.dumps({"results": DEFINITIONS})
        object_type = path.split("/")[4]
        if path.endswith("/search"):
            if self.clock is not None:
                self.searched_at.append(self.clock.now)
            hits = self.contacts if object_type == "contacts" else self.found.get(object_type, [])
            return 200, {}, json.dumps({"total": len(hits), "results": hits})
        if request.method == "PATCH":
            return 200, {}, json.dumps({"id": path.rsplit("/", 1)[1], "properties": body["properties"]})
        new_id = str(self.ids[object_type])
        self.ids[object_type] += 1
        self.created.append((object_type, body))
        return 201, {}, json.dumps({"id": new_id, "properties": body["properties"]})

    def count(self, object_type):
        return sum(1 for kind, _ in self.created if kind == object_type)


def sent(ctx, method, suffix):
    return [r for r in ctx.sent if r.method == method and r.url.endswith(suffix)]


def failed_attempt(hubspot, report, portal, request, failure, state=None):
    """One attempt failing at ``request`` (method, path) with ``failure``; its context and error.

    The dispatcher saves ``ctx.state`` of the failed attempt and hands it to the retry."""
    portal.fail[request] = failure
    ctx = hubspot.context(delivery_id="dlv_test", attempt=1, state=state)
    with pytest.raises(Retryable) as info:
        hubspot.deliver(report, ctx)
    return ctx, info.value


def contact(cid, **props):
    return {"id": cid, "properties": {"hs_object_id": cid, **props}}


@pytest.fixture
def hubspot():
    return make_destination("hubspot", OPTIONS, name="crm")


@pytest.fixture
def clock(monkeypatch):
    """The time the flow stamps on a pending create; tests move it on."""
    now = [1_772_442_900.0]
    monkeypatch.setattr(flow, "now", lambda: now[0])
    return now


def test_new_caller_full_flow_every_request(hubspot, sample_report, mocked_http):
    Portal(mocked_http)  # registers the portal's answers
    result, ctx = deliver(hubspot, sample_report)

    assert [(r.method, r.url.removeprefix(API)) for r in ctx.sent] == [
        ("POST", "/crm/objects/2026-03/contacts/search"),
        ("GET", "/crm/properties/2026-03/contacts"),
        ("POST", "/crm/objects/2026-03/contacts"),
        ("POST", "/crm/objects/2026-03/calls"),
        ("POST", "/crm/objects/2026-03/deals"),
        ("POST", "/crm/objects/2026-03/tasks"),
    ]
    real = mocked_http.calls[0].request
    assert real.headers["Authorization"] == f"Bearer {TOKEN}"
    assert real.headers["Content-Type"] == "application/json"
    assert all(r.headers["Authorization"] == "[secret]" for r in ctx.sent)

    search = ctx.sent[0].body
    assert search["filterGroups"] == [
        {"filters": [{"propertyName": "hs_searchable_calculated_phone_number", "operator": "EQ", "value": "623456789"}]},
        {"filters": [{"propertyName": "hs_searchable_calculated_mobile_number", "operator": "EQ", "value": "623456789"}]},
        {"filters": [{"propertyName": "hs_searchable_calculated_phone_number", "operator": "EQ", "value": "0623456789"}]},
        {"filters": [{"propertyName": "hs_searchable_calculated_mobile_number", "operator": "EQ", "value": "0623456789"}]},
    ]
    assert {"phone", "mobilephone", "hs_calculated_phone_number", "hs_calculated_mobile_number"} <= set(search["properties"])
    assert search["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}]
    assert search["limit"] <= 200

    assert ctx.sent[2].body == {"properties": {
        "phone": NUMBER, "last_call_sentiment": "2", "last_call_intent": "complaint",
        "last_call_resolved": "false", "last_call_at": "2026-03-02T09:14:07.512Z"}, "associations": []}

    call = ctx.sent[3].body
    props = call["properties"]
    assert props["hs_timestamp"] == "2026-03-02T09:14:07.512Z"
    assert props["hs_call_title"] == "Outbound call with +31 6 23456789"
    assert props["hs_call_duration"] == "312000"
    assert props["hs_call_direction"] == "OUTBOUND"
    assert props["hs_call_status"] == "COMPLETED"
    assert props["hs_call_from_number"] == "+31850835037"
    assert props["hs_call_to_number"] == NUMBER
    assert props["hs_call_recording_url"] == "https://recordings.example.com/0b7e9a52.mp3"
    assert props["hubspot_owner_id"] == "4242"
    body = props["hs_call_body"]
    assert body.startswith("Customer reported that the invoice for February was charged twice")
    for line in ("Sentiment: 2", "Intent: complaint", "Resolved: no", "Follow up needed: yes",
                 "Duration: 5m 12s", "Report: https://hub.example.com/reports/rep_test"):
        assert f"<br>{line}" in body
    assert call["associations"] == CALL_ASSOC

    deal = ctx.sent[4].body
    assert deal["properties"] == {
        "dealname": "Complaint opportunity: +31 6 23456789", "pipeline": "default",
        "dealstage": "appointmentscheduled", "amount": "1500", "closedate": "2026-04-01T00:00:00.000Z",
        "hubspot_owner_id": "4242",
        "description": deal["properties"]["description"]}
    assert deal["properties"]["description"].endswith("Report: https://hub.example.com/reports/rep_test")
    assert deal["associations"] == [
        {"to": {"id": "501"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]}]

    task = ctx.sent[5].body
    assert task["properties"] == {
        "hs_timestamp": "2026-03-03T09:14:07.512Z",
        "hs_task_subject": "Follow up (complaint): +31 6 23456789",
        "hs_task_body": task["properties"]["hs_task_body"],
        "hs_task_status": "NOT_STARTED", "hs_task_priority": "HIGH", "hs_task_type": "CALL",
        "hubspot_owner_id": "4242"}
    assert "Report: https://hub.example.com/reports/rep_test" in task["properties"]["hs_task_body"]
    assert task["associations"] == [
        {"to": {"id": "501"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]},
        {"to": {"id": "801"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 216}]}]

    assert ctx.state["contact_id"] == "501" and ctx.state["call_id"] == "701"
    assert ctx.state["deal_id"] == "801" and ctx.state["task_id"] == "901" and ctx.state["completed"]
    assert result.message.startswith("contact 501 (created); call 701 created; deal 801 created; task 901 created")
    assert result.data["problems"] == []


def test_existing_contact_found_by_phone_is_updated_not_created(hubspot, sample_report, mocked_http):
    portal = Portal(mocked_http, contacts=[
        contact("88", phone="06 11111111"),  # a search hit that is not this number
        contact("51", phone="06-23456789", lastmodifieddate="2026-02-01T10:00:00Z"),
        contact("12", mobilephone="+31 6 2345 6789", lastmodifieddate="2025-01-01T10:00:00Z"),
    ])
    result, ctx = deliver(hubspot, sample_report)
    assert portal.count("contacts") == 0
    patch = sent(ctx, "PATCH", "/crm/objects/2026-03/contacts/51")
    assert len(patch) == 1
    assert patch[0].body == {"properties": {"last_call_sentiment": "2", "last_call_intent": "complaint",
                                            "last_call_resolved": "false", "last_call_at": "2026-03-02T09:14:07.512Z"}}
    call = sent(ctx, "POST", "/crm/objects/2026-03/calls")[0].body
    assert call["associations"][0]["to"] == {"id": "51"}
    assert "2 contacts have this number; logged on contact 51, the most recently updated." in call["properties"]["hs_call_body"]
    assert result.data["contact_id"] == "51"
    assert "contact 51 (found by phone)" in result.message


def test_not_found_and_create_contacts_false_is_a_clear_skip(sample_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "create_contacts": False}, name="crm")
    Portal(mocked_http, contacts=[contact("88", phone="+1 212 555 0100")])
    result, ctx = deliver(hubspot, sample_report)
    assert [r.method for r in ctx.sent] == ["POST"] and ctx.sent[0].url.endswith("/contacts/search")
    assert result.message == "skipped: no HubSpot contact has +316*****789 and create_contacts = false"
    assert result.data == {"skipped": "no_contact"}


def test_web_call_is_logged_without_a_contact(make_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN}, name="crm")
    portal = Portal(mocked_http)
    report = make_report("end-of-call-report-web-call")
    result, ctx = deliver(hubspot, report)
    assert not sent(ctx, "POST", "/contacts/search") and portal.count("contacts") == 0
    call = sent(ctx, "POST", "/crm/objects/2026-03/calls")[0].body
    assert call["associations"] == []  # required by the reference, empty here
    assert call["properties"]["hs_call_direction"] == "INBOUND"
    assert call["properties"]["hs_call_title"].startswith("Web call")
    assert "hs_call_from_number" not in call["properties"]
    assert "no contact (the call has no caller number)" in result.message


def test_contact_id_from_the_report_skips_the_search(sample_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "contact_id": "assistant.metadata.crm_contact_id",
                                           "company_id": "`\"9001\"`", "follow_up": {"enabled": False}}, name="crm")
    Portal(mocked_http)
    _, ctx = deliver(hubspot, sample_report)
    assert not sent(ctx, "POST", "/contacts/search")
    call = sent(ctx, "POST", "/crm/objects/2026-03/calls")[0].body
    assert call["associations"] == [
        {"to": {"id": "51"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]},
        {"to": {"id": "9001"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 182}]}]
    assert not sent(ctx, "POST", "/crm/objects/2026-03/tasks")


@pytest.mark.parametrize("key, value", [("contact_id", "51/../../deals/999?archived=true#"),
                                        ("contact_id", "51 OR 1=1"), ("company_id", "../companies/9"),
                                        ("deal_id", "-3"), ("contact_id", "١٢٣")])
def test_an_id_from_the_report_that_is_not_a_hubspot_id_sends_nothing(sample_report, mocked_http, key, value):
    sample_report.data["assistant"]["metadata"]["crm_id"] = value
    config = {"token": TOKEN, "contact_id": "assistant.metadata.crm_contact_id", key: "assistant.metadata.crm_id",
              "properties": {"last_call_resolved": "analysis.resolved"}, "follow_up": {"enabled": False}}
    hubspot = make_destination("hubspot", config, name="crm")
    Portal(mocked_http)
    with pytest.raises(Permanent) as refused:
        deliver(hubspot, sample_report, dry_run=True)
    assert str(refused.value).startswith(f"{key}: the report gave {value!r}, which is not a HubSpot record id")
    assert not [c for c in mocked_http.calls if "deals/999" in c.request.url or ".." in c.request.url]


def test_an_id_in_a_path_is_one_quoted_segment():
    from hub_hubspot.client import HubSpotApi

    hubspot = make_destination("hubspot", {"token": TOKEN}, name="crm")
    ctx = hubspot.context(delivery_id="dlv_test", attempt=1, state={}, dry_run=True)
    HubSpotApi(hubspot, ctx).update("contacts", "51/../deals/9?x#", {"phone": "+31612345678"})
    assert [c.url for c in ctx.sent] == ["https://api.hubapi.com/crm/objects/2026-03/contacts/51%2F..%2Fdeals%2F9%3Fx%23"]


def test_values_that_do_not_fit_are_reported_not_sent(sample_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "properties": {
        "last_call_sentiment": "analysis.intent",      # text into a number
        "last_call_intent": "`\"refund\"`",              # not an option
        "last_call_sentimnet": "analysis.sentiment",   # typo
        "hs_calculated_phone_number": "customer.number",  # read-only
        "last_call_resolved": "analysis.resolved",
    }, "follow_up": {"enabled": False}}, name="crm")
    Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    result, ctx = deliver(hubspot, sample_report)
    assert sent(ctx, "PATCH", "/contacts/51")[0].body == {"properties": {"last_call_resolved": "false"}}
    problems = result.data["problems"]
    assert "properties.last_call_sentiment: not sent, 'complaint' is not a number (HubSpot type number)" in problems
    assert any(p.startswith("properties.last_call_intent: not sent, 'refund' is not one of its options") for p in problems)
    assert "properties.last_call_sentimnet: the portal has no contact property 'last_call_sentimnet'; did you mean 'last_call_sentiment'?" in problems
    assert "properties.hs_calculated_phone_number: 'hs_calculated_phone_number' is read-only in HubSpot" in problems
    assert "4 value(s) not sent" in result.message


def test_property_definitions_are_fetched_once_per_destination(hubspot, sample_report, mocked_http):
    Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    deliver(hubspot, sample_report)
    _, ctx = deliver(hubspot, sample_report)
    assert not sent(ctx, "GET", "/crm/properties/2026-03/contacts")
    assert len([c for c in mocked_http.calls if c.request.method == "GET"]) == 1


def test_new_contact_properties_are_set_only_on_creation(sample_report, mocked_http):
    definitions = [{"name": "lifecyclestage", "type": "enumeration", "fieldType": "radio",
                    "options": [{"label": "Lead", "value": "lead"}, {"label": "Customer", "value": "customer"}]}]
    hubspot = make_destination("hubspot", {"token": TOKEN, "new_contact_properties": {"lifecyclestage": "'Lead'"},
                                           "follow_up": {"enabled": False}}, name="crm")
    mocked_http.add(responses.GET, f"{API}/crm/properties/2026-03/contacts", json={"results": definitions})
    portal = Portal(mocked_http)
    _, ctx = deliver(hubspot, sample_report)
    assert sent(ctx, "POST", "/crm/objects/2026-03/contacts")[0].body == {
        "properties": {"phone": NUMBER, "lifecyclestage": "lead"}, "associations": []}
    portal.contacts = [contact("501", phone=NUMBER)]
    _, again = deliver(hubspot, sample_report)  # a later call from the same, now known, number
    assert not sent(again, "PATCH", "/crm/objects/2026-03/contacts/501") and portal.count("contacts") == 1


def test_contact_conflict_409_uses_the_existing_id(sample_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "follow_up": {"enabled": False}}, name="crm")
    portal = Portal(mocked_http)
    portal.fail[("POST", "/crm/objects/2026-03/contacts")] = (
        409, {}, {"status": "error", "message": "Contact already exists. Existing ID: 3001", "category": "CONFLICT"})
    _, ctx = deliver(hubspot, sample_report)
    assert ctx.state["contact_id"] == "3001"
    assert sent(ctx, "POST", "/crm/objects/2026-03/calls")[0].body["associations"][0]["to"] == {"id": "3001"}


# --- failure at each step, then a retry with the saved state -------------------------

STEPS = [("POST", "/crm/objects/2026-03/contacts/search"), ("GET", "/crm/properties/2026-03/contacts"),
         ("POST", "/crm/objects/2026-03/contacts"), ("POST", "/crm/objects/2026-03/calls"),
         ("POST", "/crm/objects/2026-03/deals"), ("POST", "/crm/objects/2026-03/tasks")]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: f"{s[0]} {s[1]}")
def test_failure_at_each_step_then_retry_creates_each_record_once(hubspot, sample_report, mocked_http, step, clock):
    portal = Portal(mocked_http)
    ctx, error = failed_attempt(
        hubspot, sample_report, portal, step, (503, {}, {"status": "error", "message": "internal error"}))
    assert "destination 'crm'" in str(error)
    clock[0] += flow.SEARCH_LAG + 1  # the retry comes after HubSpot search shows new records
    # the dispatcher saves the state of the failed attempt and hands it to the retry
    _, retry = deliver(hubspot, sample_report, state=ctx.state, attempt=2)
    assert retry.state["completed"] is True
    for object_type in ("contacts", "calls", "deals", "tasks"):
        assert portal.count(object_type) == 1, object_type
    finished = {path for method, path in STEPS[:STEPS.index(step)] if method == "POST" and not path.endswith("/search")}
    assert not [r for r in retry.sent if r.method == "POST" and r.url.removeprefix(API) in finished]


def test_lost_answer_to_a_create_is_found_not_created_again(hubspot, sample_report, mocked_http, clock):
    """HubSpot created the call but the answer never came back (timeout)."""
    portal = Portal(mocked_http, found={"calls": [{"id": "777", "properties": {"hs_object_id": "777"}}]})
    ctx, _ = failed_attempt(
        hubspot, sample_report, portal, ("POST", "/crm/objects/2026-03/calls"), requests.ReadTimeout("read timed out"))
    assert ctx.sent_at("call") == clock[0] and "call_id" not in ctx.state
    _, ctx2 = deliver(hubspot, sample_report, state=ctx.state, attempt=2)
    lookup = sent(ctx2, "POST", "/crm/objects/2026-03/calls/search")
    assert len(lookup) == 1
    assert lookup[0].body == {"filterGroups": [{"filters": [
        {"propertyName": "hs_timestamp", "operator": "EQ", "value": "1772442847512"},
        {"propertyName": "associations.contact", "operator": "EQ", "value": "501"}]}],
        "properties": ["hs_object_id"], "limit": 1, "after": "0", "sorts": []}
    assert not sent(ctx2, "POST", "/crm/objects/2026-03/calls")
    assert ctx2.state["call_id"] == "777" and not ctx2.was_sent("call")
    assert sent(ctx2, "POST", "/crm/objects/2026-03/tasks")[0].body["associations"][0]["to"] == {"id": "501"}


def test_lost_task_answer_not_found_is_created_once(hubspot, sample_report, mocked_http, clock):
    portal = Portal(mocked_http)
    ctx, _ = failed_attempt(
        hubspot, sample_report, portal, ("POST", "/crm/objects/2026-03/tasks"), requests.ConnectionError("reset"))
    clock[0] += flow.SEARCH_LAG
    _, ctx2 = deliver(hubspot, sample_report, state=ctx.state, attempt=2)
    lookup = sent(ctx2, "POST", "/crm/objects/2026-03/tasks/search")[0].body["filterGroups"][0]["filters"]
    assert lookup == [
        {"propertyName": "hs_timestamp", "operator": "EQ", "value": "1772529247512"},
        {"propertyName": "hs_task_subject", "operator": "EQ", "value": "Follow up (complaint): +31 6 23456789"},
        {"propertyName": "associations.contact", "operator": "EQ", "value": "501"}]
    assert portal.count("tasks") == 1 and ctx2.state["task_id"] == "901"


LOST = [("contact", "/crm/objects/2026-03/contacts"), ("call", "/crm/objects/2026-03/calls"),
        ("deal", "/crm/objects/2026-03/deals"), ("task", "/crm/objects/2026-03/tasks")]


@pytest.mark.parametrize("kind, path", LOST, ids=[k for k, _ in LOST])
def test_retry_soon_after_a_lost_create_waits_for_search_instead_of_creating(
        hubspot, sample_report, mocked_http, clock, kind, path):
    """HubSpot created the record but the answer was lost; the dispatcher retries after 5 s,
    before HubSpot search shows new records: the retry must wait, not create a second one."""
    portal = Portal(mocked_http)
    ctx, _ = failed_attempt(
        hubspot, sample_report, portal, ("POST", path), requests.ReadTimeout("read timed out"))
    assert ctx.sent_at(kind) == clock[0]

    clock[0] += 5
    early = hubspot.context(delivery_id="dlv_test", attempt=2, state=ctx.state)
    with pytest.raises(Retryable) as info:
        hubspot.deliver(sample_report, early)
    assert info.value.retry_after == pytest.approx(flow.SEARCH_LAG - 5)
    assert f"destination 'crm': the {kind} create sent 5s ago got no answer" in str(info.value)
    assert sent(early, "POST", f"{path}/search") and not sent(early, "POST", path)
    assert early.sent_at(kind) == ctx.sent_at(kind)  # still waiting for that create

    clock[0] += flow.SEARCH_LAG
    _, late = deliver(hubspot, sample_report, state=early.state, attempt=3)
    assert len(sent(late, "POST", path)) == 1 and not late.was_sent(kind)
    for object_type in ("contacts", "calls", "deals", "tasks"):
        assert portal.count(object_type) == 1, object_type


def test_lost_contact_create_found_by_phone_on_retry(hubspot, sample_report, mocked_http, clock):
    portal = Portal(mocked_http)
    ctx, _ = failed_attempt(
        hubspot, sample_report, portal, ("POST", "/crm/objects/2026-03/contacts"), requests.ReadTimeout("read timed out"))
    portal.contacts = [contact("3001", phone=NUMBER)]  # the lost create, now searchable
    clock[0] += 5
    _, retry = deliver(hubspot, sample_report, state=ctx.state, attempt=2)
    assert portal.count("contacts") == 0 and not sent(retry, "POST", "/crm/objects/2026-03/contacts")
    assert retry.state["contact_id"] == "3001" and not retry.was_sent("contact")
    assert sent(retry, "POST", "/crm/objects/2026-03/calls")[0].body["associations"][0]["to"] == {"id": "3001"}


def test_429_on_a_create_is_not_a_lost_answer(hubspot, sample_report, mocked_http, clock):
    portal = Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    ctx, _ = failed_attempt(
        hubspot, sample_report, portal, ("POST", "/crm/objects/2026-03/calls"), (429, {"Retry-After": "1"}, {"errorType": "RATE_LIMIT"}))
    assert not ctx.was_sent("call")  # HubSpot refused it: nothing to wait for
    _, retry = deliver(hubspot, sample_report, state=ctx.state, attempt=2)  # at once, same clock
    assert portal.count("calls") == 1 and retry.state["call_id"] == "701"


def test_company_and_deal_ids_from_the_report_are_associated_everywhere(sample_report, mocked_http):
    options = {**OPTIONS, "company_id": "`\"9001\"`", "deal_id": "`\"7007\"`", "find_existing": "after-failure"}
    hubspot = make_destination("hubspot", options, name="crm")
    Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    _, ctx = deliver(hubspot, sample_report)

    def links(path):
        return [(a["to"]["id"], a["types"]) for a in sent(ctx, "POST", path)[0].body["associations"]]

    def kind(type_id):
        return [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]

    assert links("/crm/objects/2026-03/calls") == [("51", kind(194)), ("9001", kind(182)), ("7007", kind(206))]
    assert links("/crm/objects/2026-03/deals") == [("51", kind(3)), ("9001", kind(5))]
    assert links("/crm/objects/2026-03/tasks") == [("51", kind(204)), ("9001", kind(192)), ("7007", kind(216)),
                                              ("801", kind(216))]


def test_replay_updates_every_record_and_creates_nothing(hubspot, sample_report, mocked_http):
    portal = Portal(mocked_http)
    _, first = deliver(hubspot, sample_report)
    created = list(portal.created)
    result, ctx = deliver(hubspot, sample_report, state=first.state)
    assert portal.created == created
    assert [(r.method, r.url.removeprefix(API)) for r in ctx.sent] == [
        ("PATCH", "/crm/objects/2026-03/contacts/501"), ("PATCH", "/crm/objects/2026-03/calls/701"),
        ("PATCH", "/crm/objects/2026-03/deals/801"), ("PATCH", "/crm/objects/2026-03/tasks/901")]
    assert ctx.sent[1].body["properties"]["hs_call_duration"] == "312000"
    assert "dealstage" not in ctx.sent[2].body["properties"] and "pipeline" not in ctx.sent[2].body["properties"]
    assert "hs_task_status" not in ctx.sent[3].body["properties"]
    assert ctx.sent[3].body["properties"]["hs_task_subject"] == "Follow up (complaint): +31 6 23456789"
    assert ctx.state["pass"] == 2 and ctx.state["completed"] is True
    assert "call 701 updated" in result.message


def test_replay_failing_midway_resumes_with_updates_only(hubspot, sample_report, mocked_http):
    portal = Portal(mocked_http)
    _, first = deliver(hubspot, sample_report)
    ctx, _ = failed_attempt(
        hubspot, sample_report, portal, ("PATCH", "/crm/objects/2026-03/deals/801"), (502, {}, {"message": "bad gateway"}), state=first.state)
    _, ctx2 = deliver(hubspot, sample_report, state=ctx.state, attempt=2)
    assert [(r.method, r.url.removeprefix(API)) for r in ctx2.sent] == [
        ("PATCH", "/crm/objects/2026-03/deals/801"), ("PATCH", "/crm/objects/2026-03/tasks/901")]
    assert portal.count("calls") == 1


def test_replay_without_the_old_state_finds_and_updates_instead_of_creating(hubspot, sample_report, mocked_http):
    """A replay that arrives as a new delivery (no state): the contact is found by phone,
    the call, deal and task by the lookup searches, and each is updated."""
    portal = Portal(mocked_http, contacts=[contact("51", phone=NUMBER)], found={
        "calls": [{"id": "701", "properties": {}}], "deals": [{"id": "801", "properties": {}}],
        "tasks": [{"id": "901", "properties": {}}]})
    result, ctx = deliver(hubspot, sample_report)
    assert portal.created == []
    assert [(r.method, r.url.removeprefix(API)) for r in ctx.sent] == [
        ("POST", "/crm/objects/2026-03/contacts/search"), ("GET", "/crm/properties/2026-03/contacts"),
        ("PATCH", "/crm/objects/2026-03/contacts/51"),
        ("POST", "/crm/objects/2026-03/calls/search"), ("PATCH", "/crm/objects/2026-03/calls/701"),
        ("POST", "/crm/objects/2026-03/deals/search"), ("PATCH", "/crm/objects/2026-03/deals/801"),
        ("POST", "/crm/objects/2026-03/tasks/search"), ("PATCH", "/crm/objects/2026-03/tasks/901")]
    assert ctx.sent[3].body == {"filterGroups": [{"filters": [
        {"propertyName": "hs_timestamp", "operator": "EQ", "value": "1772442847512"},
        {"propertyName": "associations.contact", "operator": "EQ", "value": "51"}]}],
        "properties": ["hs_object_id"], "limit": 1, "after": "0", "sorts": []}
    assert ctx.sent[5].body["filterGroups"][0]["filters"] == [
        {"propertyName": "dealname", "operator": "EQ", "value": "Complaint opportunity: +31 6 23456789"},
        {"propertyName": "pipeline", "operator": "EQ", "value": "default"},
        # received 2026-03-02T09:15:00Z, less a minute of clock skew: an older deal of this caller is not it
        {"propertyName": "createdate", "operator": "GTE", "value": "1772442840000"},
        {"propertyName": "associations.contact", "operator": "EQ", "value": "51"}]
    assert "dealstage" not in ctx.sent[6].body["properties"]
    assert "hs_task_status" not in ctx.sent[8].body["properties"]
    assert "call 701 updated (found by search)" in result.message


def test_find_existing_after_failure_only_searches_for_the_contact(sample_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "find_existing": "after-failure"}, name="crm")
    portal = Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    _, ctx = deliver(hubspot, sample_report)
    assert [r.url.removeprefix(API) for r in sent(ctx, "POST", "/search")] == ["/crm/objects/2026-03/contacts/search"]
    assert portal.count("calls") == 1 and portal.count("tasks") == 1


# --- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_permanent_and_name_destination_and_scopes(hubspot, sample_report, mocked_http, status):
    portal = Portal(mocked_http)
    portal.fail[("POST", "/crm/objects/2026-03/contacts/search")] = (status, {}, {
        "status": "error", "category": "MISSING_SCOPES" if status == 403 else "INVALID_AUTHENTICATION",
        "message": "This app hasn't been granted all required scopes to make this call."})
    with pytest.raises(Permanent) as info:
        deliver(hubspot, sample_report)
    text = str(info.value)
    assert "destination 'crm'" in text and f"HTTP {status}" in text
    for scope in ("crm.objects.contacts.read", "crm.objects.contacts.write", "crm.schemas.contacts.read",
                  "crm.objects.deals.write"):
        assert scope in text
    assert TOKEN not in text


@pytest.mark.parametrize("headers, body, wait, policy", [
    ({"X-HubSpot-RateLimit-Interval-Milliseconds": "10000", "X-HubSpot-RateLimit-Max": "100",
      "X-HubSpot-RateLimit-Remaining": "0"},
     {"status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}, 10.0, "TEN_SECONDLY_ROLLING"),
    ({"X-HubSpot-RateLimit-Daily": "250000", "X-HubSpot-RateLimit-Daily-Remaining": "0"},
     {"status": "error", "errorType": "RATE_LIMIT", "policyName": "DAILY"}, 3600.0, "DAILY"),
    ({"Retry-After": "7"}, {"status": "error", "errorType": "RATE_LIMIT"}, 7.0, "Retry-After"),
    ({}, {"status": "error", "message": "You have reached your secondly limit."}, 1.0, "SEARCH"),
])
def test_429_honours_hubspot_rate_limit_headers(hubspot, sample_report, mocked_http, headers, body, wait, policy):
    portal = Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    portal.fail[("POST", "/crm/objects/2026-03/calls")] = (429, headers, body)
    with pytest.raises(Retryable) as info:
        deliver(hubspot, sample_report)
    assert info.value.retry_after == wait and info.value.http_status == 429
    assert f"destination 'crm': HubSpot rate limit reached ({policy})" in str(info.value)


def test_bad_request_is_permanent_with_hubspot_words(hubspot, sample_report, mocked_http):
    portal = Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    portal.fail[("POST", "/crm/objects/2026-03/deals")] = (400, {}, {
        "status": "error", "message": "Property values were not valid: dealstage", "category": "VALIDATION_ERROR"})
    with pytest.raises(Permanent) as info:
        deliver(hubspot, sample_report)
    assert "destination 'crm'" in str(info.value) and "dealstage" in str(info.value)


# --- the search limiter ---------------------------------------------------------------

def test_search_requests_never_exceed_hubspots_per_second_limit(sample_report, mocked_http):
    """More than a window's worth of searches at once: never more than 4 in any second."""
    hubspot = make_destination("hubspot", {"token": TOKEN, "follow_up": {"enabled": False}}, name="crm")
    assert hubspot.rate_limits["search"] == "4/1s"
    clock = FakeClock().drive(hubspot)
    portal = Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    portal.clock = clock
    arrived = portal.searched_at
    for _ in range(7):  # seven deliveries at the same instant: contact search + call lookup each
        deliver(hubspot, sample_report)
    assert len(arrived) == 14
    assert arrived[:4] == [0.0] * 4 and arrived[4] == 1.0  # the fifth waits for the first to leave the window
    assert_no_window_exceeded(arrived, "4/1s")
    assert clock.now == pytest.approx(3.0)


# --- dry run --------------------------------------------------------------------------

def test_dry_run_sends_nothing_and_lists_the_exact_requests(hubspot, sample_report, mocked_http):
    result, ctx = deliver(hubspot, sample_report, dry_run=True)
    assert len(mocked_http.calls) == 0
    assert [(r.method, r.url.removeprefix(API)) for r in ctx.sent] == STEPS
    assert ctx.sent[2].body == {"properties": {"phone": NUMBER, "last_call_sentiment": "2",
                                               "last_call_intent": "complaint", "last_call_resolved": "false",
                                               "last_call_at": "2026-03-02T09:14:07.512Z"}, "associations": []}
    assert ctx.sent[3].body["associations"][0]["to"] == {"id": "dry-run-contact"}
    assert all(r.headers["Authorization"] == "[secret]" for r in ctx.sent)
    assert "call dry-run-call created" in result.message


def test_dry_run_with_both_property_tables_reads_definitions_once(sample_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "new_contact_properties": {"lifecyclestage": "'lead'"},
                                           "properties": {"last_call_intent": "analysis.intent"}}, name="crm")
    _, ctx = deliver(hubspot, sample_report, dry_run=True)
    assert len(sent(ctx, "GET", "/crm/properties/2026-03/contacts")) == 1
    assert sent(ctx, "POST", "/crm/objects/2026-03/contacts")[0].body == {
        "properties": {"phone": NUMBER, "lifecyclestage": "lead", "last_call_intent": "complaint"},
        "associations": []}


def test_base_url_is_configurable(sample_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "base_url": "http://127.0.0.1:8999/"}, name="crm")
    _, ctx = deliver(hubspot, sample_report, dry_run=True)
    assert ctx.sent[0].url == "http://127.0.0.1:8999/crm/objects/2026-03/contacts/search"


# --- call and task details ------------------------------------------------------------

def test_recording_url_that_is_not_https_is_left_out(make_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "follow_up": {"enabled": False}}, name="crm")
    Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    _, ctx = deliver(hubspot, make_report("end-of-call-report-full", recording_url="http://rec.example.com/1.mp3"))
    assert "hs_call_recording_url" not in sent(ctx, "POST", "/crm/objects/2026-03/calls")[0].body["properties"]


def test_task_due_in_business_days_owner_and_priority_rules(make_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "owner_id": "111", "follow_up": {
        "due_in_days": 1, "business_days": True, "owner_id": "222", "type": "TODO",
        "priority": {"HIGH": "analysis.sentiment <= 1", "LOW": "analysis.intent == 'complaint'"}}}, name="crm")
    Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    friday = make_report("end-of-call-report-full", timestamp="2026-03-06T16:30:00.000Z")
    _, ctx = deliver(hubspot, friday)
    props = sent(ctx, "POST", "/crm/objects/2026-03/tasks")[0].body["properties"]
    assert props["hs_timestamp"] == "2026-03-09T16:30:00.000Z"  # the next business day: Monday
    assert props["hubspot_owner_id"] == "222" and props["hs_task_type"] == "TODO"
    assert props["hs_task_priority"] == "LOW"  # sentiment 2: HIGH's rule fails, LOW's holds
    assert sent(ctx, "POST", "/crm/objects/2026-03/calls")[0].body["properties"]["hubspot_owner_id"] == "111"


def test_task_priority_falls_back_to_the_default(make_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "follow_up": {"priority": {}}}, name="crm")
    Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    _, ctx = deliver(hubspot, make_report("end-of-call-report-full"))
    assert sent(ctx, "POST", "/crm/objects/2026-03/tasks")[0].body["properties"]["hs_task_priority"] == "MEDIUM"


# --- shared limits, secrets -------------------------------------------------------------

def test_destinations_with_one_token_share_the_rate_limit_buckets():
    first = make_destination("hubspot", {"token": "pat-eu1-shared-1"}, name="crm_a")
    second = make_destination("hubspot", {"token": "pat-eu1-shared-1"}, name="crm_b")
    other = make_destination("hubspot", {"token": "pat-eu1-other-2"}, name="crm_c")
    assert first.limiters["search"] is second.limiters["search"]
    assert first.limiters["default"] is second.limiters["default"]
    assert other.limiters["search"] is not first.limiters["search"]
    assert "pat-eu1-shared-1" not in first.limiter_key()


def test_token_echoed_in_an_error_body_is_redacted(hubspot, sample_report, mocked_http):
    portal = Portal(mocked_http, contacts=[contact("51", phone=NUMBER)])
    portal.fail[("POST", "/crm/objects/2026-03/calls")] = (400, {}, {
        "status": "error", "category": "VALIDATION_ERROR", "message": f"bad request from Bearer {TOKEN}"})
    with pytest.raises(Permanent) as info:
        deliver(hubspot, sample_report)
    assert "destination 'crm'" in str(info.value) and TOKEN not in str(info.value)


# --- api_version: the official SDK as the oracle (conftest.Oracle) --------------------------------

def flow_requests(hubspot, sample_report, mocked_http, *, replay: bool = False):
    """Every request of a new caller's delivery (and, with ``replay``, of a replay without its state)."""
    portal = Portal(mocked_http)
    _, ctx = deliver(hubspot, sample_report)
    requests_sent = list(ctx.sent)
    if replay:
        portal.contacts = [contact("501", phone=NUMBER)]
        portal.found = {"calls": [contact("701")], "deals": [contact("801")], "tasks": [contact("901")]}
        _, again = deliver(hubspot, sample_report)
        requests_sent += again.sent
    return requests_sent


def test_every_2026_03_request_is_what_the_official_sdk_sends(sample_report, mocked_http, oracle):
    hubspot = make_destination("hubspot", OPTIONS, name="crm")
    assert hubspot.config["api_version"] == "2026-03"  # the default
    sent = flow_requests(hubspot, sample_report, mocked_http, replay=True)
    kinds = {(r.method, r.url.removeprefix(API).split("/")[-1]) for r in sent}
    assert {("POST", "search"), ("GET", "contacts"), ("POST", "contacts"), ("POST", "calls"), ("POST", "deals"),
            ("POST", "tasks"), ("PATCH", "501"), ("PATCH", "701"), ("PATCH", "801"), ("PATCH", "901")} <= kinds
    for request in sent:
        path = request.url.removeprefix(API)
        assert oracle.resend(request.method, path, request.body) == (request.method, path, request.body)
    # the SDK sends the same credential the same way
    assert oracle.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert mocked_http.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_body_the_sdk_does_not_describe_fails_the_oracle(oracle):
    """The oracle is not a mirror: an unknown key or a wrong spelling cannot pass through it."""
    link = {"to": {"id": "501"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeID": 194}]}
    with pytest.raises(KeyError):
        oracle.resend("POST", "/crm/objects/2026-03/calls", {"properties": {}, "associations": [link]})
    body = {"after": "0", "limit": 1, "properties": [], "sorts": [],
            "filterGroups": [{"filters": [{"property": "hs_timestamp", "operator": "EQ", "value": "1"}]}]}
    with pytest.raises(KeyError):
        oracle.resend("POST", "/crm/objects/2026-03/calls/search", body)
    # a body the plugin would send without `associations` is not what the SDK sends
    assert oracle.resend("POST", "/crm/objects/2026-03/contacts", {"properties": {"phone": NUMBER},
                                                                    "associations": []})[2] == {
        "properties": {"phone": NUMBER}, "associations": []}


@pytest.mark.parametrize("version, objects, properties", [
    ("2026-03", "/crm/objects/2026-03", "/crm/properties/2026-03"),
    ("2026-09", "/crm/objects/2026-09", "/crm/properties/2026-09"),
    ("v3", "/crm/v3/objects", "/crm/v3/properties"),
])
def test_api_version_selects_the_paths(version, objects, properties, sample_report):
    hubspot = make_destination("hubspot", {**OPTIONS, "api_version": version}, name="crm")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:  # a new caller: no PATCH
        Portal(rsps, objects=objects, properties=properties)
        _, ctx = deliver(hubspot, sample_report)
    assert [(r.method, r.url.removeprefix(API)) for r in ctx.sent] == [
        ("POST", f"{objects}/contacts/search"),
        ("GET", f"{properties}/contacts"),
        ("POST", f"{objects}/contacts"),
        ("POST", f"{objects}/calls"),
        ("POST", f"{objects}/deals"),
        ("POST", f"{objects}/tasks"),
    ]


def test_an_unknown_api_version_names_the_key_and_the_choices():
    with pytest.raises(ConfigProblems) as info:
        make_destination("hubspot", {"token": TOKEN, "api_version": "2025-09"}, name="crm")
    assert "api_version: must be one of 2026-03, 2026-09, v3" in str(info.value)


def test_validation_error_keeps_category_and_correlation_id(hubspot_2026_09, sample_report, mocked_http):
    """2026-09 enforces the portal's validation rules on writes: the 400 carries what support asks for."""
    mocked_http.add(responses.POST, f"{API}/crm/objects/2026-09/contacts/search",
                    json={"total": 1, "results": [contact("51", phone=NUMBER)]})
    mocked_http.add(responses.POST, f"{API}/crm/objects/2026-09/calls/search", json={"total": 0, "results": []})
    mocked_http.add(responses.POST, f"{API}/crm/objects/2026-09/calls", status=400, json={
        "status": "error", "message": "Property values were not valid",
        "errors": [{"message": "hs_call_disposition is required when hs_call_status is COMPLETED",
                    "in": "hs_call_disposition"}],
        "category": "VALIDATION_ERROR", "correlationId": "a43683b0-5717-4ceb-80b4-104d02915d8c"})
    with pytest.raises(Permanent) as info:
        deliver(hubspot_2026_09, sample_report)
    reason = info.value.reason
    assert reason.startswith("destination 'crm': HTTP 400 from api.hubapi.com: Property values were not valid; "
                             "hs_call_disposition is required when hs_call_status is COMPLETED")
    assert reason.endswith("(category VALIDATION_ERROR, correlationId a43683b0-5717-4ceb-80b4-104d02915d8c)")


def test_missing_scope_403_names_service_keys_and_keeps_the_correlation_id(sample_report, mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN}, name="crm")
    mocked_http.add(responses.POST, f"{API}/crm/objects/2026-03/contacts/search", status=403, json={
        "status": "error", "message": "This app hasn't been granted all required scopes to make this call.",
        "category": "MISSING_SCOPES", "correlationId": "0f8a1b2c-0000-4ceb-80b4-104d02915d8c",
        "errors": [{"message": "One or more of the following scopes are required.",
                    "context": {"requiredGranularScopes": ["crm.objects.contacts.read"]}}]})
    with pytest.raises(Permanent) as info:
        deliver(hubspot, sample_report)
    reason = info.value.reason
    assert "(category MISSING_SCOPES, correlationId 0f8a1b2c-0000-4ceb-80b4-104d02915d8c)" in reason
    assert "a service key, or the access token of a legacy private app" in reason
    assert "Development > Keys > Service keys" in reason and "crm.objects.contacts.read" in reason
    assert TOKEN not in reason


@pytest.fixture
def hubspot_2026_09():
    return make_destination("hubspot", {"token": TOKEN, "api_version": "2026-09", "follow_up": {"enabled": False}},
                            name="crm")


# --- test_connection: the contact search delivery starts with, one result at most ----------------

@responses.activate
def test_connection_searches_contacts_once():
    responses.add(responses.POST, f"{API}/crm/objects/2026-03/contacts/search", json={"total": 0, "results": []})
    assert probe_connection(make_destination("hubspot", OPTIONS)).startswith("token accepted")
    [call] = responses.calls
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(call.request.body) == {"after": "0", "sorts": [], "filterGroups": [],
                                             "properties": ["hs_object_id"], "limit": 1}


@responses.activate
def test_connection_without_the_scope_is_a_403_naming_the_scopes():
    responses.add(responses.POST, f"{API}/crm/objects/2026-03/contacts/search", status=403, json={
        "status": "error", "category": "MISSING_SCOPES", "message": "This app hasn't been granted all required scopes"})
    with pytest.raises(Permanent) as info:
        probe_connection(make_destination("hubspot", OPTIONS))
    assert info.value.http_status == 403 and "crm.objects.contacts.read" in info.value.reason

