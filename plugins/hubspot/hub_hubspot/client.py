"""A thin layer over HubSpot's CRM objects, search and properties endpoints, sending through the
delivery context.

Every request goes through ``ctx.send`` (rate limiter, timeout, recording, dry run); this
module only knows paths (per API version), bodies and HubSpot's own error shapes (429 rate-limit
headers, 409 "Existing ID", ``category`` and ``correlationId``).
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from hub import Permanent, Retryable, raise_for_response, retry_after_seconds

DEFAULT_BASE_URL = "https://api.hubapi.com"
#: date-based versions (``/crm/objects/2026-03/...``) and the numbered v3 paths they replace
API_VERSIONS = ("2026-03", "2026-09", "v3")
DEFAULT_API_VERSION = "2026-03"

# HubSpot-defined association type ids (v4, category HUBSPOT_DEFINED), from -> to.
ASSOCIATION_TYPES: dict[tuple[str, str], int] = {
    ("calls", "contacts"): 194,
    ("calls", "companies"): 182,
    ("calls", "deals"): 206,
    ("tasks", "contacts"): 204,
    ("tasks", "companies"): 192,
    ("tasks", "deals"): 216,
    ("deals", "contacts"): 3,
    ("deals", "companies"): 5,
}

# Seconds to wait after a 429 when HubSpot sends no usable header.
SEARCH_BACKOFF = 1.0
DAILY_BACKOFF = 3600.0
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")


_RECORD_ID = re.compile(r"[1-9][0-9]{0,19}")


def is_record_id(value: Any) -> bool:
    """Digits only, as HubSpot's record ids are (a value that may go into a request's path)."""
    return isinstance(value, str) and _RECORD_ID.fullmatch(value) is not None


def record_id(key: str, value: Any) -> str:
    """A HubSpot record id (digits) taken from a report, or ``Permanent`` naming the setting.

    Such a value is caller- or platform-supplied: ``51/../../deals/999?archived=true#`` must
    never become part of a request's path.
    """
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not _RECORD_ID.fullmatch(text):
        shown = repr(value)[:60]
        raise Permanent(f"{key}: the report gave {shown}, which is not a HubSpot record id (digits only); "
                        f"check the expression in the destination's {key} setting")
    return text


def association(from_type: str, to_type: str, to_id: str) -> dict[str, Any]:
    """One entry of a create request's ``associations`` array."""
    return {"to": {"id": str(to_id)},
            "types": [{"associationCategory": "HUBSPOT_DEFINED",
                       "associationTypeId": ASSOCIATION_TYPES[(from_type, to_type)]}]}


def api_path(version: str, api: str, object_type: str, suffix: str = "") -> str:
    """``/crm/objects/2026-03/calls/search`` (dated) or ``/crm/v3/objects/calls/search`` (v3).

    The associations batch read has no v3 form with association type ids: with ``v3`` it takes the
    numbered v4 path (``/crm/v4/associations/...``), whose body and answer the dated versions keep.
    """
    if version == "v3":
        return f"/crm/{'v4' if api == 'associations' else 'v3'}/{api}/{object_type}{suffix}"
    return f"/crm/{api}/{version}/{object_type}{suffix}"


def error_detail(response) -> str | None:
    """HubSpot's message with the ``category`` and ``correlationId`` its support asks for.

    Every field of HubSpot's error body is optional ("treat all as optional in any error
    parsing"); None when the body is not such an object.
    """
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not any(k in body for k in ("message", "category", "correlationId")):
        return None
    parts = [str(body.get("message") or "").strip()[:400]]
    parts += [str(e["message"])[:200] for e in (body.get("errors") or [])[:3]
              if isinstance(e, dict) and e.get("message") and e["message"] != body.get("message")]
    ids = [f"{k} {body[k]}" for k in ("category", "correlationId") if body.get(k)]
    return "; ".join(p for p in parts if p) + (f" ({', '.join(ids)})" if ids else "")


def rate_limit_wait(response) -> tuple[float, str]:
    """How long to wait after a 429, and which HubSpot limit was hit.

    ``Retry-After`` wins when present. Otherwise the body's ``policyName`` and the
    ``X-HubSpot-RateLimit-*`` headers say whether the daily or the rolling (10 s)
    window ran out; the search endpoints send neither, so a short pause is used.
    """
    headers = response.headers
    policy = ""
    try:
        body = response.json()
        policy = str(body.get("policyName") or "") if isinstance(body, dict) else ""
    except ValueError:
        pass
    explicit = retry_after_seconds(headers.get("Retry-After"))
    if explicit is not None:
        return explicit, policy or "Retry-After"
    if policy == "DAILY" or headers.get("X-HubSpot-RateLimit-Daily-Remaining") == "0":
        return DAILY_BACKOFF, "DAILY"
    interval = headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
    if interval and interval.isdigit():
        return int(interval) / 1000.0, policy or "TEN_SECONDLY_ROLLING"
    return SEARCH_BACKOFF, policy or "SEARCH"


class HubSpotApi:
    """CRM objects, search and properties for one delivery attempt."""

    def __init__(self, destination, ctx):
        self.destination = destination
        self.ctx = ctx
        self.base_url = destination.config["base_url"].rstrip("/")
        self.version = destination.config["api_version"]
        self.headers = {"Authorization": f"Bearer {destination.config['token']}",
                        "Content-Type": "application/json"}

    def _send(self, method: str, path: str, *, bucket: str | None = None, fake: Any = None,
              json: Any = None, params: dict | None = None, check: bool = True):
        response = self.ctx.send(method, f"{self.base_url}{path}", bucket=bucket, check=False,
                                 dry_run_response=fake, headers=self.headers, json=json, params=params)
        if check:
            self.check(response)
        return response

    def check(self, response) -> None:
        name = self.destination.name
        detail = error_detail(response)
        if response.status_code == 429:
            wait, policy = rate_limit_wait(response)
            raise Retryable(f"destination {name!r}: HubSpot rate limit reached ({policy}); "
                            f"retrying in {wait:g}s" + (f": {detail}" if detail else ""),
                            retry_after=wait, http_status=429)
        raise_for_response(response, name, auth_hint=self.destination.auth_hint, detail=detail)

    def search(self, object_type: str, body: dict) -> list[dict]:
        """POST .../objects/{type}/search through the search limiter; the results.

        HubSpot's reference marks ``after``, ``filterGroups``, ``limit``, ``properties`` and
        ``sorts`` required: the first page (``after`` "0") and no sort order unless given.
        """
        body = {"after": "0", "sorts": [], **body}
        response = self._send("POST", api_path(self.version, "objects", object_type, "/search"), bucket="search",
                              json=body, fake={"total": 0, "results": []})
        return response.json().get("results") or []

    def create(self, object_type: str, properties: dict, associations: list | None = None) -> str:
        """POST .../objects/{type}; the new record's id."""
        body = {"properties": properties, "associations": associations or []}  # both required (reference)
        fake = {"id": f"dry-run-{object_type.rstrip('s')}", "properties": properties}
        response = self._send("POST", api_path(self.version, "objects", object_type), fake=fake, json=body,
                              check=False)
        if response.status_code == 409 and object_type == "contacts":
            existing = _EXISTING_ID.search(response.text or "")
            if existing:  # a unique property (email) already belongs to a contact: use it
                return existing.group(1)
        self.check(response)
        return str(response.json()["id"])

    def update(self, object_type: str, object_id: str, properties: dict) -> None:
        """PATCH .../objects/{type}/{id}."""
        self._send("PATCH", api_path(self.version, "objects", object_type, f"/{quote(str(object_id), safe='')}"),
                   json={"properties": properties}, fake={"id": object_id, "properties": properties})

    def read(self, object_type: str, object_id: str, properties: list[str]) -> dict | None:
        """GET .../objects/{type}/{id}?properties=...: the record, or None when HubSpot has no such
        record (404). ``object_id`` must be a checked id (``record_id``): it goes into the path."""
        response = self._send("GET", api_path(self.version, "objects", object_type, f"/{quote(object_id, safe='')}"),
                              params={"properties": ",".join(properties)}, check=False,
                              fake={"id": object_id, "properties": {}})
        if response.status_code == 404:
            return None
        self.check(response)
        return response.json()

    def batch_read(self, object_type: str, ids: list[str], properties: list[str]) -> list[dict]:
        """POST .../objects/{type}/batch/read: the records with these ids (``propertiesWithHistory``
        is required by the reference; none is asked)."""
        body = {"inputs": [{"id": i} for i in ids], "properties": properties, "propertiesWithHistory": []}
        response = self._send("POST", api_path(self.version, "objects", object_type, "/batch/read"), json=body,
                              fake={"status": "COMPLETE", "results": []})
        return response.json().get("results") or []

    def associated_ids(self, from_type: str, from_id: str, to_type: str) -> list[str]:
        """POST /crm/associations/{version}/{from}/{to}/batch/read for one record: the ids of the
        ``to_type`` records associated with it (first page: up to 500, HubSpot's page size)."""
        response = self._send("POST", api_path(self.version, "associations", from_type, f"/{to_type}/batch/read"),
                              json={"inputs": [{"id": from_id}]}, fake={"status": "COMPLETE", "results": []})
        return [str(link["toObjectId"]) for result in response.json().get("results") or []
                for link in result.get("to") or [] if isinstance(link, dict) and link.get("toObjectId")]

    def owner(self, owner_id: str) -> dict | None:
        """GET /crm/owners/{version}/{id}: the owner (``firstName``, ``lastName``, ``email``), or None
        when the id names no owner (404, e.g. a deactivated user)."""
        response = self._send("GET", api_path(self.version, "owners", quote(owner_id, safe="")), check=False,
                              fake={"id": owner_id})
        if response.status_code == 404:
            return None
        self.check(response)
        return response.json()

    def pipelines(self, object_type: str) -> list[dict]:
        """GET /crm/pipelines/{version}/{type}: every pipeline with its ``stages`` (``id``, ``label``);
        none when the version has no such path (404: the reference shows 2026-09 as ``2026-09-beta``)."""
        response = self._send("GET", api_path(self.version, "pipelines", object_type), fake={"results": []},
                              check=False)
        if response.status_code == 404:
            return []
        self.check(response)
        return response.json().get("results") or []

    def property_definitions(self, object_type: str, fake: list[dict]) -> list[dict]:
        """GET .../properties/{type}: every property's name, type and options."""
        response = self._send("GET", api_path(self.version, "properties", object_type), fake={"results": fake})
        return response.json().get("results") or []

    def gdpr_delete(self, contact_id: str) -> bool:
        """POST .../objects/contacts/gdpr-delete ``{"objectId": id}``: the contact and its associated
        content, permanently (HubSpot's reference; the official SDK's ``contacts.gdpr_delete``).
        False when the contact is gone already (404)."""
        response = self._send("POST", api_path(self.version, "objects", "contacts", "/gdpr-delete"),
                              json={"objectId": contact_id}, check=False)
        if response.status_code == 404:
            return False
        self.check(response)
        return True
