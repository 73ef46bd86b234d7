"""Testing a destination: ``sovereign-hub destinations test NAME``, ``POST /api/destinations/<name>/test``
and the dashboard's Test button, all through ``operations.check_connection``; the built-in types'
own test calls (webhook: a HEAD, mocked with ``responses`` or against a closed port; jsonl: the file)."""
from __future__ import annotations

import re

import pytest
import responses

from hub import Destination
from hub.testing import closed_port, migrated

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOOK = "https://hooks.example.com/catch/123/s3cr3t-path"


@pytest.fixture
def hub_config(hub_config, tmp_path):
    migrated(hub_config["store"]["url"])
    hub_config["destinations"] = {
        "archive": {"type": "jsonl", "path": str(tmp_path / "out" / "calls.jsonl")},
        "hook": {"type": "webhook", "url": HOOK},
        "down": {"type": "webhook", "url": f"http://127.0.0.1:{closed_port()}/calls", "timeout_seconds": 2},
    }
    return hub_config


def test_a_jsonl_destination_tests_its_file_and_writes_nothing(client, tmp_path):
    answer = client.post("/api/destinations/archive/test", headers=AUTH)
    assert answer.status_code == 200
    assert answer.get_json() == {"destination": "archive", "type": "jsonl", "ok": True, "problem": None,
                                 "message": f"{tmp_path / 'out' / 'calls.jsonl'} will be created"}
    assert not (tmp_path / "out").exists()


@responses.activate
@pytest.mark.parametrize("status, ok, problem", [
    (405, True, None), (200, True, None),
    (401, False, "bad_token"), (403, False, "missing_scope"), (404, False, "rejected"), (503, False, "unreachable"),
])
def test_a_webhook_is_tested_with_a_head_that_never_shows_its_secret_path(client, status, ok, problem):
    responses.add(responses.HEAD, HOOK, status=status)
    body = client.post("/api/destinations/hook/test", headers=AUTH).get_json()
    assert (body["ok"], body["problem"]) == (ok, problem), body
    assert "s3cr3t-path" not in body["message"] and "hooks.example.com" in body["message"]
    [call] = responses.calls
    assert call.request.method == "HEAD" and call.request.body is None


def test_an_unreachable_webhook_says_so_on_every_front_end(app, client, runner):
    body = client.post("/api/destinations/down/test", headers=AUTH).get_json()
    assert (body["ok"], body["problem"]) == (False, "unreachable") and "ConnectionError" in body["message"]

    result = runner.invoke(["destinations", "test", "down"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: down (webhook): unreachable: destination 'down': ConnectionError")

    form = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    client.post("/login", data={"csrf_token": csrf, "token": TOKEN})
    index = client.get("/").get_data(as_text=True)
    assert 'action="/destinations/down/test"' in index and 'action="/destinations/archive/test"' in index
    fresh = re.search(r'name="csrf_token" value="([^"]+)"', index).group(1)  # a new session at login
    answer = client.post("/destinations/down/test", data={"csrf_token": fresh})
    assert answer.status_code == 303
    page = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Test of down: unreachable: destination &#39;down&#39;: ConnectionError" in page


def test_the_cli_says_ok_in_one_line(runner, tmp_path):
    result = runner.invoke(["destinations", "test", "archive"])
    assert (result.exit_code, result.output) == (0, f"archive (jsonl): ok: {tmp_path / 'out' / 'calls.jsonl'} "
                                                    f"will be created\n")


def test_an_unknown_destination_and_a_type_without_a_test_call(register_plugin, hub_config):
    class Silent(Destination):
        type = "silent"

        def deliver(self, report, ctx):
            raise AssertionError("not called")

    class Plugin:
        from hub import hookimpl

        @hookimpl
        def register_destinations(self, register):
            register(Silent)

    hub_config["destinations"]["quiet"] = {"type": "silent"}
    client = register_plugin(Plugin()).test_client()
    missing = client.post("/api/destinations/nope/test", headers=AUTH)
    assert missing.status_code == 409 and missing.get_json()["error"] == "destination_not_configured"
    untestable = client.post("/api/destinations/quiet/test", headers=AUTH)
    assert untestable.status_code == 409 and untestable.get_json()["error"] == "destination_not_testable"
    assert "send-test quiet --dry-run" in untestable.get_json()["message"]
