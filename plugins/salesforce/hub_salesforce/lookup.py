"""Who a caller is in Salesforce (``lookup_caller``): the Contact or Lead the delivery's phone
search finds, with its owner, its company and (a Contact's) open opportunities.

Requests: the delivery's SOSL search (``search`` bucket), reading ``Name``, ``Owner.Name`` and
``Account.Name`` (Contact) or ``Company`` (Lead) as relationship fields of the same search; then,
only for a Contact with an Account, one SOQL for the Account's open opportunities
(``IsClosed = false``). A Lead has none (opportunities belong to accounts): one request.
"""
from __future__ import annotations

from typing import Any

from hub import Caller

from .client import SalesforceClient
from .config import SALESFORCE_ID
from .matching import LOOKUP_FIELDS, build_sosl, choose, soql_string

#: open opportunities named in an answer, at most: the next to close first
MAX_OPPORTUNITIES = 20
RECORD_KINDS = {"Contact": "contact", "Lead": "lead"}


def related_name(record: dict[str, Any], relation: str) -> str | None:
    """``record["Owner"]["Name"]``: a relationship field as the REST API returns it (null when unset)."""
    related = record.get(relation)
    return related.get("Name") or None if isinstance(related, dict) else None


def open_opportunities_soql(account_id: str) -> str:
    return (f"SELECT Id, Name, StageName, Amount FROM Opportunity WHERE AccountId = {soql_string(account_id)} "
            f"AND IsClosed = false ORDER BY CloseDate LIMIT {MAX_OPPORTUNITIES}")


def look_up(destination, number: str, ctx) -> Caller | None:
    client = SalesforceClient(destination, destination.tokens, ctx)
    objects = destination.config["search_objects"]
    match = choose(client.search(build_sosl(number, objects, LOOKUP_FIELDS)), number, objects,
                   destination.settings.default_region)
    if match is None:
        return None
    record = match.record
    record_ids = {RECORD_KINDS[match.sobject]: match.id}
    deals: list[dict[str, Any]] = []
    if match.sobject == "Contact":
        company = related_name(record, "Account")
        account_id = match.account_id
        if account_id and SALESFORCE_ID.match(account_id):
            record_ids["account"] = account_id
            opportunities = client.query(open_opportunities_soql(account_id), what="the open opportunities")
            deals = [{"name": o.get("Name"), "stage": o.get("StageName"), "amount": o.get("Amount")}
                     for o in opportunities]
    else:
        company = record.get("Company") or None
    return Caller(record_ids=record_ids, name=record.get("Name") or None, company=company,
                  owner=related_name(record, "Owner"), open_deals=deals,
                  url=f"{client.token.instance_url}/lightning/r/{match.sobject}/{match.id}/view")
