"""Who a caller is in HubSpot (``lookup_caller``): the contact the delivery's phone search finds,
its primary company, its owner and its open deals.

Requests, at most six, each only when the one before says it can answer something:

1. ``POST .../contacts/search``: the delivery's phone search, also reading the contact's name, its
   ``company`` text, ``associatedcompanyid`` (the primary company), ``hubspot_owner_id`` and
   ``num_associated_deals``;
2. ``GET .../companies/{id}?properties=name``: only with a primary company;
3. ``GET /crm/owners/{version}/{id}``: only with an owner, and only once per owner and 15 minutes
   (owner names are cached per destination);
4. ``POST /crm/associations/{version}/contacts/deals/batch/read``: only when the contact has deals;
5. ``POST .../deals/batch/read`` (``dealname``, ``dealstage``, ``pipeline``, ``amount``,
   ``hs_is_closed``): the deals, of which the open ones (``hs_is_closed`` not ``"true"``) are returned;
6. ``GET /crm/pipelines/{version}/deals``: only with open deals, once per 15 minutes, for the stage
   labels (``dealstage`` holds the stage's internal id: ``appointmentscheduled``, ``1234567``).

A known caller costs four requests once the owner and the stages are cached; the search goes
through the ``search`` rate-limit bucket (4/s), the rest through ``default``.
"""
from __future__ import annotations

from typing import Any

from hub import Caller

from .client import HubSpotApi, is_record_id
from .phone import confirmed, contact_search_body

LOOKUP_PROPERTIES = ("company", "associatedcompanyid", "hubspot_owner_id", "num_associated_deals")
DEAL_PROPERTIES = ["dealname", "dealstage", "pipeline", "amount", "hs_is_closed"]
#: open deals named in an answer, at most (the first page of associations holds up to 500)
MAX_DEALS = 20
#: owner names and deal stage labels change rarely; a lookup is on the platform's clock
LOOKUP_CACHE_SECONDS = 900.0


def owner_name(owner: dict | None) -> str | None:
    """``firstName lastName`` of an owners API answer, else its email; None for no owner."""
    if not isinstance(owner, dict):
        return None
    name = " ".join(str(owner[k]).strip() for k in ("firstName", "lastName") if owner.get(k))
    return name or owner.get("email") or None


def person_name(props: dict[str, Any]) -> str | None:
    name = " ".join(str(props[k]).strip() for k in ("firstname", "lastname") if props.get(k))
    return name or None


def is_open(deal: dict) -> bool:
    """``hs_is_closed`` is HubSpot's calculated flag: true in any closed-won or closed-lost stage."""
    return str((deal.get("properties") or {}).get("hs_is_closed") or "").lower() != "true"


def stage_labels(pipelines: list[dict]) -> dict[tuple[str, str], str]:
    """(pipeline id, stage id) -> the stage's label, from the pipelines API's answer."""
    return {(str(p.get("id")), str(s.get("id"))): s["label"] for p in pipelines if isinstance(p, dict)
            for s in p.get("stages") or [] if isinstance(s, dict) and s.get("label")}


def deal_summary(deal: dict, labels: dict[tuple[str, str], str]) -> dict[str, Any]:
    """``{"name", "stage", "amount"}``: the stage by its label (its id when the label is unknown),
    the amount as HubSpot gives it (a string of digits, or None)."""
    props = deal.get("properties") or {}
    stage = props.get("dealstage")
    return {"name": props.get("dealname"), "stage": labels.get((str(props.get("pipeline")), str(stage)), stage),
            "amount": props.get("amount")}


def look_up(destination, number: str, ctx) -> Caller | None:
    api = HubSpotApi(destination, ctx)
    region = destination.config["default_region"] or destination.settings.default_region
    hits = confirmed(api.search("contacts", contact_search_body(number, LOOKUP_PROPERTIES)), number, region)
    if not hits:
        return None
    contact = hits[0]  # the most recently modified, as the delivery chooses
    contact_id = str(contact["id"])
    props = contact.get("properties") or {}
    record_ids = {"contact": contact_id}

    company = props.get("company") or None
    company_id = props.get("associatedcompanyid")
    if is_record_id(company_id):
        found = api.read("companies", company_id, ["name"])
        if found is not None:
            record_ids["company"] = company_id
            company = (found.get("properties") or {}).get("name") or company

    owner_id = props.get("hubspot_owner_id")
    cache = destination.lookup_cache
    owner = (cache.get(f"owner {owner_id}", lambda: owner_name(api.owner(owner_id)))
             if is_record_id(owner_id) else None)

    deals: list[dict[str, Any]] = []
    if props.get("num_associated_deals") not in ("0", 0):
        deal_ids = [i for i in api.associated_ids("contacts", contact_id, "deals") if is_record_id(i)]
        if deal_ids:
            read = api.batch_read("deals", deal_ids[:100], DEAL_PROPERTIES)  # 100: a batch read's limit
            open_deals = [deal for deal in read if is_open(deal)][:MAX_DEALS]
            if open_deals:
                labels = cache.get("deal stages", lambda: stage_labels(api.pipelines("deals")))
                deals = [deal_summary(deal, labels) for deal in open_deals]

    return Caller(record_ids=record_ids, name=person_name(props), company=company, owner=owner,
                  open_deals=deals, url=contact.get("url") or None)
