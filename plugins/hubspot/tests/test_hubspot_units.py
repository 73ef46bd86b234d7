"""Phone matching, value conversion, rate-limit parsing and configuration of the hubspot type."""
from __future__ import annotations

import pytest
import requests

from hub_hubspot.client import rate_limit_wait
from hub_hubspot.phone import confirmed, contact_search_body, search_values, to_e164
from hub_hubspot.properties import ConversionError, PropertyCache, convert, prepare

from hub.testing import make_destination


# --- phone ----------------------------------------------------------------------------

@pytest.mark.parametrize("stored", [
    "+31623456789", "+31 6 23456789", "+31 (0)6 2345 6789", "06-23456789", "(06) 23 45 67 89",
    "0031623456789", "0031 6 23 45 67 89", "623456789", "06 2345 6789",
])
def test_formats_a_dutch_portal_holds_are_confirmed(stored):
    hit = {"id": "51", "properties": {"phone": stored}}
    assert confirmed([hit], "+31623456789", "NL") == [hit]


@pytest.mark.parametrize("stored", ["06-12345678", "+32 623456789", "+1 212 555 0100", "", None, "call me"])
def test_other_numbers_are_rejected(stored):
    assert confirmed([{"id": "9", "properties": {"phone": stored}}], "+31623456789", "NL") == []


def test_mobile_and_calculated_properties_confirm_too():
    hits = [{"id": "1", "properties": {"mobilephone": "06 23 45 67 89"}},
            {"id": "2", "properties": {"hs_calculated_phone_number": "+31623456789"}},
            {"id": "3", "properties": {"hs_calculated_mobile_number": "31623456789"}}]
    assert [h["id"] for h in confirmed(hits, "+31623456789", "NL")] == ["1", "2", "3"]


def test_without_a_region_only_international_forms_confirm():
    hits = [{"id": "1", "properties": {"phone": "06-23456789"}},
            {"id": "2", "properties": {"phone": "+31 6 23456789"}}]
    assert [h["id"] for h in confirmed(hits, "+31623456789", None)] == ["2"]


def test_us_number_has_no_trunk_prefix_so_one_value_is_searched():
    assert search_values("+12125550100") == ["2125550100"]
    body = contact_search_body("+12125550100")
    assert body["filterGroups"] == [
        {"filters": [{"propertyName": "hs_searchable_calculated_phone_number", "operator": "EQ", "value": "2125550100"}]},
        {"filters": [{"propertyName": "hs_searchable_calculated_mobile_number", "operator": "EQ", "value": "2125550100"}]}]


def test_french_and_german_numbers_search_without_country_code():
    assert search_values("+33655555555") == ["655555555", "0655555555"]
    assert search_values("+4915123456789") == ["15123456789", "015123456789"]
    assert len(contact_search_body("+33655555555")["filterGroups"]) <= 5  # HubSpot's maximum


def test_to_e164():
    assert to_e164("(020) 123 4567", "NL") == "+31201234567"
    assert to_e164("12", "NL") is None


# --- property values ------------------------------------------------------------------

NUMBER = {"name": "score", "type": "number"}
ENUM = {"name": "intent", "type": "enumeration", "fieldType": "select",
        "options": [{"label": "Sales lead", "value": "sales"}, {"label": "Complaint", "value": "complaint"}]}
CHECKBOX = {"name": "topics", "type": "enumeration", "fieldType": "checkbox",
            "options": [{"label": "Billing", "value": "billing"}, {"label": "Refund", "value": "refund"}]}


@pytest.mark.parametrize("value, definition, expected", [
    (2, NUMBER, "2"), (2.5, NUMBER, "2.5"), ("7", NUMBER, "7"), (3.0, NUMBER, "3"),
    ("Complaint", ENUM, "complaint"), ("sales lead", ENUM, "sales"),
    (["Billing", "refund"], CHECKBOX, "billing;refund"),
    (True, {"type": "bool"}, "true"), ("no", {"type": "bool"}, "false"),
    ("2026-03-02T09:14:07.512Z", {"type": "date"}, "2026-03-02"),
    ("2026-03-02T10:14:07+01:00", {"type": "datetime"}, "2026-03-02T09:14:07.000Z"),
    ({"a": 1}, {"type": "string"}, '{"a": 1}'), (False, {"type": "string"}, "false"),
])
def test_values_are_converted_to_hubspot_forms(value, definition, expected):
    assert convert(value, definition) == expected


@pytest.mark.parametrize("value, definition", [
    (True, NUMBER), ("many", NUMBER), ("refund", ENUM), (["sales", "complaint"], ENUM),
    ("maybe", {"type": "bool"}), ("yesterday", {"type": "date"}), (5, {"type": "datetime"}),
])
def test_values_that_do_not_fit_raise(value, definition):
    with pytest.raises(ConversionError):
        convert(value, definition)


def test_prepare_keeps_good_values_and_names_each_problem():
    accepted, problems = prepare({"score": "x", "intent": "sales", "scroe": 1}, {"score": NUMBER, "intent": ENUM})
    assert accepted == {"intent": "sales"}
    assert problems == ["properties.score: not sent, 'x' is not a number (HubSpot type number)",
                        "properties.scroe: the portal has no contact property 'scroe'; did you mean 'score'?"]


def test_property_cache_refetches_after_its_ttl():
    now = [0.0]
    fetches = []
    cache = PropertyCache(ttl=60, clock=lambda: now[0])
    fetch = lambda: fetches.append(1) or [NUMBER]  # noqa: E731
    assert cache.get(fetch) == {"score": NUMBER}
    cache.get(fetch)
    now[0] = 61
    cache.get(fetch)
    assert len(fetches) == 2


# --- 429 parsing ----------------------------------------------------------------------

def response(status, headers=None, body=b"{}"):
    r = requests.Response()
    r.status_code = status
    r.headers.update(headers or {})
    r._content = body
    return r


def test_rate_limit_wait_prefers_retry_after_over_interval():
    r = response(429, {"Retry-After": "3", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"})
    assert rate_limit_wait(r) == (3.0, "Retry-After")


def test_rate_limit_wait_with_a_body_that_is_not_json():
    assert rate_limit_wait(response(429, {}, b"slow down")) == (1.0, "SEARCH")


# --- configuration --------------------------------------------------------------------

def test_defaults():
    dest = make_destination("hubspot", {"token": "t0ken-123"})
    config = dest.config
    assert config["base_url"] == "https://api.hubapi.com" and config["create_contacts"] is True
    assert config["follow_up"]["when"].expression == "analysis.follow_up_needed"
    assert config["follow_up"]["due_in_days"] == 1 and config["deal"]["when"] is None
    assert dest.type == "hubspot" and dest.default_when is None


@pytest.mark.parametrize("options, message", [
    ({}, "destinations.hubspot.token"),
    ({"token": "t", "deal": {"when": "analysis.intent == 'sales'"}}, "destinations.hubspot.deal.stage"),
    ({"token": "t", "owner_id": "jan"}, "destinations.hubspot.owner_id: must be a HubSpot id"),
    ({"token": "t", "follow_up": {"priority": {"URGENT": "analysis.sentiment <= 1"}}}, "unknown priority URGENT"),
    ({"token": "t", "follow_up": {"priority": {"NONE": "analysis.resolved"}}}, "unknown priority NONE"),
    ({"token": "t", "follow_up": {"default_priority": "NONE"}}, "destinations.hubspot.follow_up.default_priority"),
    ({"token": "t", "follow_up": {"due_in": 2}}, "destinations.hubspot.follow_up.due_in"),
    ({"token": "t", "properties": {"x": "analysis.[["}}, "destinations.hubspot.properties"),
    ({"token": "t", "call": {"title": "{% if %}"}}, "destinations.hubspot.call.title"),
    ({"token": "t", "default_region": "nl"}, "two-letter region"),
])
def test_config_errors_name_the_key(options, message):
    with pytest.raises(Exception) as info:
        make_destination("hubspot", options)
    assert message in str(info.value)


def test_plugin_is_registered_through_the_entry_point():
    from hub_hubspot import HubSpotDestination

    # make_destination("hubspot") looks the type up in the registry the entry points fill
    assert type(make_destination("hubspot", {"token": "t0ken-123"})) is HubSpotDestination


def test_the_readme_examples_are_valid_configuration(monkeypatch):
    import re
    import tomllib
    from pathlib import Path

    text = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    for block in blocks:
        for name, table in tomllib.loads(block)["destinations"].items():
            options = {k: v for k, v in table.items() if k not in ("type", "when", "events", "enabled")}
            options["token"] = "pat-eu1-readme"
            dest = make_destination("hubspot", options, name=name)
            assert dest.name == name
