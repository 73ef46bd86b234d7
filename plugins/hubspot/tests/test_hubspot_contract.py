"""The checks every destination type passes (hub.testing.DestinationContract)."""
import re

import responses

from hub.testing import DestinationContract

API = "https://api.hubapi.com"


class TestHubSpotContract(DestinationContract):
    destination_type = "hubspot"
    options = {"token": "pat-eu1-contract-token", "properties": {"last_call_sentiment": "analysis.sentiment"}}

    def mock_success(self, rsps):
        rsps.add(responses.POST, f"{API}/crm/objects/2026-03/contacts/search",
                 json={"total": 1, "results": [{"id": "51", "properties": {"phone": "+31 6 23456789"}}]})
        rsps.add(responses.POST, re.compile(rf"{API}/crm/objects/2026-03/(calls|tasks)/search"),
                 json={"total": 0, "results": []})
        rsps.add(responses.GET, f"{API}/crm/properties/2026-03/contacts",
                 json={"results": [{"name": "last_call_sentiment", "type": "number", "fieldType": "number"}]})
        rsps.add(responses.PATCH, f"{API}/crm/objects/2026-03/contacts/51", json={"id": "51"})
        rsps.add(responses.POST, f"{API}/crm/objects/2026-03/calls", json={"id": "701"}, status=201)
        rsps.add(responses.POST, f"{API}/crm/objects/2026-03/tasks", json={"id": "901"}, status=201)
        rsps.add(responses.PATCH, re.compile(rf"{API}/crm/objects/2026-03/(calls|tasks)/\d+"), json={"id": "1"})

    def is_create(self, recorded_request):
        return recorded_request.method == "POST" and not recorded_request.url.endswith("/search")
