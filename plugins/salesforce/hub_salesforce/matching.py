"""Finding the Contact or Lead behind a caller's number.

Salesforce phone fields keep what a person typed (``+31 6 2345 6789``, ``06-23456789``,
``0031623456789``). SOSL ``IN PHONE FIELDS`` is asked for the digit forms a number is
usually typed in, and every candidate it returns is confirmed here by parsing its phone
fields with ``phonenumbers`` and comparing E.164 forms: the search index is fuzzy and
lags behind writes, so a search hit alone is never trusted.

When several records carry the number, the rule is: the configured object order first
(default Contact before Lead), then the most recently modified record.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field as dataclass_field

import phonenumbers

import hub

PHONE_FIELDS = {
    "Contact": ["Phone", "MobilePhone", "HomePhone", "OtherPhone", "AssistantPhone"],
    "Lead": ["Phone", "MobilePhone"],
}
#: besides Id and the phone fields: what the flow uses (a Contact's Account, for opportunities)
EXTRA_FIELDS = {"Contact": ["AccountId"], "Lead": []}
#: what ``lookup_caller`` reads from the same search (relationship fields as in SOQL: the SOSL
#: reference, RETURNING FieldSpec); a Lead's owner may be a queue, whose Name the Owner relation has too
LOOKUP_FIELDS = {"Contact": ["AccountId", "Name", "Account.Name", "Owner.Name"],
                 "Lead": ["Name", "Company", "Owner.Name"]}
FILTERS = {"Lead": "IsConverted = false"}
LIMIT = 20
# SOSL reserved characters, escaped with a backslash inside FIND {...}
_SOSL_RESERVED = re.compile(r"""([?&|!{}\[\]()^~*:\\"'+\-])""")


@dataclass(frozen=True)
class Match:
    id: str
    sobject: str  # Contact | Lead
    account_id: str | None
    field: str  # the phone field that matched
    candidates: int  # how many records carried the number
    record: dict = dataclass_field(default_factory=dict, compare=False, repr=False)  # the search hit itself

    def describe(self) -> str:
        extra = f", chosen among {self.candidates} records with this number" if self.candidates > 1 else ""
        return f"matched by {self.field}{extra}"


def escape_sosl(term: str) -> str:
    """Backslash the characters SOSL reserves in a search term."""
    return _SOSL_RESERVED.sub(r"\\\1", term)


def soql_string(value: str) -> str:
    """A SOQL string literal: quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def search_terms(e164: str) -> list[str]:
    """The digit forms a number is typed in: international, national with trunk prefix, bare national."""
    parsed = phonenumbers.parse(e164, None)
    national = str(parsed.national_number)
    with_trunk = re.sub(r"\D", "", phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))
    terms = [f"{parsed.country_code}{national}", with_trunk, national]
    return list(dict.fromkeys(t for t in terms if len(t) >= 4))


def build_sosl(e164: str, objects: list[str], fields: dict[str, list[str]] = EXTRA_FIELDS) -> str:
    """The phone search; ``fields`` are read from each hit besides Id, its phone fields and
    LastModifiedDate (which confirm and order the hits)."""
    terms = " OR ".join(escape_sosl(t) for t in search_terms(e164))
    returning = []
    for sobject in objects:
        columns = ", ".join(["Id", *fields[sobject], *PHONE_FIELDS[sobject], "LastModifiedDate"])
        where = f" WHERE {FILTERS[sobject]}" if sobject in FILTERS else ""
        returning.append(f"{sobject}({columns}{where} ORDER BY LastModifiedDate DESC LIMIT {LIMIT})")
    return f"FIND {{{terms}}} IN PHONE FIELDS RETURNING {', '.join(returning)}"


def confirmed(records: list[dict], e164: str, objects: list[str],
              region: str | None) -> list[tuple[dict, str]]:
    """Every record one of whose phone fields is the caller's number, with that field, by the
    documented order (object order, then the most recently modified first)."""
    found: list[tuple[int, str, dict, str]] = []
    for record in records:
        sobject = (record.get("attributes") or {}).get("type")
        if sobject not in objects or not record.get("Id"):
            continue
        for field in PHONE_FIELDS[sobject]:
            if hub.to_e164(record.get(field), region) == e164:
                found.append((objects.index(sobject), record.get("LastModifiedDate") or "", record, field))
                break
    # object order ascending, then LastModifiedDate descending (ISO 8601 strings sort as times)
    found.sort(key=lambda c: c[1], reverse=True)
    found.sort(key=lambda c: c[0])
    return [(record, field) for _, _, record, field in found]


def choose(records: list[dict], e164: str, objects: list[str], region: str | None) -> Match | None:
    """The record whose phone field is the caller's number, by the documented order; None if none is."""
    found = confirmed(records, e164, objects, region)
    if not found:
        return None
    record, field = found[0]
    return Match(record["Id"], record["attributes"]["type"], record.get("AccountId"), field, len(found), record)
