"""``forget``: HubSpot's GDPR delete of the caller's contacts, request by request.

HubSpot's reference ("Permanently delete a contact (GDPR-compliant)"): POST
``/crm/v3/objects/contacts/gdpr-delete`` (``/crm/objects/2026-03/...`` in the dated API, as the
official SDK's ``contacts.gdpr_delete`` sends it) with ``{"objectId": "<contact id>"}``; the
contacts are found by the same phone search a delivery uses, each hit confirmed by its number.
"""
from __future__ import annotations

import json

import httpx
import pytest
import responses
from hubspot_sdk import HubSpot

from hub import Permanent, Retryable
from hub.testing import make_destination

API = "https://api.hubapi.com"
TOKEN = "pat-eu1-forget-token-0000"
NUMBER = "+31623456789"
SEARCH = f"{API}/crm/objects/2026-03/contacts/search"
GDPR = f"{API}/crm/objects/2026-03/contacts/gdpr-delete"
HITS = {"total": 3, "results": [
    {"id": "51", "properties": {"phone": "06-23456789"}},
    {"id": "52", "properties": {"hs_calculated_phone_number": "31623456789"}},
    {"id": "53", "properties": {"phone": "+31 6 99999999"}},  # a search hit that is someone else
]}


@pytest.fixture
def hubspot():
    return make_destination("hubspot", {"token": TOKEN, "default_region": "NL"}, name="crm")


def sdk_request(contact_id: str) -> httpx.Request:
    """What the official SDK sends for ``contacts.gdpr_delete(object_id=...)``."""
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(204)

    client = HubSpot(access_token=TOKEN, base_url=API, max_retries=0,
                     http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    client.crm.objects.contacts.gdpr_delete(object_id=contact_id)
    return seen[0]


def test_forget_gdpr_deletes_each_confirmed_contact_as_the_sdk_would(hubspot, mocked_http):
    mocked_http.post(SEARCH, json=HITS)
    mocked_http.post(GDPR, status=204)
    result = hubspot.forget(NUMBER, hubspot.context(delivery_id="forget"))
    assert result.message == "GDPR-deleted 2 contact(s): 51, 52"
    search, *deletes = mocked_http.calls
    assert "hs_searchable_calculated_phone_number" in search.request.body.decode()
    assert [(c.request.method, c.request.url) for c in deletes] == [("POST", GDPR)] * 2
    assert [json.loads(c.request.body) for c in deletes] == [{"objectId": "51"}, {"objectId": "52"}]
    oracle = sdk_request("51")
    assert (oracle.method, str(oracle.url)) == ("POST", GDPR)
    assert json.loads(oracle.content) == json.loads(deletes[0].request.body)
    assert deletes[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_forget_of_a_caller_hubspot_does_not_know_says_so(hubspot, mocked_http):
    mocked_http.post(SEARCH, json={"total": 0, "results": []})
    assert hubspot.forget(NUMBER, hubspot.context()).message == "no HubSpot contact has this number"
    assert len(mocked_http.calls) == 1


def test_forget_on_the_v3_api_uses_its_path(mocked_http):
    hubspot = make_destination("hubspot", {"token": TOKEN, "api_version": "v3"}, name="crm")
    mocked_http.post(f"{API}/crm/v3/objects/contacts/search", json={"total": 1, "results": [HITS["results"][1]]})
    mocked_http.post(f"{API}/crm/v3/objects/contacts/gdpr-delete", status=204)
    assert hubspot.forget(NUMBER, hubspot.context()).message == "GDPR-deleted 1 contact(s): 52"


def test_a_rate_limit_is_retryable_and_a_missing_scope_permanent_naming_it(hubspot, mocked_http):
    mocked_http.post(SEARCH, json=HITS)
    mocked_http.post(GDPR, status=429, json={"status": "error", "message": "You have reached your secondly limit.",
                                             "policyName": "SECONDLY"})
    with pytest.raises(Retryable):
        hubspot.forget(NUMBER, hubspot.context())
    mocked_http.replace(responses.POST, GDPR, status=403, json={
        "status": "error", "category": "MISSING_SCOPES", "message": "This app hasn't been granted all required scopes"})
    with pytest.raises(Permanent, match="crm.objects.contacts.write"):
        hubspot.forget(NUMBER, hubspot.context())


def test_the_gdpr_delete_request_is_hubspots_reference_field_by_field(hubspot, mocked_http):
    """HubSpot's reference: POST, JSON body with the required string ``objectId`` (the contact's
    id) and no ``idProperty`` (which would make ``objectId`` an email address); bearer token;
    answered 204 with no body. A 404 (deleted already) counts as erased."""
    mocked_http.post(SEARCH, json={"total": 1, "results": [HITS["results"][0]]})
    mocked_http.post(GDPR, status=204)
    hubspot.forget(NUMBER, hubspot.context())
    request = mocked_http.calls[1].request
    assert request.method == "POST" and request.url == GDPR
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(request.body)
    assert list(body) == ["objectId"] and isinstance(body["objectId"], str) and body["objectId"] == "51"

    mocked_http.replace(responses.POST, GDPR, status=404, json={"status": "error", "category": "OBJECT_NOT_FOUND"})
    assert hubspot.forget(NUMBER, hubspot.context()).message == "no HubSpot contact has this number"


@pytest.fixture
def hub_config(hub_config):
    hub_config["dispatch"].update(retry_delays=[0], max_attempts=3)
    hub_config["destinations"] = {"crm": {"type": "hubspot", "token": TOKEN},
                                  "archive": {"type": "jsonl", "path": "/dev/null"}}
    return hub_config


@pytest.mark.hub_plugins("hubspot")
def test_forget_destinations_queues_the_gdpr_delete_and_the_hub_retries_it_like_a_delivery(app, runner, mocked_http):
    from hub import erasures
    from hub import operations as ops

    mocked_http.post(SEARCH, json={"total": 1, "results": [HITS["results"][0]]})
    mocked_http.post(GDPR, status=503, body="upstream unavailable")
    mocked_http.post(GDPR, status=204)
    result = runner.invoke(["forget", "0623456789", "--destinations"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:3] == [
        "erased +316*****789: 0 reports, 0 deliveries, 0 attempts (erasure 1)",
        "  archive: cannot erase: the 'jsonl' type has no erasure (what it was sent stays there)",
        "  crm: queued"]
    assert len(mocked_http.calls) == 0
    assert erasures.run_due(app.hub) == {"succeeded": 1, "retry": 1, "dead": 0}  # retry_delays = [0]
    assert [c.request.url for c in mocked_http.calls] == [SEARCH, GDPR, SEARCH, GDPR]
    [job] = ops.get_erasure(app.hub, 1).queued
    assert (job.status, job.attempts, job.result) == ("succeeded", 2, "GDPR-deleted 1 contact(s): 51")
    assert [a.outcome for a in job.attempt_log] == ["retry", "succeeded"]
