"""``forget``: the caller's Contacts and Leads, and the Call tasks the hub logged on them, deleted.

Salesforce's REST reference: ``DELETE /services/data/vXX.X/sobjects/{SObjectName}/{id}`` answers
``204 No Content``; a record deleted already answers ``404`` (``ENTITY_IS_DELETED``). The people
are found by the deliveries' own SOSL phone search, each hit confirmed by its E.164 form.
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from hub import Permanent, Retryable
from hub.testing import make_destination

LOGIN = "https://acme.my.salesforce.com"
TOKEN_URL = f"{LOGIN}/services/oauth2/token"
DATA = f"{LOGIN}/services/data/v67.0"
SEARCH = f"{DATA}/search/"
QUERY = f"{DATA}/query/"
CC = {"login_url": LOGIN, "client_id": "3MVG9-consumer-key", "client_secret": "consumer-s3cret"}
NUMBER = "+31623456789"
CONTACT_ID, LEAD_ID, OTHER_ID = "003000000000001AAA", "00Q000000000001AAA", "003000000000009AAA"
TASK_IDS = ["00T000000000001AAA", "00T000000000002AAA"]
HITS = [
    {"attributes": {"type": "Contact"}, "Id": CONTACT_ID, "AccountId": "001000000000001AAA",
     "Phone": "+31 6 2345 6789", "LastModifiedDate": "2026-02-01T10:00:00.000+0000"},
    {"attributes": {"type": "Lead"}, "Id": LEAD_ID, "MobilePhone": "06-23456789",
     "LastModifiedDate": "2026-01-01T10:00:00.000+0000"},
    {"attributes": {"type": "Contact"}, "Id": OTHER_ID, "Phone": "+31 6 2345 6780",  # a fuzzy hit: someone else
     "LastModifiedDate": "2026-03-01T10:00:00.000+0000"},
]
TASKS_SOQL = (f"SELECT Id FROM Task WHERE WhoId IN ('{CONTACT_ID}', '{LEAD_ID}') AND TaskSubtype = 'Call' "
              "AND CallObject != null")


@pytest.fixture
def salesforce():
    return make_destination("salesforce", CC, name="sf")


def mock_found(rsps, records=HITS, tasks=TASK_IDS):
    rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": LOGIN, "token_type": "Bearer"})
    rsps.get(SEARCH, json={"searchRecords": list(records)})
    rsps.get(QUERY, json={"totalSize": len(tasks), "done": True,
                          "records": [{"attributes": {"type": "Task"}, "Id": t} for t in tasks]})


def test_forget_deletes_the_call_tasks_then_every_confirmed_contact_and_lead(salesforce):
    with responses.RequestsMock() as rsps:
        mock_found(rsps)
        for path in [*(f"Task/{t}" for t in TASK_IDS), f"Contact/{CONTACT_ID}", f"Lead/{LEAD_ID}"]:
            rsps.delete(f"{DATA}/sobjects/{path}", status=204)
        result = salesforce.forget(NUMBER, salesforce.context(delivery_id="erasure-1"))
        calls = [c.request for c in rsps.calls]
    assert result.message == (f"deleted 1 Contact(s), 1 Lead(s), 2 Task(s): {TASK_IDS[0]}, {TASK_IDS[1]}, "
                              f"{CONTACT_ID}, {LEAD_ID}")
    login, search, query, *deletes = calls
    sosl = parse_qs(urlsplit(search.url).query)["q"][0]
    assert sosl.startswith("FIND {31623456789 OR 0623456789 OR 623456789} IN PHONE FIELDS RETURNING Contact(")
    assert parse_qs(urlsplit(query.url).query)["q"] == [TASKS_SOQL]
    assert [(r.method, r.url) for r in deletes] == [
        ("DELETE", f"{DATA}/sobjects/Task/{TASK_IDS[0]}"), ("DELETE", f"{DATA}/sobjects/Task/{TASK_IDS[1]}"),
        ("DELETE", f"{DATA}/sobjects/Contact/{CONTACT_ID}"), ("DELETE", f"{DATA}/sobjects/Lead/{LEAD_ID}")]
    assert all(r.headers["Authorization"] == "Bearer tok" and not r.body for r in deletes)
    assert OTHER_ID not in " ".join(r.url for r in calls), "a search hit with another number is left alone"


def test_a_record_deleted_already_counts_as_gone_so_a_retry_finishes_the_rest(salesforce):
    with responses.RequestsMock() as rsps:
        mock_found(rsps, records=HITS[:1], tasks=TASK_IDS[:1])
        rsps.delete(f"{DATA}/sobjects/Task/{TASK_IDS[0]}", status=404,
                    json=[{"errorCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}])
        rsps.delete(f"{DATA}/sobjects/Contact/{CONTACT_ID}", status=204)
        result = salesforce.forget(NUMBER, salesforce.context())
    assert result.message == f"deleted 1 Contact(s), 0 Lead(s), 1 Task(s): {TASK_IDS[0]}, {CONTACT_ID}"


def test_a_caller_salesforce_does_not_know_is_a_success_that_says_so(salesforce):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_found(rsps, records=HITS[2:])
        assert salesforce.forget(NUMBER, salesforce.context()).message == \
            "no Salesforce Contact or Lead has this number"
        assert [c.request.url.split("?")[0] for c in rsps.calls] == [TOKEN_URL, SEARCH]


def test_a_refused_delete_is_permanent_naming_the_permission_and_a_server_error_retryable(salesforce):
    with responses.RequestsMock() as rsps:
        mock_found(rsps, records=HITS[:1], tasks=[])
        rsps.delete(f"{DATA}/sobjects/Contact/{CONTACT_ID}", status=403, json=[
            {"errorCode": "INSUFFICIENT_ACCESS_OR_READONLY", "message": "insufficient access rights on object id",
             "fields": []}])
        with pytest.raises(Permanent, match="delete access to Task, Contact and Lead"):
            salesforce.forget(NUMBER, salesforce.context())
        rsps.replace(responses.DELETE, f"{DATA}/sobjects/Contact/{CONTACT_ID}", status=503,
                     json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "down", "fields": []}])
        with pytest.raises(Retryable):
            salesforce.forget(NUMBER, salesforce.context())


def test_a_contact_salesforce_will_not_delete_is_permanent_with_its_message(salesforce):
    with responses.RequestsMock() as rsps:
        mock_found(rsps, records=HITS[:1], tasks=[])
        rsps.delete(f"{DATA}/sobjects/Contact/{CONTACT_ID}", status=400, json=[
            {"errorCode": "DELETE_FAILED", "message": "Your attempt to delete Jan Jansen could not be completed "
                                                      "because it is associated with the following cases.: 00001026",
             "fields": []}])
        with pytest.raises(Permanent, match="DELETE_FAILED"):
            salesforce.forget(NUMBER, salesforce.context())


def test_the_salesforce_type_can_erase():
    from hub_salesforce.destination import SalesforceDestination

    assert SalesforceDestination.can_forget()


@pytest.fixture
def hub_config(hub_config):
    hub_config["dispatch"].update(retry_delays=[0], max_attempts=2)
    hub_config["destinations"] = {"sf": {"type": "salesforce", **CC}}
    return hub_config


def test_forget_destinations_queues_it_and_the_hub_deletes_at_salesforce(app, runner):
    from hub.erasures import run_due

    result = runner.invoke(["forget", "0623456789", "--destinations"])
    assert result.exit_code == 0 and "  sf: queued" in result.output.splitlines(), result.output
    with responses.RequestsMock() as rsps:
        mock_found(rsps, records=HITS[:1], tasks=TASK_IDS[:1])
        rsps.delete(f"{DATA}/sobjects/Task/{TASK_IDS[0]}", status=204)
        rsps.delete(f"{DATA}/sobjects/Contact/{CONTACT_ID}", status=204)
        assert run_due(app.hub) == {"succeeded": 1, "retry": 0, "dead": 0}
    shown = runner.invoke(["erasures", "1"])
    assert f"  sf: erased (1 attempt): deleted 1 Contact(s), 0 Lead(s), 1 Task(s): {TASK_IDS[0]}, {CONTACT_ID}" \
        in shown.output.splitlines(), shown.output
