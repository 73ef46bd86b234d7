"""Finding a contact by the caller's number, whatever format the portal holds it in.

HubSpot's search guide: phone numbers are searched through the calculated properties
``hs_searchable_calculated_phone_number`` / ``..._mobile_number``, which hold the number
without its country code (``+31623456789`` -> ``623456789``). How HubSpot stores a number
typed without a country is not documented, so the national form with its trunk prefix
(``0623456789``) is asked too, and every hit is confirmed here by comparing E.164 forms
(``phonenumbers``, the configured default region for numbers typed without one).
"""
from __future__ import annotations

import re
from typing import Any

import phonenumbers

import hub

SEARCHABLE = ("hs_searchable_calculated_phone_number", "hs_searchable_calculated_mobile_number")
# Properties read back from each hit to confirm it; the calculated ones are international.
NUMBER_PROPERTIES = ("phone", "mobilephone", "hs_calculated_phone_number", "hs_calculated_mobile_number")
RETURNED = (*NUMBER_PROPERTIES, "firstname", "lastname", "email", "lastmodifieddate")
SEARCH_LIMIT = 10


def search_values(e164: str) -> list[str]:
    """The digit strings HubSpot may hold in the searchable properties for ``e164``."""
    parsed = phonenumbers.parse(e164, None)
    nsn = phonenumbers.national_significant_number(parsed)
    national = re.sub(r"\D", "", phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))
    return [nsn] if national in ("", nsn) else [nsn, national]


def contact_search_body(e164: str, extra_properties: tuple[str, ...] = ()) -> dict[str, Any]:
    """One search request: each searchable property x each value, ORed (at most 4 of 5 groups);
    ``extra_properties`` are read back from each hit besides the ones that confirm it."""
    groups = [{"filters": [{"propertyName": prop, "operator": "EQ", "value": value}]}
              for value in search_values(e164) for prop in SEARCHABLE]
    return {"filterGroups": groups, "properties": [*RETURNED, *extra_properties],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
            "limit": SEARCH_LIMIT}


def to_e164(value: Any, region: str | None, *, international: bool = False) -> str | None:
    """A stored number as E.164, or None; ``international`` values lack only their leading +."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if international and not text.startswith("+") and text[:1].isdigit():
        text = "+" + text
    return hub.to_e164(text, region)


def matches(contact: dict, e164: str, region: str | None) -> bool:
    """Does one of the contact's numbers, normalized, equal the caller's E.164 number?"""
    props = contact.get("properties") or {}
    for name in NUMBER_PROPERTIES:
        if to_e164(props.get(name), region, international=name.startswith("hs_calculated")) == e164:
            return True
    return False


def confirmed(results: list[dict], e164: str, region: str | None) -> list[dict]:
    """The hits whose number really is the caller's, most recently modified first."""
    return [contact for contact in results if matches(contact, e164, region)]
