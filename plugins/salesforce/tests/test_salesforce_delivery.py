"""Delivery flows field by field, every failure point, resumption, dry run, and the hub's contract."""
import json
import re
from unittest.mock import ANY
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from hub import Permanent, Retryable, redact
from hub.testing import DestinationContract, deliver, make_destination, probe_connection

LOGIN = "https://acme.my.salesforce.com"
TOKEN_URL = f"{LOGIN}/services/oauth2/token"
DATA = f"{LOGIN}/services/data/v67.0"
SEARCH = f"{DATA}/search/"
COMPOSITE = f"{DATA}/composite"
QUERY = f"{DATA}/query/"
CALL_ID = "0b7e9a52-5d0c-4a8e-9f3e-2f1c6d8a4b11"
PRECHECK = f"{DATA}/sobjects/Task/Sovereign_Call_Id__c/{CALL_ID}"
CALL_OBJECT_SOQL = (f"SELECT Id, WhoId FROM Task WHERE CallObject = '{CALL_ID}' AND TaskSubtype = 'Call' "
                    "ORDER BY CreatedDate LIMIT 1")
CC = {"login_url": LOGIN, "client_id": "3MVG9-consumer-key", "client_secret": "consumer-s3cret"}
CONTACT_ID, ACCOUNT_ID, LEAD_ID = "003000000000001AAA", "001000000000001AAA", "00Q000000000001AAA"
IDS = {"newWho": "00Q000000000009AAA", "callTask": "00T000000000001AAA", "followUp": "00T000000000002AAA",
       "opportunity": "006000000000001AAA", "contactRole": "00K000000000001AAA"}
EXPECTED_DESCRIPTION = (
    "Customer reported that the invoice for February was charged twice and asked for a refund. The agent could "
    "not issue the refund and promised a call back from billing.\n\nAnalysis:\n- follow_up_needed: True\n"
    "- intent: complaint\n- resolved: False\n- sentiment: 2\n\nRecording: https://recordings.example.com/0b7e9a52.mp3"
    f"\n\nCall {CALL_ID}, 5m 12s, 2026-03-02 09:14 UTC\nReport: https://hub.example.com/reports/rep_test")


def contact_hit(phone="+31 6 2345 6789", account=ACCOUNT_ID):
    return {"attributes": {"type": "Contact", "url": f"/services/data/v67.0/sobjects/Contact/{CONTACT_ID}"},
            "Id": CONTACT_ID, "Name": "Jan Jansen", "AccountId": account, "Phone": phone,
            "LastModifiedDate": "2026-02-01T10:00:00.000+0000"}


def lead_hit():
    return {"attributes": {"type": "Lead", "url": f"/services/data/v67.0/sobjects/Lead/{LEAD_ID}"},
            "Id": LEAD_ID, "Name": "Piet", "Company": "Acme", "MobilePhone": "06-23456789",
            "LastModifiedDate": "2026-02-01T10:00:00.000+0000"}


def composite_echo(request):
    """Salesforce's answer to an allOrNone composite in which every subrequest succeeded."""
    subs = json.loads(request.body)["compositeRequest"]
    answer = [{"referenceId": s["referenceId"], "httpStatusCode": 201, "httpHeaders": {},
               "body": {"id": IDS[s["referenceId"]], "success": True, "errors": [], "created": True}} for s in subs]
    return 200, {"Content-Type": "application/json"}, json.dumps({"compositeResponse": answer})


def mock_all(rsps, records=(), *, precheck=None):
    rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN, "token_type": "Bearer"})
    if precheck is not None:
        rsps.get(PRECHECK, **precheck)
    rsps.get(SEARCH, json={"searchRecords": list(records)})
    rsps.add_callback(responses.POST, COMPOSITE, callback=composite_echo)


def composite_body(rsps):
    calls = [c for c in rsps.calls if c.request.url == COMPOSITE]
    assert len(calls) == 1
    assert calls[0].request.headers["Authorization"] == "Bearer tok"
    body = json.loads(calls[0].request.body)
    assert body["allOrNone"] is True
    return {s["referenceId"]: s for s in body["compositeRequest"]}


def urls(rsps):
    return [(c.request.method, c.request.url.split("?")[0]) for c in rsps.calls]


# --- the flows --------------------------------------------------------------------------

def test_known_contact_gets_a_completed_call_task_with_every_field(sample_report):
    destination = make_destination("salesforce", {**CC, "owner_id": "005000000000001AAA"})
    with responses.RequestsMock() as rsps:
        mock_all(rsps, [contact_hit()])
        result, ctx = deliver(destination, sample_report)
        subs = composite_body(rsps)
        assert urls(rsps) == [("POST", TOKEN_URL), ("GET", SEARCH), ("POST", COMPOSITE)]
    assert list(subs) == ["callTask"]
    assert subs["callTask"]["method"] == "POST"
    assert subs["callTask"]["url"] == "/services/data/v67.0/sobjects/Task"
    assert subs["callTask"]["body"] == {
        "Subject": "Outbound call: complaint",
        "Description": EXPECTED_DESCRIPTION,
        "TaskSubtype": "Call",
        "Status": "Completed",
        "ActivityDate": "2026-03-02",
        "CallObject": CALL_ID,
        "CallType": "Outbound",
        "CallDurationInSeconds": 312,
        "WhoId": CONTACT_ID,
        "OwnerId": "005000000000001AAA",
    }
    assert ctx.state == {"who": {"id": CONTACT_ID, "sobject": "Contact", "account_id": ACCOUNT_ID,
                                 "how": "matched by Phone"}, "call_task_id": IDS["callTask"]}
    assert result.message == f"call task {IDS['callTask']} on Contact {CONTACT_ID} (matched by Phone)"
    assert result.data["call_task_id"] == IDS["callTask"]


def test_inbound_call_what_id_and_custom_fields(make_report):
    report = make_report(call={"id": CALL_ID, "type": "inbound_phone_call", "status": "ended"},
                         assistant={"metadata": {"sf_case": "500000000000001AAA"}})
    destination = make_destination("salesforce", {
        **CC, "what_id": "assistant.metadata.sf_case",
        "task_fields": {"Sentiment__c": "analysis.sentiment", "Recording_URL__c": "recording_url",
                        "Missing__c": "analysis.no_such_key"},
        "subject": "{{ 'x' * 300 }}"})
    with responses.RequestsMock() as rsps:
        mock_all(rsps, [contact_hit()])
        deliver(destination, report)
        body = composite_body(rsps)["callTask"]["body"]
    assert body["CallType"] == "Inbound"
    assert body["WhatId"] == "500000000000001AAA"
    assert body["Sentiment__c"] == 2
    assert body["Recording_URL__c"] == "https://recordings.example.com/0b7e9a52.mp3"
    assert "Missing__c" not in body
    assert len(body["Subject"]) == 255 and body["Subject"].endswith("…")


def test_a_what_id_that_is_not_a_salesforce_id_sends_nothing(make_report):
    report = make_report(call={"id": CALL_ID, "type": "inbound_phone_call", "status": "ended"},
                         assistant={"metadata": {"sf_case": "500000000000001AAA/../../Account/x"}})
    destination = make_destination("salesforce", {**CC, "what_id": "assistant.metadata.sf_case"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_all(rsps, [contact_hit()])
        with pytest.raises(Permanent, match=r"what_id \(assistant.metadata.sf_case\) gave '500000000000001AAA/"):
            deliver(destination, report)
        assert not [c for c in rsps.calls if c.request.url.endswith("/composite")]


def test_unknown_caller_becomes_a_lead_linked_in_the_same_composite(sample_report):
    destination = make_destination("salesforce", {**CC, "new_record_fields": {"LeadSource": "'Phone Inquiry'"}})
    with responses.RequestsMock() as rsps:
        mock_all(rsps, [contact_hit(phone="+31 6 9999 9999")])  # a search hit that is not the caller
        result, ctx = deliver(destination, sample_report)
        subs = composite_body(rsps)
    assert list(subs) == ["newWho", "callTask"]
    assert subs["newWho"]["method"] == "POST"
    assert subs["newWho"]["url"] == "/services/data/v67.0/sobjects/Lead"
    assert subs["newWho"]["body"] == {"LastName": "Caller +31 6 23456789", "Phone": "+31623456789",
                                      "Company": "Unknown (phone caller)", "LeadSource": "Phone Inquiry"}
    assert subs["callTask"]["body"]["WhoId"] == "@{newWho.id}"
    assert ctx.state["who"] == {"id": IDS["newWho"], "sobject": "Lead", "how": "created Lead", "created": True}
    assert result.message == f"call task {IDS['callTask']} on Lead {IDS['newWho']} (created Lead)"


def test_create_contact_sends_a_contact_without_company(sample_report):
    destination = make_destination("salesforce", {**CC, "create": "contact", "last_name": "{{ customer.number }}"})
    with responses.RequestsMock() as rsps:
        mock_all(rsps)
        _, ctx = deliver(destination, sample_report)
        subs = composite_body(rsps)
    assert subs["newWho"]["url"] == "/services/data/v67.0/sobjects/Contact"
    assert subs["newWho"]["body"] == {"LastName": "+31623456789", "Phone": "+31623456789"}
    assert ctx.state["who"]["sobject"] == "Contact"


def test_create_none_logs_the_call_without_a_person(sample_report):
    destination = make_destination("salesforce", {**CC, "create": "none"})
    with responses.RequestsMock() as rsps:
        mock_all(rsps)
        result, _ = deliver(destination, sample_report)
        subs = composite_body(rsps)
    assert list(subs) == ["callTask"] and "WhoId" not in subs["callTask"]["body"]
    assert 'no Contact or Lead has +316*****789; create = "none"' in result.message
    assert "+31623456789" not in result.message


def test_web_call_is_not_searched_and_not_linked(make_report):
    report = make_report("end-of-call-report-web-call")
    destination = make_destination("salesforce", CC)
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.add_callback(responses.POST, COMPOSITE, callback=composite_echo)
        result, _ = deliver(destination, report)
        subs = composite_body(rsps)
        assert urls(rsps) == [("POST", TOKEN_URL), ("POST", COMPOSITE)]
    assert "WhoId" not in subs["callTask"]["body"] and "CallType" not in subs["callTask"]["body"]
    assert "no caller number (web call)" in result.message


def test_who_id_from_the_report_skips_the_search(make_report):
    report = make_report(assistant={"metadata": {"salesforce_id": LEAD_ID}})
    destination = make_destination("salesforce", {**CC, "who_id": "assistant.metadata.salesforce_id"})
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.add_callback(responses.POST, COMPOSITE, callback=composite_echo)
        _, ctx = deliver(destination, report)
        assert composite_body(rsps)["callTask"]["body"]["WhoId"] == LEAD_ID
    assert ctx.state["who"] == {"id": LEAD_ID, "sobject": "Lead", "how": "given by who_id"}


def test_who_id_that_is_not_a_contact_or_lead_is_permanent(make_report):
    report = make_report(assistant={"metadata": {"salesforce_id": "51"}})
    destination = make_destination("salesforce", {**CC, "who_id": "assistant.metadata.salesforce_id"}, name="crm")
    with responses.RequestsMock() as rsps:
        with pytest.raises(Permanent, match="destination 'crm': who_id .* gave '51'"):
            deliver(destination, report)
        assert len(rsps.calls) == 0  # refused before logging in


def test_follow_up_task_priority_due_date_and_owner(make_report):
    # Friday 2026-03-06: one business day later is Monday 2026-03-09
    report = make_report(timestamp="2026-03-06T16:00:00.000Z")
    destination = make_destination("salesforce", {**CC, "owner_id": "005000000000001AAA", "follow_up": {
        "when": "analysis.follow_up_needed", "priority": {"High": "analysis.sentiment <= 3", "Low": "`true`"},
        "fields": {"Topic__c": "analysis.intent"}}})
    with responses.RequestsMock() as rsps:
        mock_all(rsps, [contact_hit()])
        result, ctx = deliver(destination, report)
        subs = composite_body(rsps)
    assert list(subs) == ["callTask", "followUp"]
    assert subs["followUp"]["url"] == "/services/data/v67.0/sobjects/Task"
    assert subs["followUp"]["body"] == {
        "Subject": "Follow up: complaint with +31 6 23456789",
        "Description": subs["followUp"]["body"]["Description"],
        "TaskSubtype": "Task", "Status": "Not Started", "Priority": "High", "ActivityDate": "2026-03-09",
        "WhoId": CONTACT_ID, "OwnerId": "005000000000001AAA", "Topic__c": "complaint"}
    assert subs["followUp"]["body"]["Description"].endswith("Report: https://hub.example.com/reports/rep_test")
    assert ctx.state["follow_up_task_id"] == IDS["followUp"]
    assert f"follow-up task {IDS['followUp']}" in result.message


def test_follow_up_calendar_days_default_priority_and_own_owner(sample_report, make_report):
    options = {**CC, "follow_up": {"when": "analysis.follow_up_needed", "due_in_days": 3, "business_days": False,
                                   "owner_id": "005000000000002AAA", "default_priority": "Normal"}}
    with responses.RequestsMock() as rsps:
        mock_all(rsps, [contact_hit()])
        deliver(make_destination("salesforce", options), sample_report)
        body = composite_body(rsps)["followUp"]["body"]
    assert (body["Priority"], body["ActivityDate"], body["OwnerId"]) == ("Normal", "2026-03-05", "005000000000002AAA")
    report = make_report(analysis={"sentiment": 8, "intent": "support", "resolved": True, "follow_up_needed": False})
    with responses.RequestsMock() as rsps:
        mock_all(rsps, [contact_hit()])
        deliver(make_destination("salesforce", options), report)
        assert list(composite_body(rsps)) == ["callTask"]


def test_opportunity_on_the_contacts_account_with_contact_role(sample_report):
    destination = make_destination("salesforce", {**CC, "opportunity": {
        "when": "analysis.intent == 'complaint'", "stage": "Qualification", "close_in_days": 30,
        "contact_role": "Decision Maker", "fields": {"Description": "summary"}}})
    with responses.RequestsMock() as rsps:
        mock_all(rsps, [contact_hit()])
        result, ctx = deliver(destination, sample_report)
        subs = composite_body(rsps)
    assert list(subs) == ["callTask", "opportunity", "contactRole"]
    assert subs["opportunity"]["url"] == "/services/data/v67.0/sobjects/Opportunity"
    assert subs["opportunity"]["body"] == {
        "Name": "+31 6 23456789 - call 2026-03-02", "AccountId": ACCOUNT_ID, "StageName": "Qualification",
        "CloseDate": "2026-04-01", "Description": sample_report.summary}
    assert subs["contactRole"]["url"] == "/services/data/v67.0/sobjects/OpportunityContactRole"
    assert subs["contactRole"]["body"] == {"OpportunityId": "@{opportunity.id}", "ContactId": CONTACT_ID,
                                           "IsPrimary": True, "Role": "Decision Maker"}
    assert (ctx.state["opportunity_id"], ctx.state["contact_role_id"]) == (IDS["opportunity"], IDS["contactRole"])
    assert f"opportunity {IDS['opportunity']}" in result.message


def test_opportunity_for_a_contact_given_by_who_id_reads_its_account(make_report):
    report = make_report(assistant={"metadata": {"salesforce_id": CONTACT_ID}})
    destination = make_destination("salesforce", {**CC, "who_id": "assistant.metadata.salesforce_id",
                                                  "opportunity": {"when": "`true`"}})
    contact_url = f"{DATA}/sobjects/Contact/{CONTACT_ID}"
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(contact_url, json={"attributes": {"type": "Contact"}, "Id": CONTACT_ID, "AccountId": ACCOUNT_ID})
        rsps.add_callback(responses.POST, COMPOSITE, callback=composite_echo)
        _, ctx = deliver(destination, report)
        assert urls(rsps) == [("POST", TOKEN_URL), ("GET", contact_url), ("POST", COMPOSITE)]
        assert rsps.calls[1].request.url == contact_url + "?fields=AccountId"
        subs = composite_body(rsps)
    assert list(subs) == ["callTask", "opportunity", "contactRole"]
    assert subs["opportunity"]["body"]["AccountId"] == ACCOUNT_ID
    assert subs["contactRole"]["body"]["ContactId"] == CONTACT_ID
    assert ctx.state["who"] == {"id": CONTACT_ID, "sobject": "Contact", "how": "given by who_id",
                                "account_id": ACCOUNT_ID}


def test_contact_given_by_who_id_without_account_gets_no_opportunity(make_report):
    report = make_report(assistant={"metadata": {"salesforce_id": CONTACT_ID}})
    destination = make_destination("salesforce", {**CC, "who_id": "assistant.metadata.salesforce_id",
                                                  "opportunity": {"when": "`true`"}})
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(f"{DATA}/sobjects/Contact/{CONTACT_ID}", json={"Id": CONTACT_ID, "AccountId": None})
        rsps.add_callback(responses.POST, COMPOSITE, callback=composite_echo)
        result, _ = deliver(destination, report)
        assert list(composite_body(rsps)) == ["callTask"]
    assert "no opportunity: the caller is not a Contact with an Account" in result.message


def test_no_opportunity_for_a_lead(sample_report):
    destination = make_destination("salesforce", {**CC, "opportunity": {"when": "`true`"}})
    with responses.RequestsMock() as rsps:
        mock_all(rsps, [lead_hit()])
        result, ctx = deliver(destination, sample_report)
        assert list(composite_body(rsps)) == ["callTask"]
    assert "no opportunity: the caller is not a Contact with an Account" in result.message
    assert "opportunity_id" not in ctx.state


# --- idempotency -------------------------------------------------------------------------

UPSERT = {**CC, "call_id_field": "Sovereign_Call_Id__c", "follow_up": {"when": "analysis.follow_up_needed"}}


def test_call_task_is_upserted_by_its_external_id(sample_report):
    with responses.RequestsMock() as rsps:
        mock_all(rsps, [contact_hit()], precheck={"status": 404, "json": [
            {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]})
        _, ctx = deliver(make_destination("salesforce", UPSERT), sample_report)
        subs = composite_body(rsps)
        assert urls(rsps) == [("POST", TOKEN_URL), ("GET", PRECHECK), ("GET", SEARCH), ("POST", COMPOSITE)]
        assert rsps.calls[1].request.url == PRECHECK + "?fields=Id%2CWhoId"
    assert subs["callTask"]["method"] == "PATCH"
    assert subs["callTask"]["url"] == f"/services/data/v67.0/sobjects/Task/Sovereign_Call_Id__c/{CALL_ID}"
    assert "Sovereign_Call_Id__c" not in subs["callTask"]["body"]
    assert ctx.state["call_task_id"] == IDS["callTask"] and ctx.state["follow_up_task_id"] == IDS["followUp"]


def test_lost_state_finds_the_task_by_external_id_and_writes_nothing(sample_report):
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(PRECHECK, json={"attributes": {"type": "Task"}, "Id": IDS["callTask"], "WhoId": CONTACT_ID})
        result, ctx = deliver(make_destination("salesforce", UPSERT), sample_report, state={})
        assert urls(rsps) == [("POST", TOKEN_URL), ("GET", PRECHECK)]
    assert ctx.state == {"call_task_id": IDS["callTask"], "recovered": True,
                         "who": {"id": CONTACT_ID, "sobject": "Contact", "how": "found on the task"}}
    assert "already in Salesforce (found by Sovereign_Call_Id__c)" in result.message


def test_several_tasks_with_the_external_id_count_as_already_logged(sample_report):
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(PRECHECK, status=300, json=[f"/services/data/v67.0/sobjects/Task/{IDS['callTask']}",
                                             "/services/data/v67.0/sobjects/Task/00T000000000003AAA"])
        _, ctx = deliver(make_destination("salesforce", UPSERT), sample_report)
        assert urls(rsps) == [("POST", TOKEN_URL), ("GET", PRECHECK)]
    assert ctx.state == {"call_task_id": IDS["callTask"], "recovered": True}


def test_session_ended_inside_the_composite_retries_with_a_new_token(sample_report):
    destination = make_destination("salesforce", CC)
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(SEARCH, json={"searchRecords": [contact_hit()]})
        rsps.post(COMPOSITE, json={"compositeResponse": [{"referenceId": "callTask", "httpStatusCode": 401,
                                                          "httpHeaders": {}, "body": [
            {"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}]}]})
        with pytest.raises(Retryable, match="nothing was saved, retrying with a new token"):
            deliver(destination, sample_report)
    assert destination.tokens._token is None


def test_redelivery_with_saved_state_sends_nothing_but_the_login(sample_report):
    destination = make_destination("salesforce", UPSERT)
    with responses.RequestsMock() as rsps:
        mock_all(rsps, [contact_hit()], precheck={"status": 404, "json": []})
        _, ctx = deliver(destination, sample_report)
        again, ctx2 = deliver(destination, sample_report, state=ctx.state, attempt=2)
    assert ctx2.sent == []  # token cached, ids known: not one request
    assert again.message.startswith(f"call task {IDS['callTask']} on Contact {CONTACT_ID}")


@pytest.mark.parametrize("failing", ["token", "precheck", "search", "composite"])
def test_each_failure_point_retries_and_the_retry_completes_once(sample_report, failing):
    destination = make_destination("salesforce", UPSERT)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        if failing == "token":
            rsps.post(TOKEN_URL, status=503)
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        if failing == "precheck":
            rsps.get(PRECHECK, status=503)
        rsps.get(PRECHECK, status=404, json=[{"errorCode": "NOT_FOUND", "message": "not found"}])
        if failing == "search":
            rsps.get(SEARCH, status=502)
        rsps.get(SEARCH, json={"searchRecords": [contact_hit()]})
        if failing == "composite":
            rsps.post(COMPOSITE, body=requests.ConnectionError("connection reset"))
        rsps.add_callback(responses.POST, COMPOSITE, callback=composite_echo)
        with pytest.raises(Retryable):
            deliver(destination, sample_report)
        state = {}
        if failing == "composite":  # whatever was found before the failure is kept in the state
            state = {"who": {"id": CONTACT_ID, "sobject": "Contact", "account_id": ACCOUNT_ID,
                             "how": "matched by Phone"}}
        _, ctx = deliver(destination, sample_report, state=state, attempt=2)
        composites = [c for c in rsps.calls if c.request.url == COMPOSITE]
    assert ctx.state["call_task_id"] == IDS["callTask"]
    assert ctx.state["follow_up_task_id"] == IDS["followUp"]
    assert len(composites) == (2 if failing == "composite" else 1)


def test_composite_failure_keeps_what_was_found_and_nothing_else(sample_report):
    destination = make_destination("salesforce", CC)
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(SEARCH, json={"searchRecords": [contact_hit()]})
        rsps.post(COMPOSITE, status=503, json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}])
        ctx = destination.context(delivery_id="d1")
        with pytest.raises(Retryable):
            destination.deliver(sample_report, ctx)
    assert ctx.state == {"who": {"id": CONTACT_ID, "sobject": "Contact", "account_id": ACCOUNT_ID,
                                 "how": "matched by Phone"}, "sent": {"composite": {"at": ANY, "times": 1}}}
    with responses.RequestsMock() as rsps:  # the retry skips the search, makes sure nothing was committed
        rsps.get(QUERY, json={"totalSize": 0, "done": True, "records": []})
        rsps.add_callback(responses.POST, COMPOSITE, callback=composite_echo)
        _, ctx2 = deliver(destination, sample_report, state=ctx.state, attempt=2)
        assert urls(rsps) == [("GET", QUERY), ("POST", COMPOSITE)]
        assert parse_qs(urlsplit(rsps.calls[0].request.url).query)["q"] == [CALL_OBJECT_SOQL]
    assert ctx2.state == {"who": {"id": CONTACT_ID, "sobject": "Contact", "account_id": ACCOUNT_ID,
                                  "how": "matched by Phone"}, "call_task_id": IDS["callTask"]}


def test_lost_composite_answer_without_call_id_field_finds_the_task_by_call_object(sample_report):
    """Salesforce committed the Composite but the answer never arrived: the retry must not log the call twice."""
    destination = make_destination("salesforce", {**CC, "follow_up": {"when": "analysis.follow_up_needed"}})
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(SEARCH, json={"searchRecords": [contact_hit()]})
        rsps.post(COMPOSITE, body=requests.ConnectionError("connection reset"))
        ctx = destination.context(delivery_id="d1")
        with pytest.raises(Retryable):
            destination.deliver(sample_report, ctx)
    assert ctx.was_sent("composite")
    with responses.RequestsMock() as rsps:
        rsps.get(QUERY, json={"totalSize": 1, "done": True, "records": [
            {"attributes": {"type": "Task"}, "Id": IDS["callTask"], "WhoId": CONTACT_ID}]})
        result, ctx2 = deliver(destination, sample_report, state=ctx.state, attempt=2)
        assert urls(rsps) == [("GET", QUERY)]  # no second Composite
    assert ctx2.state == {"call_task_id": IDS["callTask"], "recovered": True,
                          "who": {"id": CONTACT_ID, "sobject": "Contact", "how": "found on the task"}}
    assert "already in Salesforce (found by CallObject)" in result.message


def test_call_object_query_escapes_the_call_id(make_report):
    report = make_report(call={"id": "it's\\odd", "type": "outbound_phone_call", "status": "ended"})
    destination = make_destination("salesforce", CC)
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(QUERY, json={"totalSize": 0, "done": True, "records": []})
        rsps.get(SEARCH, json={"searchRecords": [contact_hit()]})
        rsps.add_callback(responses.POST, COMPOSITE, callback=composite_echo)
        _, ctx = deliver(destination, report, state={"sent": {"composite": {"at": 0.0, "times": 1}}}, attempt=2)
        query = parse_qs(urlsplit(rsps.calls[1].request.url).query)["q"][0]
    assert "WHERE CallObject = 'it\\'s\\\\odd' AND" in query
    assert ctx.state["call_task_id"] == IDS["callTask"] and not ctx.was_sent("composite")


# --- error mapping -----------------------------------------------------------------------

def halted(ref):
    return {"referenceId": ref, "httpStatusCode": 400, "httpHeaders": {}, "body": [
        {"errorCode": "PROCESSING_HALTED",
         "message": "The transaction was rolled back since another operation in the same transaction failed."}]}


@pytest.mark.parametrize("error, field, words", [
    ({"errorCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Company]",
      "fields": ["Company"]}, "Company", "fix field Company"),
    ({"errorCode": "INVALID_FIELD", "message": "No such column 'Sentiment__c' on sobject of type Task",
      "fields": ["Sentiment__c"]}, "Sentiment__c", "fix field Sentiment__c"),
    ({"errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "message": "Call Type: bad value for restricted picklist",
      "fields": ["CallType"]}, "CallType", "picklist values"),
])
def test_field_errors_in_the_composite_are_permanent_and_name_the_field(sample_report, error, field, words):
    destination = make_destination("salesforce", CC, name="sf_crm")
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(SEARCH, json={"searchRecords": []})
        rsps.post(COMPOSITE, json={"compositeResponse": [
            {"referenceId": "newWho", "httpStatusCode": 400, "httpHeaders": {}, "body": [error]},
            halted("callTask")]})
        ctx = destination.context(delivery_id="d1")
        with pytest.raises(Permanent) as info:
            destination.deliver(sample_report, ctx)
    message = str(info.value)
    assert message.startswith("destination 'sf_crm': Salesforce refused the call log (newWho; nothing was saved)")
    assert error["errorCode"] in message and field in message and words in message
    assert "PROCESSING_HALTED" not in message
    assert info.value.http_status == 400
    assert "call_task_id" not in ctx.state and "who" not in ctx.state


def test_duplicate_rule_is_permanent_with_the_ways_out(sample_report):
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(SEARCH, json={"searchRecords": []})
        rsps.post(COMPOSITE, json={"compositeResponse": [
            {"referenceId": "newWho", "httpStatusCode": 400, "httpHeaders": {}, "body": [
                {"errorCode": "DUPLICATES_DETECTED", "message": "Use one of these records?", "fields": []}]},
            halted("callTask")]})
        with pytest.raises(Permanent, match="DUPLICATES_DETECTED.*who_id.*create = \"none\""):
            deliver(make_destination("salesforce", CC), sample_report)


def test_web_call_follow_up_and_empty_summary_read_well(make_report):
    report = make_report("end-of-call-report-web-call", summary="")
    destination = make_destination("salesforce", {**CC, "follow_up": {"when": "`true`"}})
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.add_callback(responses.POST, COMPOSITE, callback=composite_echo)
        deliver(destination, report)
        subs = composite_body(rsps)
    assert subs["followUp"]["body"]["Subject"] == "Follow up: call"  # no analysis, no number
    assert subs["followUp"]["body"]["Description"] == "Report: https://hub.example.com/reports/rep_test"
    assert not subs["callTask"]["body"]["Description"].startswith("None")


def test_request_limit_exceeded_retries_after_a_long_delay(sample_report):
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(SEARCH, status=403, json=[{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                                            "message": "TotalRequests Limit exceeded."}])
        with pytest.raises(Retryable) as info:
            deliver(make_destination("salesforce", CC, name="sf_crm"), sample_report)
    assert info.value.retry_after == 3600 and info.value.http_status == 403
    assert "'sf_crm'" in str(info.value) and "API request limit" in str(info.value)


@pytest.mark.parametrize("options, status, headers, wait", [
    ({}, 500, {}, None),                                           # the operator's retry_delays alone
    ({}, 503, {"Retry-After": "120"}, 120),                        # Retry-After stays a floor
    ({"server_error_retry_seconds": 300}, 500, {}, 300),           # the destination's own, documented floor
    ({"server_error_retry_seconds": 300}, 503, {"Retry-After": "120"}, 120),
])
def test_server_errors_follow_the_operators_schedule(sample_report, options, status, headers, wait):
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(SEARCH, status=status, headers=headers, json=[{"errorCode": "UNKNOWN_EXCEPTION", "message": "x"}])
        with pytest.raises(Retryable) as info:
            deliver(make_destination("salesforce", {**CC, **options}), sample_report)
    assert info.value.retry_after == wait and info.value.http_status == status



def test_missing_permission_is_permanent_with_the_fix(sample_report):
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(SEARCH, json={"searchRecords": []})
        rsps.post(COMPOSITE, json={"compositeResponse": [
            {"referenceId": "newWho", "httpStatusCode": 400, "httpHeaders": {}, "body": [
                {"errorCode": "INSUFFICIENT_ACCESS_OR_READONLY", "message": "insufficient access rights on object id",
                 "fields": []}]}, halted("callTask")]})
        with pytest.raises(Permanent) as info:
            deliver(make_destination("salesforce", CC, name="sf_crm"), sample_report)
    assert "'sf_crm'" in str(info.value) and "INSUFFICIENT_ACCESS_OR_READONLY" in str(info.value)
    assert "API Enabled and create access to Task" in str(info.value)


def test_api_disabled_403_is_permanent(sample_report):
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(SEARCH, status=403, json=[{"errorCode": "API_DISABLED_FOR_ORG",
                                            "message": "API is not enabled for this Organization or Partner"}])
        with pytest.raises(Permanent, match="API_DISABLED_FOR_ORG.*Fix: give the integration user"):
            deliver(make_destination("salesforce", CC), sample_report)


def test_malformed_search_is_permanent_with_salesforces_words(sample_report):
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(SEARCH, status=400, json=[{"errorCode": "MALFORMED_SEARCH", "message": "No search term found."}])
        with pytest.raises(Permanent, match="the phone search: HTTP 400: MALFORMED_SEARCH: No search term found"):
            deliver(make_destination("salesforce", CC), sample_report)


# --- dry run -----------------------------------------------------------------------------

def test_dry_run_lists_the_exact_requests_and_sends_none(sample_report):
    destination = make_destination("salesforce", UPSERT)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        result, ctx = deliver(destination, sample_report, dry_run=True)
        assert len(rsps.calls) == 0
    assert [(r.method, r.url.split("?")[0]) for r in ctx.sent] == [
        ("POST", TOKEN_URL), ("GET", PRECHECK), ("GET", SEARCH), ("POST", COMPOSITE)]
    assert ctx.sent[0].body == {"grant_type": "client_credentials", "client_id": "3MVG9-consumer-key",
                                "client_secret": "[secret]"}
    assert all(r.headers.get("Authorization") in (None, "[secret]") for r in ctx.sent)
    composite = {s["referenceId"]: s for s in ctx.sent[3].body["compositeRequest"]}
    assert list(composite) == ["newWho", "callTask", "followUp"]
    assert composite["callTask"]["body"]["TaskSubtype"] == "Call"
    assert composite["callTask"]["body"]["WhoId"] == "@{newWho.id}"
    assert re.match(r"call task dry-run-callTask on Lead dry-run-newWho", result.message)
    assert destination.tokens._token is None  # a dry run never fills the shared token cache


# --- secrets and shared limits ------------------------------------------------------------

def test_literal_secrets_are_redacted_everywhere():
    make_destination("salesforce", {**CC, "client_secret": "literal-consumer-secret-42"})
    assert redact("login failed for literal-consumer-secret-42") == "login failed for [secret]"


def test_destinations_on_one_org_share_rate_limits():
    first = make_destination("salesforce", CC, name="sf_calls")
    second = make_destination("salesforce", {**CC, "login_url": LOGIN + "/"}, name="sf_sales")
    other = make_destination("salesforce", {**CC, "login_url": "https://other.my.salesforce.com"}, name="sf_other")
    assert first.limiters["default"] is second.limiters["default"]
    assert first.limiters["search"] is second.limiters["search"]
    assert first.limiters["default"] is not other.limiters["default"]


# --- the hub's contract ------------------------------------------------------------------

class TestSalesforceContract(DestinationContract):
    destination_type = "salesforce"
    options = {**CC, "follow_up": {"when": "analysis.follow_up_needed"}}

    def mock_success(self, rsps):
        mock_all(rsps, [contact_hit()])

    def is_create(self, recorded_request):
        return recorded_request.url.endswith("/composite")


# --- test_connection: the login delivery does, then GET .../sobjects/Task/describe/ ---------------

@pytest.mark.parametrize("createable", [True, False])
def test_connection_logs_in_and_asks_whether_the_user_may_create_tasks(createable):
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN, "token_type": "Bearer"})
        describe = rsps.get(f"{DATA}/sobjects/Task/describe/", json={"name": "Task", "createable": createable})
        destination = make_destination("salesforce", CC)
        if createable:
            assert probe_connection(destination) == f"logged in to {LOGIN}; the user may create Tasks"
        else:
            with pytest.raises(Permanent, match="may not create Tasks; grant it Create on Task"):
                probe_connection(destination)
        assert describe.calls[0].request.headers["Authorization"] == "Bearer tok"


def test_connection_with_a_bad_secret_says_the_login_failed():
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, status=400, json={"error": "invalid_client", "error_description": "invalid client credentials"})
        with pytest.raises(Permanent, match="invalid_client"):
            probe_connection(make_destination("salesforce", CC))

