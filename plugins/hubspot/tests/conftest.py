"""Fixtures of this plugin's tests; the hub's own come from hub.testing.

``oracle``: the official SDK as the oracle for every request the plugin sends. The oracle is
``hubspot-sdk`` (HubSpot's Python SDK, generated from HubSpot's 2026-03 OpenAPI description):
each request the plugin sent is sent again through the SDK method HubSpot documents for it, built
field by field from the plugin's body and query (a key the SDK does not know fails the mapping),
and the two requests must agree on method, path, query and JSON body.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hubspot_sdk import HubSpot

API = "https://api.hubapi.com"
TOKEN = "pat-eu1-test-token-0000"  # the tests' token (each test module names it too)

FILTER_KEYS = {"propertyName": "property_name", "operator": "operator", "value": "value", "values": "values",
               "highValue": "high_value"}
ASSOCIATION_TYPE_KEYS = {"associationCategory": "association_category", "associationTypeId": "association_type_id"}
#: the query parameters of a read by id the plugin may send, with the SDK's names
READ_QUERY_KEYS = {"properties": "properties", "associations": "associations"}


def renamed(record: dict, names: dict[str, str]) -> dict:
    """``record`` with the SDK's parameter names; a key the SDK has no name for is an error."""
    return {names[key]: value for key, value in record.items()}


class Oracle:
    """The SDK against an in-memory transport: what it would send for a call."""

    def __init__(self):
        self.seen: list[httpx.Request] = []
        answer = {"id": "1", "properties": {}, "createdAt": "2026-03-02T09:14:07Z",
                  "updatedAt": "2026-03-02T09:14:07Z", "archived": False, "results": [], "total": 0,
                  "status": "COMPLETE", "startedAt": "2026-03-02T09:14:07Z", "completedAt": "2026-03-02T09:14:07Z",
                  "type": "PERSON"}

        def handler(request):
            self.seen.append(request)
            return httpx.Response(200, json=answer)

        self.client = HubSpot(access_token=TOKEN, base_url=API, max_retries=0,
                              http_client=httpx.Client(transport=httpx.MockTransport(handler)))

    @staticmethod
    def canonical(path: str) -> str:
        return canonical(path)

    def resend(self, method: str, path: str, body) -> tuple[str, str, object]:
        """Send the plugin's request through the SDK method for it; the SDK's (method, path, body),
        the path with its query in ``canonical`` form (compare it with ``canonical(path)``)."""
        url = urlsplit(path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}  # decoded
        parts = url.path.split("/")  # ['', 'crm', 'objects'|'properties'|'pipelines'|'associations'|'owners', '2026-03', ...]
        crm = self.client.crm
        if parts[2] == "properties":
            crm.properties.list(parts[4])
        elif parts[2] == "pipelines":
            crm.pipelines.list(parts[4])
        elif parts[2] == "owners":
            crm.owners.get(int(parts[4]))
        elif parts[2] == "associations":
            assert parts[6:] == ["batch", "read"], path
            crm.associations.batch.get(parts[5], from_object_type=parts[4],
                                       inputs=[renamed(i, {"id": "id"}) for i in body["inputs"]])
        elif url.path.endswith("/search"):
            getattr(crm.objects, parts[4]).search(
                after=body["after"], limit=body["limit"], properties=body["properties"], sorts=body["sorts"],
                filter_groups=[{"filters": [renamed(f, FILTER_KEYS) for f in group["filters"]]}
                               for group in body["filterGroups"]],
                **{k: v for k, v in body.items() if k == "query"})
        elif url.path.endswith("/batch/read"):
            getattr(crm.objects, parts[4]).batch.get(
                inputs=[renamed(i, {"id": "id"}) for i in body["inputs"]], properties=body["properties"],
                properties_with_history=body["propertiesWithHistory"])
        elif method == "GET":
            getattr(crm.objects, parts[4]).get(parts[5], **{READ_QUERY_KEYS[k]: v.split(",") for k, v in query.items()})
        elif method == "PATCH":
            getattr(crm.objects, parts[4]).update(parts[5], properties=body["properties"])
        else:
            getattr(crm.objects, parts[4]).create(
                properties=body["properties"],
                associations=[{"to": link["to"], "types": [renamed(t, ASSOCIATION_TYPE_KEYS) for t in link["types"]]}
                              for link in body["associations"]])
        request = self.seen[-1]
        # The SDK addresses deals by their object type id (0-3); HubSpot's deals guide by name
        # (POST /crm/objects/2026-03/deals), the same object (deal object definition: 0-3).
        sdk_path = canonical(request.url.path.replace("/0-3", "/deals") + "?" + request.url.query.decode())
        return request.method, sdk_path, json.loads(request.content) if request.content else None


def canonical(path: str) -> str:  # also Oracle.canonical
    """A path with its query decoded and sorted (``?properties=a,b``), as HubSpot reads it."""
    url = urlsplit(path)
    query = sorted((key, values[0]) for key, values in parse_qs(url.query).items())
    return url.path + ("?" + "&".join(f"{key}={value}" for key, value in query) if query else "")


@pytest.fixture
def oracle():
    return Oracle()


@pytest.fixture(autouse=True)
def _full_rate_limits(fresh_rate_limits):
    """Every test starts with full rate-limit buckets (they are shared process-wide)."""


@pytest.fixture
def hub_plugins():
    """The app fixture loads this plugin (and the built-in ones)."""
    return ("hubspot",)
