"""Checks of the task plugin's requests against the vendors' official API descriptions.

The descriptions are large (Jira 2.4 MB JSON, Asana 3 MB YAML, Linear 1.2 MB SDL), so each is
loaded once per test session. They live in ``shared/specs`` beside the repository
(``SOVEREIGN_HUB_SPECS`` points elsewhere). This plugin's fixtures are prefixed ``tasks_``;
the hub's own come from ``hub.testing``, of which ``hub_plugins`` is overridden (the app loads
this plugin) and ``fresh_rate_limits`` made autouse for this suite.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

SPECS = Path(os.environ.get("SOVEREIGN_HUB_SPECS") or Path(__file__).resolve().parents[4] / "shared" / "specs")

#: the Jira site the tests configure; the spec's own server is a placeholder
JIRA_TEST_SITE = "https://acme.atlassian.net"


def _spec_file(relative: str) -> Path:
    path = SPECS / relative
    if not path.is_file():
        pytest.fail(f"API description {path} is missing: the shared/specs folder must sit beside the "
                    f"repository (or set SOVEREIGN_HUB_SPECS)")
    return path


class OpenAPIChecker:
    """Validates captured ``requests`` traffic against one OpenAPI document."""

    def __init__(self, spec: dict):
        from openapi_core import Config, OpenAPI

        # the documents are the vendors' own; skip re-validating the whole document on load
        self.openapi = OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))

    def request(self, prepared) -> None:
        """Raise if the request (a ``requests.PreparedRequest``) breaks the description."""
        from openapi_core.contrib.requests import RequestsOpenAPIRequest

        with warnings.catch_warnings():  # Asana's document still uses allowEmptyValue
            warnings.simplefilter("ignore", DeprecationWarning)
            self.openapi.validate_request(RequestsOpenAPIRequest(prepared))

    def response(self, prepared, response) -> None:
        """Raise if a mocked answer is not one the description allows (keeps the mocks honest)."""
        from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

        self.openapi.validate_response(RequestsOpenAPIRequest(prepared), RequestsOpenAPIResponse(response))


@pytest.fixture(scope="session")
def tasks_jira_spec() -> OpenAPIChecker:
    spec = json.loads(_spec_file("jira/swagger-v3.v3.json").read_text())
    spec["servers"] = [{"url": JIRA_TEST_SITE}, *spec.get("servers", [])]
    return OpenAPIChecker(spec)


@pytest.fixture(scope="session")
def tasks_asana_spec() -> OpenAPIChecker:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with _spec_file("asana/asana_oas.yaml").open() as handle:
        spec = yaml.load(handle, Loader=loader)
    # YAML reads response codes (201) as integers and examples as dates; OpenAPI wants JSON's types
    return OpenAPIChecker(json.loads(json.dumps(spec, default=str)))


class GraphQLChecker:
    """Validates a GraphQL document and coerces its variables against Linear's schema."""

    def __init__(self, sdl: str):
        from graphql import build_schema

        self.schema = build_schema(sdl)

    def errors(self, body: dict) -> list[str]:
        """Every problem of ``{"query": ..., "variables": ...}``; empty when the request is valid."""
        from graphql import GraphQLSyntaxError, OperationDefinitionNode, parse, validate
        from graphql.execution.values import get_variable_values

        try:
            document = parse(body["query"])
        except GraphQLSyntaxError as exc:
            return [str(exc)]
        problems = [error.message for error in validate(self.schema, document)]
        if problems:
            return problems
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(operations) != 1:
            return [f"expected one operation, found {len(operations)}"]
        coerced = get_variable_values(self.schema, operations[0].variable_definitions or [],
                                      body.get("variables") or {})
        return [error.message for error in coerced] if isinstance(coerced, list) else []

    def check(self, body: dict) -> None:
        problems = self.errors(body)
        assert not problems, problems


@pytest.fixture(scope="session")
def tasks_linear_schema() -> GraphQLChecker:
    return GraphQLChecker(_spec_file("linear/schema.graphql").read_text())


@pytest.fixture
def tasks_flood(sample_report):
    """Deliver more than two windows' worth of reports at once on a fake clock, as the dispatcher
    would (a delivery the rate limiter refuses, Retryable, is tried again when it said), and check
    that the creates arrived ``rate`` at a time: a full window at once, never more in any window."""
    import responses

    import hub
    from hub.testing import FakeClock, assert_no_window_exceeded, deliver

    def flood(destination, url: str, answer: dict, rate: str) -> None:
        count, seconds = hub.parse_rate(rate)
        assert destination.limiters["default"].rate == rate
        clock = FakeClock().drive(destination)
        arrived: list[float] = []

        def created(request):
            arrived.append(clock.now)
            return 200, {}, json.dumps(answer)

        with responses.RequestsMock() as rsps:
            rsps.add_callback(responses.POST, url, callback=created)
            for number in range(2 * count + count // 2):
                while True:
                    try:
                        deliver(destination, sample_report, state={"n": number})
                        break
                    except hub.Retryable as exc:
                        clock.now += exc.retry_after
        assert len(arrived) == 2 * count + count // 2
        assert arrived[count - 1] == 0.0 and arrived[count] == seconds
        assert_no_window_exceeded(arrived, rate)

    return flood


@pytest.fixture(autouse=True)
def _full_rate_limits(fresh_rate_limits):
    """Every test starts with full rate-limit buckets (they are shared process-wide)."""


@pytest.fixture
def hub_plugins():
    """The app fixture loads this plugin (and the built-in ones)."""
    return ("tasks",)
