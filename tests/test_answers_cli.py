"""``sovereign-hub tools export`` and ``sovereign-hub answers test NUMBER``: the real commands,
which load their own hub (the test CRM type is added to the built-in plugins for them)."""
from __future__ import annotations

import json

import pytest

from hub.store import Store
from hub.testing import migrated

from answers_crm import LocalCrm

CALLER = "+31612345678"


@pytest.fixture
def crm(monkeypatch):
    import hub.plugins

    monkeypatch.setattr(hub.plugins, "DEFAULT_PLUGINS", (*hub.plugins.DEFAULT_PLUGINS, "answers_crm"))
    with LocalCrm({CALLER: {"id": "501", "name": "Alice de Vries"}}) as server:
        yield server


@pytest.fixture
def answering(hub_config, crm):
    migrated(hub_config["store"]["url"])
    hub_config["destinations"]["crm"] = {"type": "localcrm", "base_url": crm.url}
    hub_config["answers"] = {"assistant_request": {"crm": "crm", "first_message": "Hello {{ caller.name }}!"},
                             "tools": {"followup": "crm"}}
    hub_config["server"] = {"public_url": "https://hub.example.com/"}
    return hub_config


def test_tools_export_prints_the_platforms_tool_definitions(answering, runner):
    result = runner.invoke(["tools", "export"])
    assert result.exit_code == 0, result.output
    tools = json.loads(result.output)
    assert [t["name"] for t in tools] == ["create_followup", "lookup_customer", "recent_calls"]
    for tool in tools:
        assert set(tool) == {"name", "description", "parameters", "async", "url"}
        assert tool["url"] == "https://hub.example.com/webhooks/hms" and tool["async"] is False
    assert tools[0]["parameters"]["required"] == ["title"]


def test_answers_test_prints_the_answer_through_the_real_lookup(answering, runner, crm):
    result = runner.invoke(["answers", "test", "+31 6 12345678"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["answer"] == {"assistant": {"first_message": "Hello Alice de Vries!", "metadata": {
        "crm_destination": "crm", "crm_contact_id": "501"}}}
    assert printed["outcome"] == "answered" and printed["lookup"] == "found" and printed["latency_ms"] > 0
    assert crm.hits == [CALLER]
    store = Store(answering["store"]["url"])
    try:
        assert store.list_reports() == [], "a dry run stores nothing"
    finally:
        store.close()


def test_answers_test_refuses_a_number_that_is_not_one(answering, runner, crm):
    result = runner.invoke(["answers", "test", "not-a-number"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "number" in result.output and crm.hits == []


def test_answers_test_without_answers_configured_names_the_table(runner, hub_config):
    migrated(hub_config["store"]["url"])
    result = runner.invoke(["answers", "test", CALLER])
    assert result.exit_code != 0 and "[answers.assistant_request]" in result.output, result.output
