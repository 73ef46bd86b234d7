"""``lookup_caller`` against a portal mocked with ``responses``: the requests, field by field
(HubSpot's 2026-03 reference and the official SDK as the oracle), what the Caller holds, and how
few requests each kind of caller costs."""
from __future__ import annotations

import json

import pytest
import responses

from hub import Caller, Permanent, Retryable
from hub.testing import make_destination

API = "https://api.hubapi.com"
TOKEN = "pat-eu1-test-token-0000"
NUMBER = "+31623456789"
OBJECTS = "/crm/objects/2026-03"
SEARCH_GROUPS = [{"filters": [{"propertyName": prop, "operator": "EQ", "value": value}]}
                 for value in ("623456789", "0623456789")
                 for prop in ("hs_searchable_calculated_phone_number", "hs_searchable_calculated_mobile_number")]


def contact(cid="501", **props):
    return {"id": cid, "properties": {"hs_object_id": cid, "phone": "06-23456789", **props},
            "url": f"https://app-eu1.hubspot.com/contacts/146000000/record/0-1/{cid}"}


KNOWN = contact(firstname="Anna", lastname="de Vries", company="typed company", associatedcompanyid="77",
                hubspot_owner_id="4242", num_associated_deals="3")


@pytest.fixture
def hubspot():
    return make_destination("hubspot", {"token": TOKEN}, name="crm")


def portal(rsps, *, hits=(KNOWN,), objects=OBJECTS, owners="/crm/owners/2026-03",
           associations="/crm/associations/2026-03", pipelines="/crm/pipelines/2026-03"):
    """A portal answering the lookup's six requests."""
    rsps.add(responses.POST, f"{API}{objects}/contacts/search", json={"total": len(hits), "results": list(hits)})
    rsps.add(responses.GET, f"{API}{objects}/companies/77", json={"id": "77", "properties": {"name": "Acme BV"}})
    rsps.add(responses.GET, f"{API}{owners}/4242", json={
        "id": "4242", "email": "jan@acme.example", "type": "PERSON", "firstName": "Jan", "lastName": "Jansen",
        "userId": 9586504, "archived": False, "createdAt": "2019-12-25T13:01:35.228Z",
        "updatedAt": "2023-08-22T13:40:26.790Z"})
    rsps.add(responses.POST, f"{API}{associations}/contacts/deals/batch/read", json={
        "status": "COMPLETE", "startedAt": "2026-03-02T09:14:07Z", "completedAt": "2026-03-02T09:14:07Z",
        "results": [{"from": {"id": "501"}, "to": [
            {"toObjectId": 801, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 4, "label": None}]},
            {"toObjectId": 802, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 4, "label": None}]},
            {"toObjectId": 803, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 4, "label": None}]}]}]})
    rsps.add(responses.POST, f"{API}{objects}/deals/batch/read", json={
        "status": "COMPLETE", "startedAt": "2026-03-02T09:14:07Z", "completedAt": "2026-03-02T09:14:07Z",
        "results": [
            {"id": "801", "properties": {"dealname": "Renewal 2026", "dealstage": "contractsent", "pipeline": "default",
                                         "amount": "1500", "hs_is_closed": "false"}},
            {"id": "802", "properties": {"dealname": "Pilot", "dealstage": "closedwon", "pipeline": "default",
                                         "amount": "300", "hs_is_closed": "true"}},
            {"id": "803", "properties": {"dealname": "Upsell", "dealstage": "1234567", "pipeline": "7654321",
                                         "amount": None, "hs_is_closed": "false"}}]})
    rsps.add(responses.GET, f"{API}{pipelines}/deals", json={"results": [
        {"id": "default", "label": "Sales Pipeline", "displayOrder": 0, "archived": False,
         "createdAt": "2019-12-25T13:01:35.228Z", "updatedAt": "2023-08-22T13:40:26.790Z", "stages": [
             {"id": "contractsent", "label": "Contract sent", "displayOrder": 5, "archived": False,
              "metadata": {"isClosed": "false", "probability": "0.9"}, "createdAt": "2019-12-25T13:01:35.228Z",
              "updatedAt": "2023-08-22T13:40:26.790Z", "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT"},
             {"id": "closedwon", "label": "Closed won", "displayOrder": 6, "archived": False,
              "metadata": {"isClosed": "true", "probability": "1.0"}, "createdAt": "2019-12-25T13:01:35.228Z",
              "updatedAt": "2023-08-22T13:40:26.790Z", "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT"}]},
        {"id": "7654321", "label": "Renewals", "displayOrder": 1, "archived": False,
         "createdAt": "2019-12-25T13:01:35.228Z", "updatedAt": "2023-08-22T13:40:26.790Z", "stages": [
             {"id": "1234567", "label": "Discovery call booked", "displayOrder": 0, "archived": False,
              "metadata": {"isClosed": "false", "probability": "0.2"}, "createdAt": "2019-12-25T13:01:35.228Z",
              "updatedAt": "2023-08-22T13:40:26.790Z", "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT"}]}]})


def paths(ctx):
    return [(r.method, r.url.removeprefix(API)) for r in ctx.sent]


def look_up(hubspot, number=NUMBER):
    ctx = hubspot.context(delivery_id="lookup")
    return hubspot.lookup_caller(number, ctx), ctx


def test_a_known_caller_in_six_requests_each_as_the_reference_writes_it(hubspot, mocked_http):
    portal(mocked_http)
    caller, ctx = look_up(hubspot)

    assert caller == Caller(
        record_ids={"contact": "501", "company": "77"}, name="Anna de Vries", company="Acme BV", owner="Jan Jansen",
        open_deals=[{"name": "Renewal 2026", "stage": "Contract sent", "amount": "1500"},
                    {"name": "Upsell", "stage": "Discovery call booked", "amount": None}],
        url="https://app-eu1.hubspot.com/contacts/146000000/record/0-1/501")
    assert paths(ctx) == [
        ("POST", f"{OBJECTS}/contacts/search"),
        ("GET", f"{OBJECTS}/companies/77?properties=name"),
        ("GET", "/crm/owners/2026-03/4242"),
        ("POST", "/crm/associations/2026-03/contacts/deals/batch/read"),
        ("POST", f"{OBJECTS}/deals/batch/read"),
        ("GET", "/crm/pipelines/2026-03/deals"),
    ]
    search, _, _, links, deals, _ = (json.loads(c.request.body) if c.request.body else None
                                     for c in mocked_http.calls)
    # the delivery's own phone search, reading what the lookup needs besides the numbers
    assert search == {"after": "0", "filterGroups": SEARCH_GROUPS, "limit": 10,
                      "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
                      "properties": ["phone", "mobilephone", "hs_calculated_phone_number",
                                     "hs_calculated_mobile_number", "firstname", "lastname", "email",
                                     "lastmodifieddate", "company", "associatedcompanyid", "hubspot_owner_id",
                                     "num_associated_deals"]}
    assert links == {"inputs": [{"id": "501"}]}
    assert deals == {"inputs": [{"id": "801"}, {"id": "802"}, {"id": "803"}],
                     "properties": ["dealname", "dealstage", "pipeline", "amount", "hs_is_closed"],
                     "propertiesWithHistory": []}
    for call in mocked_http.calls:
        assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_every_lookup_request_is_what_the_official_sdk_sends(hubspot, mocked_http, oracle):
    portal(mocked_http)
    _, ctx = look_up(hubspot)
    assert len(ctx.sent) == 6
    for request in ctx.sent:
        path = request.url.removeprefix(API)
        assert oracle.resend(request.method, path, request.body) == (request.method, oracle.canonical(path),
                                                                      request.body)


def test_owner_names_and_stage_labels_are_cached_so_the_next_lookup_costs_four(hubspot, mocked_http):
    portal(mocked_http)
    look_up(hubspot)
    caller, ctx = look_up(hubspot)
    assert caller.owner == "Jan Jansen" and caller.open_deals[0]["stage"] == "Contract sent"
    assert paths(ctx) == [
        ("POST", f"{OBJECTS}/contacts/search"),
        ("GET", f"{OBJECTS}/companies/77?properties=name"),
        ("POST", "/crm/associations/2026-03/contacts/deals/batch/read"),
        ("POST", f"{OBJECTS}/deals/batch/read"),
    ]


def test_an_owner_that_is_gone_is_no_owner_and_is_not_asked_again(hubspot, mocked_http):
    portal(mocked_http, hits=[contact(hubspot_owner_id="4243", num_associated_deals="0")])
    mocked_http.add(responses.GET, f"{API}/crm/owners/2026-03/4243", status=404, json={
        "status": "error", "message": "Owner not found", "category": "OBJECT_NOT_FOUND"})
    assert look_up(hubspot)[0].owner is None
    _, ctx = look_up(hubspot)
    assert paths(ctx) == [("POST", f"{OBJECTS}/contacts/search")]


def test_only_closed_deals_cost_no_pipelines_request(hubspot, mocked_http):
    portal(mocked_http)
    mocked_http.replace(responses.POST, f"{API}{OBJECTS}/deals/batch/read", json={"status": "COMPLETE", "results": [
        {"id": "802", "properties": {"dealname": "Pilot", "dealstage": "closedlost", "pipeline": "default",
                                     "amount": "300", "hs_is_closed": "true"}}]})
    caller, ctx = look_up(hubspot)
    assert caller.open_deals == [] and len(ctx.sent) == 5


@pytest.mark.parametrize("status, body", [(200, {"results": []}), (404, {"status": "error", "message": "Not found"})])
def test_a_stage_the_pipelines_do_not_name_is_named_by_its_id(status, body, hubspot, mocked_http):
    portal(mocked_http)
    mocked_http.replace(responses.GET, f"{API}/crm/pipelines/2026-03/deals", status=status, json=body)
    caller, _ = look_up(hubspot)
    assert [d["stage"] for d in caller.open_deals] == ["contractsent", "1234567"]


def test_a_contact_without_deals_company_or_owner_costs_one_search(hubspot, mocked_http):
    portal(mocked_http, hits=[contact(firstname="Piet", num_associated_deals="0")])
    caller, ctx = look_up(hubspot)
    assert caller == Caller(record_ids={"contact": "501"}, name="Piet", company=None, owner=None, open_deals=[],
                            url="https://app-eu1.hubspot.com/contacts/146000000/record/0-1/501")
    assert paths(ctx) == [("POST", f"{OBJECTS}/contacts/search")]


def test_the_typed_company_stands_in_when_there_is_no_company_record(hubspot, mocked_http):
    portal(mocked_http, hits=[contact(company="Bakkerij Smit", num_associated_deals="0")])
    caller, _ = look_up(hubspot)
    assert caller.company == "Bakkerij Smit" and caller.record_ids == {"contact": "501"}


def test_a_company_deleted_since_is_left_out_of_the_record_ids(hubspot, mocked_http):
    portal(mocked_http, hits=[contact(associatedcompanyid="77", num_associated_deals="0")])
    mocked_http.replace(responses.GET, f"{API}{OBJECTS}/companies/77", status=404, json={
        "status": "error", "message": "Object not found.  objectId are usually numeric.", "category": "OBJECT_NOT_FOUND"})
    caller, _ = look_up(hubspot)
    assert caller.record_ids == {"contact": "501"} and caller.company is None


def test_nobody_with_the_number_is_none(hubspot, mocked_http):
    # a hit whose number is not the caller's (search is fuzzy) is not the caller
    portal(mocked_http, hits=[{"id": "9", "properties": {"phone": "+31 6 23456780", "firstname": "Other"}}])
    caller, ctx = look_up(hubspot)
    assert caller is None and len(ctx.sent) == 1


def test_the_most_recently_modified_of_several_contacts_is_the_caller(hubspot, mocked_http):
    newest = contact("601", firstname="Newest", num_associated_deals="0")
    older = contact("501", firstname="Older", num_associated_deals="0")
    portal(mocked_http, hits=[newest, older])  # HubSpot sorts by lastmodifieddate, descending, as asked
    caller, _ = look_up(hubspot)
    assert caller.record_ids == {"contact": "601"} and caller.name == "Newest"


def test_values_that_are_not_hubspot_ids_never_reach_a_path(hubspot, mocked_http):
    portal(mocked_http, hits=[contact(associatedcompanyid="77/../../owners", hubspot_owner_id="1;2",
                                      num_associated_deals="0")])
    caller, ctx = look_up(hubspot)
    assert paths(ctx) == [("POST", f"{OBJECTS}/contacts/search")]
    assert caller.record_ids == {"contact": "501"} and caller.owner is None


@pytest.mark.parametrize("version, objects, owners, associations, pipelines", [
    ("2026-09", "/crm/objects/2026-09", "/crm/owners/2026-09", "/crm/associations/2026-09", "/crm/pipelines/2026-09"),
    ("v3", "/crm/v3/objects", "/crm/v3/owners", "/crm/v4/associations", "/crm/v3/pipelines"),
])
def test_api_version_selects_the_lookup_paths(version, objects, owners, associations, pipelines):
    hubspot = make_destination("hubspot", {"token": TOKEN, "api_version": version}, name="crm")
    with responses.RequestsMock() as rsps:  # every one of the six is asked
        portal(rsps, objects=objects, owners=owners, associations=associations, pipelines=pipelines)
        caller, ctx = look_up(hubspot)
    assert caller.record_ids == {"contact": "501", "company": "77"} and len(caller.open_deals) == 2
    assert [p.split("?")[0] for _, p in paths(ctx)] == [
        f"{objects}/contacts/search", f"{objects}/companies/77", f"{owners}/4242",
        f"{associations}/contacts/deals/batch/read", f"{objects}/deals/batch/read", f"{pipelines}/deals"]


def test_a_failing_portal_is_retryable_and_a_missing_scope_permanent(hubspot, mocked_http):
    portal(mocked_http)
    mocked_http.replace(responses.POST, f"{API}/crm/associations/2026-03/contacts/deals/batch/read", status=503,
                        json={"status": "error", "message": "Service unavailable"})
    with pytest.raises(Retryable):
        look_up(hubspot)
    mocked_http.replace(responses.POST, f"{API}/crm/associations/2026-03/contacts/deals/batch/read", status=403,
                        json={"status": "error", "category": "MISSING_SCOPES",
                              "message": "This app hasn't been granted all required scopes to make this call.",
                              "errors": [{"message": "One or more of the following scopes are required.",
                                          "context": {"requiredGranularScopes": ["crm.objects.deals.read"]}}]})
    with pytest.raises(Permanent) as info:
        look_up(hubspot)
    assert "MISSING_SCOPES" in info.value.reason and "crm.objects.owners.read" in info.value.reason
    assert TOKEN not in info.value.reason


def test_the_destination_type_says_it_can_look_up(hubspot):
    assert type(hubspot).can_look_up()
