"""The end-of-call delivery logs the call on the contact the call's assistant-request answer named
(``assistant.metadata``, written by ``hub.report.crm_metadata``) without searching for the caller."""
from __future__ import annotations

import json
import logging

import pytest
import requests
import responses

from hub import Retryable
from hub.testing import deliver, make_destination

API = "https://api.hubapi.com"
TOKEN = "pat-eu1-test-token-0000"
OBJECTS = "/crm/objects/2026-03"
CONTACT_LINK = {"to": {"id": "501"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}
COMPANY_LINK = {"to": {"id": "77"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 182}]}


def hubspot(**options):
    return make_destination("hubspot", {"token": TOKEN, "follow_up": {"enabled": False}, **options}, name="crm")


def crm_metadata(destination, record_ids):
    """What ``hub.report.crm_metadata`` writes into an answer's ``assistant.metadata`` (the wire
    format the platform sends back on the call's later events)."""
    return {"crm_destination": destination, **{f"crm_{kind}_id": value for kind, value in record_ids.items()}}


def answered(make_report, record_ids, destination="crm"):
    """A report whose assistant carries what the assistant-request answer put in its metadata."""
    return make_report(assistant={"id": "a1", "name": "Support NL", "metadata": {
        "customer_tier": "premium", **crm_metadata(destination, record_ids)}})


def portal(rsps, *, contact_status=200, primary_company="77", phone_hits=()):
    rsps.add(responses.GET, f"{API}{OBJECTS}/contacts/501", status=contact_status,
             json={"id": "501", "properties": {"hs_object_id": "501", "associatedcompanyid": primary_company}}
             if contact_status == 200 else {"status": "error", "message": "Object not found", "category":
                                             "OBJECT_NOT_FOUND"})
    rsps.add(responses.POST, f"{API}{OBJECTS}/contacts/search", json={"total": len(phone_hits),
                                                                       "results": list(phone_hits)})
    rsps.add(responses.POST, f"{API}{OBJECTS}/calls/search", json={"total": 0, "results": []})
    rsps.add(responses.POST, f"{API}{OBJECTS}/calls", status=201, json={"id": "701", "properties": {}})


def sent(rsps):
    return [(c.request.method, c.request.url.removeprefix(API)) for c in rsps.calls]


def call_body(rsps):
    [create] = [c for c in rsps.calls if c.request.method == "POST" and c.request.url.endswith("/calls")]
    return json.loads(create.request.body)


def test_the_call_goes_on_the_answered_contact_without_any_search(make_report, mocked_http):
    portal(mocked_http)
    report = answered(make_report, {"contact": "501", "company": "77"})
    result, ctx = deliver(hubspot(find_existing="after-failure"), report)

    assert sent(mocked_http) == [("GET", f"{OBJECTS}/contacts/501?properties=associatedcompanyid"),
                                 ("POST", f"{OBJECTS}/calls")]
    assert call_body(mocked_http)["associations"] == [CONTACT_LINK, COMPANY_LINK]
    assert ctx.state["contact_id"] == "501" and ctx.state["answer_company_id"] == "77"
    assert "contact 501 (named by the assistant-request answer)" in result.message


def test_with_find_existing_always_only_the_call_is_looked_for(make_report, mocked_http):
    portal(mocked_http)
    deliver(hubspot(), answered(make_report, {"contact": "501"}))
    assert ("POST", f"{OBJECTS}/contacts/search") not in sent(mocked_http)
    assert sent(mocked_http)[1] == ("POST", f"{OBJECTS}/calls/search")  # duplicate avoidance, as before
    assert call_body(mocked_http)["associations"] == [CONTACT_LINK]  # no company named: none linked


def test_a_company_that_is_no_longer_the_primary_one_is_not_linked(make_report, mocked_http):
    portal(mocked_http, primary_company="78")
    _, ctx = deliver(hubspot(find_existing="after-failure"), answered(make_report, {"contact": "501", "company": "77"}))
    assert call_body(mocked_http)["associations"] == [CONTACT_LINK] and "answer_company_id" not in ctx.state


@pytest.mark.parametrize("bad", ["51/../../deals/999?archived=true#", "0501", "501 ", "-1", "1" * 21, "５０１"])
def test_an_id_that_is_not_hubspot_digits_never_reaches_a_url(bad, make_report, mocked_http, caplog):
    portal(mocked_http, phone_hits=[{"id": "502", "properties": {"phone": "+31623456789"}}])
    caplog.set_level(logging.WARNING, logger="hub_hubspot.flow")
    result, ctx = deliver(hubspot(find_existing="after-failure"), answered(make_report, {"contact": bad}))

    assert all(bad.strip() not in url and ".." not in url for _, url in sent(mocked_http))
    assert sent(mocked_http)[0] == ("POST", f"{OBJECTS}/contacts/search")  # the normal search instead
    assert ctx.state["contact_id"] == "502" and "the answer's contact id is not a HubSpot id, ignored" in result.message
    [warning] = [r for r in caplog.records if "crm_contact_id" in r.getMessage()]
    assert bad.strip() not in warning.getMessage() and "not shown" in warning.getMessage()


def test_ids_another_destination_looked_up_are_not_used(make_report, mocked_http):
    portal(mocked_http, phone_hits=[{"id": "502", "properties": {"phone": "+31623456789"}}])
    _, ctx = deliver(hubspot(find_existing="after-failure"), answered(make_report, {"contact": "501"}, "other-crm"))
    assert sent(mocked_http)[0] == ("POST", f"{OBJECTS}/contacts/search")
    assert all("/contacts/501" not in url for _, url in sent(mocked_http)) and ctx.state["contact_id"] == "502"


def test_a_contact_deleted_since_the_answer_falls_back_to_the_search(make_report, mocked_http):
    portal(mocked_http, contact_status=404, phone_hits=[{"id": "502", "properties": {"phone": "+31623456789"}}])
    result, ctx = deliver(hubspot(find_existing="after-failure"), answered(make_report, {"contact": "501"}))
    assert sent(mocked_http)[:2] == [("GET", f"{OBJECTS}/contacts/501?properties=associatedcompanyid"),
                                     ("POST", f"{OBJECTS}/contacts/search")]
    assert ctx.state["contact_id"] == "502" and ctx.state["contact_source"] == "found by phone"
    assert "contact 501 named by the answer no longer exists, searched by phone" in result.message


def test_a_retry_after_a_lost_call_create_reads_nothing_again_and_creates_no_second_call(make_report, mocked_http):
    """The contact from the answer is kept in the state; the lost create is looked for, not repeated."""
    portal(mocked_http)
    mocked_http.replace(responses.POST, f"{API}{OBJECTS}/calls", body=requests.exceptions.ReadTimeout("read timeout"))
    destination = hubspot(find_existing="after-failure")
    report = answered(make_report, {"contact": "501", "company": "77"})
    ctx = destination.context(delivery_id="dlv_test", attempt=1)
    with pytest.raises(Retryable):
        destination.deliver(report, ctx)
    assert ctx.was_sent("call") and ctx.state["contact_id"] == "501"

    before = len(mocked_http.calls)
    mocked_http.replace(responses.POST, f"{API}{OBJECTS}/calls/search",
                        json={"total": 1, "results": [{"id": "701", "properties": {"hs_object_id": "701"}}]})
    result, again = deliver(destination, report, state=ctx.state, attempt=2)
    assert sent(mocked_http)[before:] == [("POST", f"{OBJECTS}/calls/search")]
    search = json.loads(mocked_http.calls[-1].request.body)
    assert {"propertyName": "associations.contact", "operator": "EQ", "value": "501"} in \
        search["filterGroups"][0]["filters"]
    assert again.state["call_id"] == "701" and not again.was_sent("call")


def test_a_dry_run_shows_the_read_by_id(make_report):
    result, ctx = deliver(hubspot(find_existing="after-failure"), answered(make_report, {"contact": "501"}),
                          dry_run=True)
    assert [(r.method, r.url.removeprefix(API)) for r in ctx.sent] == [
        ("GET", f"{OBJECTS}/contacts/501?properties=associatedcompanyid"), ("POST", f"{OBJECTS}/calls")]


@pytest.fixture
def hub_config(hub_config):
    hub_config["destinations"] = {"crm": {"type": "hubspot", "token": TOKEN, "find_existing": "after-failure",
                                          "follow_up": {"enabled": False}}}
    return hub_config


def test_a_signed_report_with_the_answers_metadata_is_delivered_on_that_contact(app, signed_post, sample_payload,
                                                                                 mocked_http):
    """The whole way: webhook, store, dispatcher, HubSpot; the metadata as the platform sends it back."""
    sample_payload["message"]["assistant"]["metadata"] = {"crm_destination": "crm", "crm_contact_id": "501",
                                                          "crm_company_id": "77"}
    portal(mocked_http)
    assert signed_post(sample_payload).status_code == 202
    assert app.hub.dispatcher.run_due() == 1
    assert sent(mocked_http) == [("GET", f"{OBJECTS}/contacts/501?properties=associatedcompanyid"),
                                 ("POST", f"{OBJECTS}/calls")]
    assert call_body(mocked_http)["associations"] == [CONTACT_LINK, COMPANY_LINK]
    [delivery] = app.hub.store.list_deliveries(destination="crm")
    assert delivery.status == "succeeded" and delivery.state["contact_source"] == "named by the assistant-request answer"
