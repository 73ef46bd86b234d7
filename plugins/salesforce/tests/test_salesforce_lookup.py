"""``lookup_caller`` against an org mocked with ``responses``: the SOSL and SOQL field by field
(Salesforce's SOQL and SOSL reference), what the Caller holds, and the request count per kind of
caller."""
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from hub import Caller, Permanent, Retryable
from hub.testing import make_destination

LOGIN = "https://acme.my.salesforce.com"
INSTANCE = "https://acme.my.salesforce.com"
TOKEN_URL = f"{LOGIN}/services/oauth2/token"
DATA = f"{INSTANCE}/services/data/v67.0"
SEARCH, QUERY = f"{DATA}/search/", f"{DATA}/query/"
CC = {"login_url": LOGIN, "client_id": "3MVG9-consumer-key", "client_secret": "consumer-s3cret"}
NUMBER = "+31623456789"
CONTACT_ID, ACCOUNT_ID, LEAD_ID = "003000000000001AAA", "001000000000001AAA", "00Q000000000001AAA"

LOOKUP_SOSL = (
    "FIND {31623456789 OR 0623456789 OR 623456789} IN PHONE FIELDS RETURNING "
    "Contact(Id, AccountId, Name, Account.Name, Owner.Name, Phone, MobilePhone, HomePhone, OtherPhone, "
    "AssistantPhone, LastModifiedDate ORDER BY LastModifiedDate DESC LIMIT 20), "
    "Lead(Id, Name, Company, Owner.Name, Phone, MobilePhone, LastModifiedDate WHERE IsConverted = false "
    "ORDER BY LastModifiedDate DESC LIMIT 20)")
OPPORTUNITIES_SOQL = (f"SELECT Id, Name, StageName, Amount FROM Opportunity WHERE AccountId = '{ACCOUNT_ID}' "
                      "AND IsClosed = false ORDER BY CloseDate LIMIT 20")


def relation(sobject, record_id, **fields):
    """A relationship field as the REST API returns it: the related record with its attributes."""
    return {"attributes": {"type": sobject, "url": f"/services/data/v67.0/sobjects/{sobject}/{record_id}"}, **fields}


def contact_hit(account=ACCOUNT_ID, phone="+31 6 2345 6789"):
    return {"attributes": {"type": "Contact", "url": f"/services/data/v67.0/sobjects/Contact/{CONTACT_ID}"},
            "Id": CONTACT_ID, "AccountId": account, "Name": "Anna de Vries",
            "Account": relation("Account", account, Name="Acme BV") if account else None,
            "Owner": relation("User", "005000000000001AAA", Name="Jan Jansen"),
            "Phone": phone, "MobilePhone": None, "HomePhone": None, "OtherPhone": None, "AssistantPhone": None,
            "LastModifiedDate": "2026-02-01T10:00:00.000+0000"}


def lead_hit():
    return {"attributes": {"type": "Lead", "url": f"/services/data/v67.0/sobjects/Lead/{LEAD_ID}"},
            "Id": LEAD_ID, "Name": "Piet Smit", "Company": "Bakkerij Smit",
            "Owner": relation("Group", "00G000000000001AAA", Name="Inbound leads queue"),
            "Phone": None, "MobilePhone": "06-23456789", "LastModifiedDate": "2026-02-03T10:00:00.000+0000"}


OPPORTUNITIES = [
    {"attributes": {"type": "Opportunity", "url": "/services/data/v67.0/sobjects/Opportunity/006000000000001AAA"},
     "Id": "006000000000001AAA", "Name": "Renewal 2026", "StageName": "Negotiation/Review", "Amount": 1500.0},
    {"attributes": {"type": "Opportunity", "url": "/services/data/v67.0/sobjects/Opportunity/006000000000002AAA"},
     "Id": "006000000000002AAA", "Name": "Upsell", "StageName": "Prospecting", "Amount": None},
]


def org(rsps, hits, opportunities=OPPORTUNITIES):
    rsps.post(TOKEN_URL, json={"access_token": "tok", "instance_url": INSTANCE, "token_type": "Bearer"})
    rsps.get(SEARCH, json={"searchRecords": list(hits)})
    rsps.get(QUERY, json={"totalSize": len(opportunities), "done": True, "records": list(opportunities)})


def asked(rsps):
    """(method, path, q) of every request after the login."""
    out = []
    for call in rsps.calls[1:]:
        url = urlsplit(call.request.url)
        out.append((call.request.method, url.path, parse_qs(url.query).get("q", [None])[0]))
    return out


def look_up(destination, number=NUMBER):
    return destination.lookup_caller(number, destination.context(delivery_id="lookup"))


def test_a_contact_with_an_account_in_two_requests():
    destination = make_destination("salesforce", CC)
    with responses.RequestsMock() as rsps:
        org(rsps, [contact_hit()])
        caller = look_up(destination)
        assert asked(rsps) == [("GET", "/services/data/v67.0/search/", LOOKUP_SOSL),
                               ("GET", "/services/data/v67.0/query/", OPPORTUNITIES_SOQL)]
        assert all(c.request.headers["Authorization"] == "Bearer tok" for c in rsps.calls[1:])
    assert caller == Caller(
        record_ids={"contact": CONTACT_ID, "account": ACCOUNT_ID}, name="Anna de Vries", company="Acme BV",
        owner="Jan Jansen", open_deals=[{"name": "Renewal 2026", "stage": "Negotiation/Review", "amount": 1500.0},
                                        {"name": "Upsell", "stage": "Prospecting", "amount": None}],
        url=f"{INSTANCE}/lightning/r/Contact/{CONTACT_ID}/view")


def test_a_lead_in_one_request_with_its_company_and_queue_owner():
    destination = make_destination("salesforce", CC)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, [lead_hit()])
        caller = look_up(destination)
        assert [a[1] for a in asked(rsps)] == ["/services/data/v67.0/search/"]
    assert caller == Caller(record_ids={"lead": LEAD_ID}, name="Piet Smit", company="Bakkerij Smit",
                            owner="Inbound leads queue", open_deals=[],
                            url=f"{INSTANCE}/lightning/r/Lead/{LEAD_ID}/view")


def test_a_contact_without_an_account_has_no_opportunities_query():
    destination = make_destination("salesforce", CC)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, [contact_hit(account=None)])
        caller = look_up(destination)
        assert len(asked(rsps)) == 1
    assert caller.record_ids == {"contact": CONTACT_ID} and caller.company is None and caller.open_deals == []


def test_the_delivery_order_decides_between_a_contact_and_a_lead():
    """search_objects (default Contact, then Lead) picks the record, as the delivery does."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, [lead_hit(), contact_hit()])
        assert look_up(make_destination("salesforce", CC)).record_ids["contact"] == CONTACT_ID
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, [lead_hit(), contact_hit()])
        leads_first = make_destination("salesforce", {**CC, "search_objects": ["Lead", "Contact"]})
        assert look_up(leads_first).record_ids == {"lead": LEAD_ID}
        assert "RETURNING Lead(Id, Name, Company, Owner.Name" in asked(rsps)[0][2]


def test_a_hit_with_another_number_is_nobody():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, [contact_hit(phone="+31 6 2345 6780")])
        assert look_up(make_destination("salesforce", CC)) is None
        assert len(asked(rsps)) == 1


def test_an_account_id_that_is_not_a_salesforce_id_is_not_queried():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, [contact_hit(account="001' OR Name != '")])
        caller = look_up(make_destination("salesforce", CC))
        assert len(asked(rsps)) == 1
    assert caller.record_ids == {"contact": CONTACT_ID}


def test_errors_map_like_the_delivery():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, [contact_hit()])
        rsps.replace(responses.GET, QUERY, status=503, json=[{"errorCode": "SERVER_UNAVAILABLE",
                                                              "message": "Try again"}])
        with pytest.raises(Retryable):
            look_up(make_destination("salesforce", CC))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org(rsps, [contact_hit()])
        rsps.replace(responses.GET, QUERY, status=400, json=[{
            "errorCode": "INSUFFICIENT_ACCESS_OR_READONLY", "message": "insufficient access rights on object id"}])
        with pytest.raises(Permanent) as info:
            look_up(make_destination("salesforce", CC, name="sf"))
        assert "destination 'sf'" in info.value.reason and "consumer-s3cret" not in info.value.reason


def test_the_destination_type_says_it_can_look_up():
    assert make_destination("salesforce", CC).can_look_up()
