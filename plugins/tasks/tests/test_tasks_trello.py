"""``trello``: requests checked field by field and against Trello's published REST reference.

No licensed Trello description is stored in shared/specs, so ``reference_problems`` encodes the
published reference for ``POST /1/cards`` (developer.atlassian.com/cloud/trello/rest/api-group-cards,
"Create a new Card"): idList is required and a 24-hex id; the card parameters it lists, which "may
also be replaced with a JSON request body"; key and token as the ``key`` and ``token`` query
parameters, as in the reference's own example (``/1/cards?idList=...&key=APIKey&token=APIToken``).
"""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

import hub
from hub.testing import DestinationContract, deliver, make_destination, probe_connection

CREATE = "https://api.trello.com/1/cards"
LIST = "5abbe4b7ddc1b351ef961414"
OPTIONS = {"key": "0471642aefef5fa1fa76530ce1ba4c85",
           "token": "9eb76d9a9d02b8dd40c2f3e5df18556c831d4d1fadbe2c45f8310e6c93b5c548",
           "list_id": LIST, "assignee": "5a8f0e1c2b3d4e5f60718293", "labels": ["5c9a1b2c3d4e5f6071829304"]}
CREATED = {"id": "65f0c1d2e3f4a5b6c7d8e9f0", "idShort": 7, "idList": LIST, "name": "Call back",
           "shortUrl": "https://trello.com/c/AbCd1234", "url": "https://trello.com/c/AbCd1234/7-call-back"}

CARD_PARAMS = {"name", "desc", "pos", "due", "start", "dueComplete", "idList", "idMembers", "idLabels", "urlSource",
               "fileSource", "mimeType", "idCardSource", "keepFromSource", "address", "locationName", "coordinates"}
TRELLO_ID = re.compile(r"^[0-9a-fA-F]{24}$")


def reference_problems(request: requests.PreparedRequest) -> list[str]:
    problems = []
    parts = urlsplit(request.url)
    if request.method != "POST" or parts.path != "/1/cards":
        problems.append(f"not POST /1/cards: {request.method} {parts.path}")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    body = json.loads(request.body) if request.body else {}
    params = {**query, **body}
    if not (query.get("key") and query.get("token")):
        problems.append("key and token are required query parameters")
    params.pop("key", None), params.pop("token", None)
    problems += [f"unknown parameter {name!r}" for name in sorted(set(params) - CARD_PARAMS)]
    if not TRELLO_ID.match(str(params.get("idList", ""))):
        problems.append("idList is required: a 24-hex Trello id")
    for name in ("idMembers", "idLabels"):
        values = params.get(name, [])
        values = values.split(",") if isinstance(values, str) else values
        if not all(TRELLO_ID.match(str(v)) for v in values):
            problems.append(f"{name} must be Trello ids")
    if "pos" in params and params["pos"] not in ("top", "bottom") and not (
            isinstance(params["pos"], (int, float)) and params["pos"] > 0):
        problems.append("pos must be top, bottom or a positive number")
    return problems


class TestTrelloContract(DestinationContract):
    destination_type = "trello"
    options = OPTIONS

    def mock_success(self, rsps):
        rsps.add(responses.POST, CREATE, json=CREATED)


def test_creates_one_card_with_every_field(sample_report):
    destination = make_destination("trello", {**OPTIONS, "members": ["5a8f0e1c2b3d4e5f60718294"],
                                              "priority_labels": {"high": "5c9a1b2c3d4e5f6071829305"}})
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=CREATED)
        result, ctx = deliver(destination, sample_report)
        (call,) = rsps.calls
    assert reference_problems(call.request) == []
    assert call.request.url == f"{CREATE}?key={OPTIONS['key']}&token={OPTIONS['token']}"
    assert "Authorization" not in call.request.headers
    assert ctx.sent[0].url == f"{CREATE}?key=[secret]&token=[secret]"
    body = json.loads(call.request.body)
    assert body == {
        "idList": LIST,
        "name": "Call back +31 6 23456789 (complaint)",
        "desc": body["desc"],
        "due": "2026-03-03T17:00:00.000Z",
        "pos": "top",
        "idMembers": ["5a8f0e1c2b3d4e5f60718293", "5a8f0e1c2b3d4e5f60718294"],
        "idLabels": ["5c9a1b2c3d4e5f6071829304", "5c9a1b2c3d4e5f6071829305"],  # + the "high" label
    }
    assert body["desc"].startswith("Call back +31 6 23456789 by 2026-03-03")
    assert ctx.state["task_id"] == "65f0c1d2e3f4a5b6c7d8e9f0"
    assert ctx.state["task_url"] == "https://trello.com/c/AbCd1234"
    assert result.message.startswith("created Trello task 65f0c1d2e3f4a5b6c7d8e9f0 https://trello.com/c/AbCd1234")


def test_reference_check_rejects_a_broken_card_request(sample_report):
    destination = make_destination("trello", OPTIONS)
    _, ctx = deliver(destination, sample_report, dry_run=True)
    good = ctx.sent[0].body
    assert reference_problems(requests.Request("POST", CREATE, json=good,
                                               params={"key": "k", "token": "t"}).prepare()) == []
    oauth_header = {"Authorization": 'OAuth oauth_consumer_key="k", oauth_token="t"'}  # not the documented form
    broken = {**good, "idList": "To Do", "labels": ["red"], "pos": -1}
    assert reference_problems(requests.Request("POST", CREATE, json=broken, headers=oauth_header).prepare()) == [
        "key and token are required query parameters", "unknown parameter 'labels'",
        "idList is required: a 24-hex Trello id", "pos must be top, bottom or a positive number"]


def test_minimal_card_and_options(make_report):
    destination = make_destination("trello", {"key": "k" * 32, "token": "t" * 64, "list_id": LIST,
                                              "due_time": "09:30", "position": "bottom"})
    _, ctx = deliver(destination, make_report(), dry_run=True)
    body = ctx.sent[0].body
    assert set(body) == {"idList", "name", "desc", "due", "pos"}
    assert body["due"].endswith("T09:30:00.000Z") and body["pos"] == "bottom"
    assert "t" * 64 not in json.dumps(ctx.sent[0].to_dict())


def test_rate_limit_waits_for_the_token_window(sample_report):
    destination = make_destination("trello", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=429,
                 json={"error": "API_TOKEN_LIMIT_EXCEEDED", "message": "Rate limit exceeded"},
                 headers={"x-rate-limit-api-token-interval-ms": "10000", "x-rate-limit-api-token-max": "100",
                          "x-rate-limit-api-token-remaining": "0"})
        with pytest.raises(hub.Retryable) as info:
            deliver(destination, sample_report)
    assert info.value.retry_after == 10.0
    assert "API_TOKEN_LIMIT_EXCEEDED" in str(info.value)


def test_invalid_list_is_permanent_and_names_the_keys(sample_report):
    destination = make_destination("trello", OPTIONS, name="support-trello")
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=400, body="invalid value for idList")
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    message = str(info.value)
    assert "'support-trello'" in message and "invalid value for idList" in message and "'list_id'" in message


def test_invalid_token_is_permanent_without_the_secret(sample_report):
    destination = make_destination("trello", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=401, body="invalid token")
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    assert "'token'" in str(info.value) and OPTIONS["token"] not in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({"list_id": "To Do"}, "must be a Trello id"),
    ({"due_time": "5pm"}, "must be HH:MM"),
    ({"priority_labels": {"hot": "5c9a1b2c3d4e5f6071829305"}}, "destinations.trello.priority_labels"),
])
def test_bad_trello_options_fail_at_load(options, message):
    with pytest.raises(Exception) as info:
        make_destination("trello", {**OPTIONS, **options})
    assert message in str(info.value)


SHORT = {"key": "abc", "token": "tok12", "list_id": LIST}  # too short for the hub's redaction to know them


def test_credentials_are_masked_even_where_redaction_does_not_know_them(sample_report):
    destination = make_destination("trello", SHORT)
    _, ctx = deliver(destination, sample_report, dry_run=True)
    assert ctx.sent[0].url == f"{CREATE}?key=[secret]&token=[secret]"
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE,
                 body=requests.ConnectionError("Max retries exceeded with url: /1/cards?key=abc&token=tok12"))
        with pytest.raises(hub.Retryable) as info:
            deliver(destination, sample_report)
    assert "token=[secret]" in str(info.value) and "tok12" not in str(info.value)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=400, body="invalid value for idList (token=tok12)")
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    assert "tok12" not in str(info.value) and "invalid value for idList" in str(info.value)


LIST_CARDS = f"https://api.trello.com/1/lists/{LIST}/cards"


def test_retry_finds_the_card_an_unanswered_attempt_created(sample_report):
    destination = make_destination("trello", OPTIONS)
    _, dry = deliver(destination, sample_report, dry_run=True)
    card = dry.sent[0].body
    lost = {"id": "65f0c1d2e3f4a5b6c7d8e9f1", "name": card["name"], "desc": card["desc"],
            "shortUrl": "https://trello.com/c/LoSt0001"}
    other = {**lost, "id": "65f0c1d2e3f4a5b6c7d8e9f2", "desc": "another call"}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, LIST_CARDS, json=[other, lost])
        result, ctx = deliver(destination, sample_report, state={"sent": {"task": {"at": 0.0, "times": 1}}}, attempt=2)
        (call,) = rsps.calls
    query = parse_qs(urlsplit(call.request.url).query)
    assert query == {"key": [OPTIONS["key"]], "token": [OPTIONS["token"]]}
    assert ctx.state["task_id"] == "65f0c1d2e3f4a5b6c7d8e9f1" and ctx.sent_times("task") == 1
    assert result.message.startswith("found Trello task 65f0c1d2e3f4a5b6c7d8e9f1 https://trello.com/c/LoSt0001")
    assert ctx.sent[0].url == f"{LIST_CARDS}?key=[secret]&token=[secret]"


def test_retry_creates_when_the_list_has_no_such_card(sample_report):
    destination = make_destination("trello", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, LIST_CARDS, json=[{"id": "65f0c1d2e3f4a5b6c7d8e9f2", "name": "x", "desc": "y"}])
        rsps.add(responses.POST, CREATE, json=CREATED)
        _, ctx = deliver(destination, sample_report, state={"sent": {"task": {"at": 0.0, "times": 1}}}, attempt=2)
        assert [c.request.method for c in rsps.calls] == ["GET", "POST"]
    assert ctx.state["task_id"] == CREATED["id"] and ctx.sent_times("task") == 2


def test_lookup_of_an_unknown_list_is_permanent(sample_report):
    destination = make_destination("trello", OPTIONS, name="support-trello")
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, LIST_CARDS, status=404, body="The requested resource was not found.")
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report, state={"sent": {"task": {"at": 0.0, "times": 1}}}, attempt=2)
    assert "'support-trello'" in str(info.value) and "'list_id'" in str(info.value)
    assert OPTIONS["token"] not in str(info.value)


# --- test_connection: the read calls behind `destinations test` ---------------------------

@responses.activate
def test_trello_asks_for_the_member_and_the_list_with_key_and_token_masked():
    list_id = OPTIONS["list_id"]
    responses.add(responses.GET, "https://api.trello.com/1/members/me", json={"id": "m", "username": "ops"})
    responses.add(responses.GET, f"https://api.trello.com/1/lists/{list_id}", json={"id": list_id, "name": "Call back"})
    destination = make_destination("trello", OPTIONS)
    ctx = destination.context()
    assert destination.test_connection(ctx) == "authenticated as ops; list 'Call back'"
    assert all(call.request.params == {"key": OPTIONS["key"], "token": OPTIONS["token"]}
               for call in responses.calls)
    assert all(OPTIONS["token"] not in sent.url for sent in ctx.sent)


def test_a_send_deferred_by_the_rate_limiter_stays_deferred_with_its_credentials_masked():
    """The hub's limiter defers a send (no attempt counted): masking must not turn it into a failure."""
    from hub.errors import Deferred
    from hub_tasks.trello import credentials_masked

    with pytest.raises(Deferred) as info:
        with credentials_masked():
            raise Deferred("rate limit (1/60s) before https://api.trello.com/1/cards?key=k3y&token=t0ken",
                           retry_after=42.0)
    assert info.value.retry_after == 42.0
    assert "k3y" not in info.value.reason and "t0ken" not in info.value.reason
