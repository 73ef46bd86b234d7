"""The end-of-call delivery logs the Call task on the Contact or Lead the call's assistant-request
answer named (``assistant.metadata``, written by ``hub.report.crm_metadata``) without searching."""
import json
import logging
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pytest
import responses

from hub import Retryable
from hub.testing import deliver, make_destination

LOGIN = "https://acme.my.salesforce.com"
TOKEN_URL = f"{LOGIN}/services/oauth2/token"
DATA = f"{LOGIN}/services/data/v67.0"
SEARCH, QUERY, COMPOSITE = f"{DATA}/search/", f"{DATA}/query/", f"{DATA}/composite"
CC = {"login_url": LOGIN, "client_id": "3MVG9-consumer-key", "client_secret": "consumer-s3cret"}
CONTACT_ID, ACCOUNT_ID, LEAD_ID = "003000000000001AAA", "001000000000001AAA", "00Q000000000001AAA"
OTHER_CONTACT = "003000000000002AAA"
TASK_ID, OPPORTUNITY_ID, ROLE_ID = "00T000000000001AAA", "006000000000001AAA", "00K000000000001AAA"


def crm_metadata(destination, record_ids):
    """What ``hub.report.crm_metadata`` writes into an answer's ``assistant.metadata`` (the wire
    format the platform sends back on the call's later events)."""
    return {"crm_destination": destination, **{f"crm_{kind}_id": value for kind, value in record_ids.items()}}


def answered(make_report, record_ids, destination="salesforce"):
    return make_report(assistant={"id": "a1", "name": "Support NL",
                                  "metadata": crm_metadata(destination, record_ids)})


def composite_echo(request):
    ids = {"callTask": TASK_ID, "opportunity": OPPORTUNITY_ID, "contactRole": ROLE_ID, "newWho": "00Q000000000009AAA"}
    subs = json.loads(request.body)["compositeRequest"]
    return 200, {}, json.dumps({"compositeResponse": [
        {"referenceId": s["referenceId"], "httpStatusCode": 201, "httpHeaders": {},
         "body": {"id": ids[s["referenceId"]], "success": True, "errors": []}} for s in subs]})


def org(rsps, *, records=None, phone_hits=()):
    rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN, "token_type": "Bearer"})
    rsps.get(QUERY, json={"totalSize": len(records or []), "done": True, "records": records or []})
    rsps.get(SEARCH, json={"searchRecords": list(phone_hits)})
    rsps.add_callback(responses.POST, COMPOSITE, callback=composite_echo)


def asked(rsps):
    out = []
    for call in rsps.calls:
        url = urlsplit(call.request.url)
        out.append((call.request.method, url.path.removeprefix("/services/data/v67.0"),
                    parse_qs(url.query).get("q", [None])[0]))
    return out


def task_body(rsps):
    [composite] = [c for c in rsps.calls if c.request.url == COMPOSITE]
    return {s["referenceId"]: s["body"] for s in json.loads(composite.request.body)["compositeRequest"]}


def phone_contact(record_id=OTHER_CONTACT):
    return {"attributes": {"type": "Contact"}, "Id": record_id, "AccountId": None, "Phone": "+31 6 2345 6789",
            "LastModifiedDate": "2026-02-01T10:00:00.000+0000"}


def test_the_task_goes_on_the_answered_contact_without_a_search(make_report):
    report = answered(make_report, {"contact": CONTACT_ID, "account": ACCOUNT_ID})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, records=[{"attributes": {"type": "Contact"}, "Id": CONTACT_ID, "AccountId": ACCOUNT_ID}])
        result, ctx = deliver(make_destination("salesforce", CC), report)
        assert asked(rsps) == [
            ("POST", "/services/oauth2/token", None),
            ("GET", "/query/", f"SELECT Id, AccountId FROM Contact WHERE Id = '{CONTACT_ID}'"),
            ("POST", "/composite", None)]
        assert task_body(rsps)["callTask"]["WhoId"] == CONTACT_ID
    assert ctx.state["who"] == {"id": CONTACT_ID, "sobject": "Contact", "account_id": ACCOUNT_ID,
                                "how": "named by the assistant-request answer"}
    assert result.message == f"call task {TASK_ID} on Contact {CONTACT_ID} (named by the assistant-request answer)"


def test_the_opportunity_goes_on_the_account_salesforce_gives_for_the_contact(make_report):
    """The Account is read with the Contact (one query), never taken from the metadata unread."""
    report = answered(make_report, {"contact": CONTACT_ID, "account": ACCOUNT_ID})
    options = {**CC, "opportunity": {"when": "`true`"}}
    fresh_account = "001000000000009AAA"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, records=[{"attributes": {"type": "Contact"}, "Id": CONTACT_ID, "AccountId": fresh_account}])
        deliver(make_destination("salesforce", options), report)
        bodies = task_body(rsps)
        assert [a[1] for a in asked(rsps)] == ["/services/oauth2/token", "/query/", "/composite"]
    assert bodies["opportunity"]["AccountId"] == fresh_account and bodies["contactRole"]["ContactId"] == CONTACT_ID


def test_the_task_goes_on_the_answered_lead(make_report):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, records=[{"attributes": {"type": "Lead"}, "Id": LEAD_ID, "IsConverted": False}])
        _, ctx = deliver(make_destination("salesforce", CC), answered(make_report, {"lead": LEAD_ID}))
        assert asked(rsps)[1] == ("GET", "/query/", f"SELECT Id, IsConverted FROM Lead WHERE Id = '{LEAD_ID}'")
        assert SEARCH not in [c.request.url.split("?")[0] for c in rsps.calls]
        assert task_body(rsps)["callTask"]["WhoId"] == LEAD_ID
    assert ctx.state["who"]["sobject"] == "Lead"


@pytest.mark.parametrize("record_ids", [
    {"contact": "003000000000001AAA' OR Id != '"},
    {"contact": "003000000000001AAA/../../sobjects/User"},
    {"contact": "00300000000001"},            # 14 characters
    {"contact": LEAD_ID},                      # a Lead's Id named as a contact
    {"contact": CONTACT_ID, "account": "001000000000001AA%"},
    {"lead": "00Q000000000001AAA?x=1"},
])
def test_ids_that_are_not_salesforce_ids_of_their_kind_never_reach_a_url(record_ids, make_report, caplog):
    caplog.set_level(logging.WARNING, logger="hub_salesforce.destination")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, phone_hits=[phone_contact()])
        _, ctx = deliver(make_destination("salesforce", CC), answered(make_report, record_ids))
        sent = [c.request.url for c in rsps.calls]
        assert [a[1] for a in asked(rsps)] == ["/services/oauth2/token", "/search/", "/composite"]
    for value in record_ids.values():
        if value not in (CONTACT_ID, LEAD_ID):
            assert all(value not in url and value not in unquote_plus(url) for url in sent)
            assert value not in caplog.text
    assert ctx.state["who"]["id"] == OTHER_CONTACT and "searching by phone instead" in caplog.text


def test_ids_another_destination_looked_up_are_not_used(make_report):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, phone_hits=[phone_contact()])
        _, ctx = deliver(make_destination("salesforce", CC), answered(make_report, {"contact": CONTACT_ID}, "sf-eu"))
        assert [a[1] for a in asked(rsps)] == ["/services/oauth2/token", "/search/", "/composite"]
    assert ctx.state["who"]["id"] == OTHER_CONTACT


@pytest.mark.parametrize("record_ids, records", [
    ({"contact": CONTACT_ID}, []),                                                         # deleted since
    ({"lead": LEAD_ID}, [{"attributes": {"type": "Lead"}, "Id": LEAD_ID, "IsConverted": True}]),  # converted
])
def test_a_record_gone_or_converted_since_falls_back_to_the_search(record_ids, records, make_report):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, records=records, phone_hits=[phone_contact()])
        _, ctx = deliver(make_destination("salesforce", CC), answered(make_report, record_ids))
        assert [a[1] for a in asked(rsps)] == ["/services/oauth2/token", "/query/", "/search/", "/composite"]
    assert ctx.state["who"] == {"id": OTHER_CONTACT, "sobject": "Contact", "account_id": None,
                                "how": "matched by Phone"}


def test_who_id_configured_by_the_operator_wins_over_the_metadata(make_report):
    report = make_report(assistant={"metadata": {**crm_metadata("salesforce", {"contact": CONTACT_ID}),
                                                 "sf_lead": LEAD_ID}})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps)
        _, ctx = deliver(make_destination("salesforce", {**CC, "who_id": "assistant.metadata.sf_lead"}), report)
        assert [a[1] for a in asked(rsps)] == ["/services/oauth2/token", "/composite"]
    assert ctx.state["who"]["id"] == LEAD_ID


def test_a_retry_keeps_the_answered_contact_and_the_lost_composite_is_looked_up(make_report):
    """Duplicate avoidance as before: the Contact is in the state, the lost Composite is found by CallObject."""
    report = answered(make_report, {"contact": CONTACT_ID})
    destination = make_destination("salesforce", CC)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, records=[{"attributes": {"type": "Contact"}, "Id": CONTACT_ID, "AccountId": None}])
        rsps.replace(responses.POST, COMPOSITE, status=503, json=[{"errorCode": "SERVER_UNAVAILABLE",
                                                                   "message": "down"}])
        ctx = destination.context(delivery_id="dlv_test")
        with pytest.raises(Retryable):
            destination.deliver(report, ctx)
    assert ctx.state["who"]["id"] == CONTACT_ID and ctx.was_sent("composite")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(QUERY, json={"totalSize": 1, "done": True, "records": [{"Id": TASK_ID, "WhoId": CONTACT_ID}]})
        result, again = deliver(destination, report, state=ctx.state, attempt=2)
        assert [a[2] for a in asked(rsps)] == [
            "SELECT Id, WhoId FROM Task WHERE CallObject = '0b7e9a52-5d0c-4a8e-9f3e-2f1c6d8a4b11' "
            "AND TaskSubtype = 'Call' ORDER BY CreatedDate LIMIT 1"]
    assert again.state["call_task_id"] == TASK_ID and "nothing written again" in result.message


def test_a_dry_run_shows_the_read_by_id_and_no_search(make_report):
    _, ctx = deliver(make_destination("salesforce", CC), answered(make_report, {"contact": CONTACT_ID}),
                     dry_run=True)
    paths = [urlsplit(r.url).path.removeprefix("/services/data/v67.0") for r in ctx.sent]
    assert paths == ["/services/oauth2/token", "/query/", "/composite"]


@pytest.fixture
def hub_config(hub_config):
    hub_config["destinations"] = {"salesforce": {"type": "salesforce", **CC}}
    return hub_config


def test_a_signed_report_with_the_answers_metadata_is_delivered_on_that_contact(app, signed_post, sample_payload):
    """The whole way: webhook, store, dispatcher, Salesforce; the metadata as the platform sends it back."""
    sample_payload["message"]["assistant"]["metadata"] = {"crm_destination": "salesforce",
                                                          "crm_contact_id": CONTACT_ID, "crm_account_id": ACCOUNT_ID}
    assert signed_post(sample_payload).status_code == 202
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, records=[{"attributes": {"type": "Contact"}, "Id": CONTACT_ID, "AccountId": ACCOUNT_ID}])
        assert app.hub.dispatcher.run_due() == 1
        assert [a[1] for a in asked(rsps)] == ["/services/oauth2/token", "/query/", "/composite"]
        assert task_body(rsps)["callTask"]["WhoId"] == CONTACT_ID
    [delivery] = app.hub.store.list_deliveries(destination="salesforce")
    assert delivery.status == "succeeded" and delivery.state["who"]["how"] == "named by the assistant-request answer"
