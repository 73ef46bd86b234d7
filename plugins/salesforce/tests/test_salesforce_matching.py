"""Phone lookup: the SOSL sent, and which candidate is trusted."""
from urllib.parse import parse_qs, urlsplit

import responses
from hub.testing import deliver, make_destination

from hub import to_e164
from hub_salesforce.matching import build_sosl, choose, escape_sosl, search_terms

LOGIN = "https://acme.my.salesforce.com"


def contact(id_, modified="2026-01-01T00:00:00.000+0000", **phones):
    return {"attributes": {"type": "Contact", "url": f"/services/data/v67.0/sobjects/Contact/{id_}"},
            "Id": id_, "Name": "Jan Jansen", "AccountId": "001000000000001AAA", "LastModifiedDate": modified,
            **phones}


def lead(id_, modified="2026-01-01T00:00:00.000+0000", **phones):
    return {"attributes": {"type": "Lead", "url": f"/services/data/v67.0/sobjects/Lead/{id_}"},
            "Id": id_, "Name": "Piet Pietersen", "Company": "Acme", "LastModifiedDate": modified, **phones}


def test_search_terms_cover_international_national_and_bare_digits():
    assert search_terms("+31623456789") == ["31623456789", "0623456789", "623456789"]
    # a US number has no trunk prefix: the national form and the bare number are the same digits
    assert search_terms("+14155552671") == ["14155552671", "4155552671"]


def test_escape_sosl_backslashes_every_reserved_character():
    assert escape_sosl("a+b-c") == r"a\+b\-c"
    assert escape_sosl('{x}"*?') == r'\{x\}\"\*\?'
    assert escape_sosl("it's (1) [2] ^~:&|!\\") == r"it\'s \(1\) \[2\] \^\~\:\&\|\!\\"
    assert escape_sosl("0623456789") == "0623456789"


def test_build_sosl_searches_phone_fields_of_the_configured_objects_in_order():
    sosl = build_sosl("+31623456789", ["Lead", "Contact"])
    assert sosl == (
        "FIND {31623456789 OR 0623456789 OR 623456789} IN PHONE FIELDS RETURNING "
        "Lead(Id, Phone, MobilePhone, LastModifiedDate WHERE IsConverted = false "
        "ORDER BY LastModifiedDate DESC LIMIT 20), "
        "Contact(Id, AccountId, Phone, MobilePhone, HomePhone, OtherPhone, AssistantPhone, LastModifiedDate "
        "ORDER BY LastModifiedDate DESC LIMIT 20)")


def test_to_e164_reads_the_formats_people_type():
    for typed in ("+31 6 23456789", "06-23456789", "(06) 23 45 67 89", "0031623456789", "+31623456789"):
        assert to_e164(typed, "NL") == "+31623456789", typed
    assert to_e164("", "NL") is None
    assert to_e164("call reception", "NL") is None
    assert to_e164(None, "NL") is None


def test_choose_confirms_candidates_by_e164_and_skips_near_misses():
    records = [contact("003A", Phone="+31 6 23456780"),  # one digit off: SOSL is fuzzy, we are not
               lead("00QB", MobilePhone="06-23456789")]
    match = choose(records, "+31623456789", ["Contact", "Lead"], "NL")
    assert (match.id, match.sobject, match.field, match.candidates) == ("00QB", "Lead", "MobilePhone", 1)
    assert match.account_id is None


def test_choose_prefers_object_order_then_most_recently_modified():
    records = [lead("00QNEW", "2026-03-01T00:00:00.000+0000", Phone="0623456789"),
               contact("003OLD", "2025-01-01T00:00:00.000+0000", HomePhone="+31623456789"),
               contact("003NEW", "2026-02-01T00:00:00.000+0000", Phone="(06) 23 45 67 89")]
    match = choose(records, "+31623456789", ["Contact", "Lead"], "NL")
    assert (match.id, match.field, match.candidates) == ("003NEW", "Phone", 3)
    assert match.describe() == "matched by Phone, chosen among 3 records with this number"
    assert choose(records, "+31623456789", ["Lead", "Contact"], "NL").id == "00QNEW"


def test_choose_ignores_objects_not_configured_and_records_without_the_number():
    records = [lead("00QB", Phone="0623456789"), contact("003C", Phone=None, MobilePhone="")]
    assert choose(records, "+31623456789", ["Contact"], "NL") is None
    assert choose([], "+31623456789", ["Contact", "Lead"], "NL") is None


def test_delivery_sends_the_sosl_url_encoded_to_the_search_resource(sample_report):
    destination = make_destination("salesforce", {"login_url": LOGIN, "client_id": "cid", "client_secret": "s3cret-value"})
    with responses.RequestsMock() as rsps:
        rsps.post(f"{LOGIN}/services/oauth2/token", json={"access_token": "tok", "instance_url": LOGIN})
        rsps.get(f"{LOGIN}/services/data/v67.0/search/",
                 json={"searchRecords": [contact("003000000000001AAA", MobilePhone="+31 6 2345 6789")]})
        rsps.post(f"{LOGIN}/services/data/v67.0/composite", json={"compositeResponse": [
            {"referenceId": "callTask", "httpStatusCode": 201, "httpHeaders": {},
             "body": {"id": "00T000000000001AAA", "success": True, "errors": []}}]})
        result, ctx = deliver(destination, sample_report)
        search = rsps.calls[1].request
    query = parse_qs(urlsplit(search.url).query)
    assert query["q"] == [build_sosl("+31623456789", ["Contact", "Lead"])]
    assert search.headers["Authorization"] == "Bearer tok"
    assert ctx.state["who"] == {"id": "003000000000001AAA", "sobject": "Contact", "account_id": "001000000000001AAA",
                                "how": "matched by MobilePhone"}
    assert result.message == ("call task 00T000000000001AAA on Contact 003000000000001AAA "
                              "(matched by MobilePhone)")
