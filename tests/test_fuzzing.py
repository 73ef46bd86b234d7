"""Bounded fuzzing: schemathesis over the hub's own OpenAPI document (every route, with and
without the admin token) and hypothesis over ``POST /webhooks/<source>`` for every source.

What must hold for every generated request: never a 5xx; every 4xx body is the JSON error
form naming the problem; a refused report leaves nothing behind and an accepted one is whole
(the report and exactly the deliveries its answer lists). Example counts and deadlines are
fixed so the suite stays fast; ``HUB_FUZZ_EXAMPLES`` raises them for a longer local run.
"""
from __future__ import annotations

import copy
import json
import os
import re

import pytest
import schemathesis
from schemathesis import GenerationMode
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from hub.testing import TEST_SECRET, load_sample

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "25"))
BOUNDED = settings(max_examples=EXAMPLES, deadline=2000, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                          HealthCheck.filter_too_much])

#: one valid payload per source, the seed every mutation starts from
SEEDS = {
    "hms": load_sample("end-of-call-report-full"),
    "vapi": {"message": {"type": "end-of-call-report", "endedReason": "customer-ended-call", "timestamp": 1772442312512,
                         "startedAt": "2026-03-02T10:00:00+01:00", "endedAt": "2026-03-02T10:05:12.512+01:00",
                         "call": {"id": "7a1c3a52-0000-4000-8000-00000000c0de", "type": "inboundPhoneCall",
                                  "orgId": "org-1", "createdAt": "2026-03-02T09:00:00Z",
                                  "updatedAt": "2026-03-02T09:05:00Z"},
                         "customer": {"number": "06-12345678"},
                         "artifact": {"messages": [{"role": "user", "message": "I was charged twice.", "time": 3.0,
                                                    "secondsFromStart": 2.5}]},
                         "analysis": {"summary": "Double charge.", "structuredData": {"sentiment": 2}}}},
    "retell": {"event": "call_analyzed", "call": {
        "call_id": "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6", "call_type": "phone_call", "direction": "inbound",
        "agent_id": "agent_1", "call_status": "ended", "from_number": "+31612345678", "to_number": "+31850835037",
        "start_timestamp": 1772442000000, "end_timestamp": 1772442312400, "duration_ms": 312400,
        "transcript_object": [{"role": "user", "content": "I was charged twice", "words": []}],
        "call_analysis": {"call_summary": "Double charge.", "user_sentiment": "Negative"}}},
}


@pytest.fixture
def hub_config(hub_config, tmp_path):
    hub_config["sources"] = {name: {"allow_unsigned": True} for name in SEEDS}
    hub_config["sources"]["hms"] = {"secret": TEST_SECRET}  # hms also has its signature check fuzzed
    hub_config["destinations"] = {"archive": {"type": "jsonl", "path": str(tmp_path / "calls.jsonl"),
                                              "when": "`true`", "events": ["end-of-call-report"]}}
    return hub_config


@pytest.fixture
def hub_plugins():
    return ("vapi", "retell")


def assert_names_the_problem(status: int, body: bytes) -> None:
    assert status < 500, body
    if 400 <= status < 500:
        answer = json.loads(body)
        assert set(answer) == {"error", "message", "details"}, answer
        assert answer["error"] and isinstance(answer["error"], str)
        assert answer["message"] and isinstance(answer["message"], str)
        assert isinstance(answer["details"], dict)


# --- schemathesis: the admin API as its document describes it --------------------------------------

def _check_route(case, headers: dict) -> None:
    response = case.call(headers=dict(headers))
    case.validate_response(response, checks=[not_a_server_error], headers=headers)
    assert_names_the_problem(response.status_code, response.content)
    if case.path.startswith("/api/"):
        assert {k.lower(): v for k, v in response.headers.items()}["cache-control"] in ("no-store", ["no-store"])
        if not headers:
            # a generated Authorization header is a wrong token: after five, the address is throttled.
            # A path no route takes (a control character in a path parameter) is a 404 from the
            # router, before any view: it reads nothing, so it needs no token either.
            unrouted = response.status_code == 404 and json.loads(response.content)["error"] == "not_found"
            assert response.status_code in (401, 429) or unrouted, response.content


def served_operations(app) -> set[str]:
    """``"METHOD /path"`` of every admin route the app serves (but the document itself), and the
    webhook receiver, in the document's path form (``{name}`` for ``<name>``)."""
    def document_path(rule: str) -> str:
        return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)

    routes = {f"{method} {document_path(rule.rule)}" for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/api/") and rule.rule != "/api/openapi.json"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes | {"POST /webhooks/hms"}


@pytest.mark.parametrize("headers", [AUTH, {}], ids=["token", "no-token"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_route_answers_without_a_server_error_and_refuses_in_the_json_form(app, headers, mode):
    """Every operation of the served document, with data that fits it and data that does not.

    (schemathesis' own pytest loader does not run under this pytest; its strategies do.)"""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app, headers=dict(AUTH))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {o.label for o in operations} == served_operations(app)  # every route is fuzzed
    for operation in operations:
        @BOUNDED
        @given(case=operation.as_strategy(generation_mode=mode))
        def one(case):
            _check_route(case, headers)

        one()


# --- hypothesis: POST /webhooks/<source> for every source ---------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated(draw, seed: dict):
    """``seed`` with one to three of its nodes replaced by random JSON or deleted."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        if not path:
            doc = draw(JSON_VALUES)
            break
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            parent[path[-1]] = draw(JSON_VALUES)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    return doc


def bodies(seed: dict):
    return (mutated(seed).map(lambda d: json.dumps(d).encode())
            | st.binary(max_size=200)
            | st.text(max_size=200).map(str.encode))


def counts(app) -> tuple[int, int]:
    with app.hub.store.engine.connect() as conn:
        return (conn.execute(sa.text("SELECT count(*) FROM reports")).scalar_one(),
                conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar_one())


def deliveries_of(app, report_id: str) -> int:
    with app.hub.store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM deliveries WHERE report_id = :r"),
                            {"r": report_id}).scalar_one()


@pytest.mark.parametrize("source", sorted(SEEDS))
def test_every_source_takes_its_seed(app, source):
    answer = app.test_client().post(f"/webhooks/{source}", data=json.dumps(SEEDS[source]),
                                    headers=_headers(source, json.dumps(SEEDS[source]).encode()))
    assert answer.status_code == 202, answer.json


def _headers(source: str, body: bytes) -> dict:
    if source == "hms":
        from hub.testing import signed_headers

        return signed_headers(body)
    return {"Content-Type": "application/json"}


@pytest.mark.parametrize("source", sorted(SEEDS))
def test_fuzzed_webhooks_never_fail_the_server_or_leave_half_a_report(app, source):
    client = app.test_client()

    @BOUNDED
    @given(body=bodies(SEEDS[source]), signed=st.booleans())
    def one(body, signed):
        before = counts(app)
        headers = _headers(source, body) if signed else {"Content-Type": "application/json"}
        answer = client.post(f"/webhooks/{source}", data=body, headers=headers)
        assert_names_the_problem(answer.status_code, answer.data)
        reports, deliveries = counts(app)
        if answer.status_code == 202:
            listed = answer.json["deliveries"]
            assert reports == before[0] + 1 and deliveries == before[1] + len(listed)
            assert deliveries_of(app, answer.json["report_id"]) == len(listed)
        else:
            assert (reports, deliveries) == before, (answer.status_code, answer.data)

    one()
