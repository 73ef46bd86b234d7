"""``sovereign-hub send-test NAME --dry-run`` through the installed command.

Each run starts a process, so only two types go through the command (Jira: ADF and Basic
auth; Linear: GraphQL and a bare API key); test_tasks_dry_run.py shows for all five, in
process, that the dry run records exactly what a live delivery sends.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

COMMAND = Path(sys.executable).with_name("sovereign-hub")

CONFIG = """
[store]
url = "sqlite:///{db}"
[sources.hms]
secret = "whsec_cli_test_secret"
[phone]
default_region = "NL"
[server]
public_url = "https://hub.acme.test"

[destinations.support-jira]
type = "jira"
base_url = "https://acme.atlassian.net"
email = "support-bot@acme.com"
api_token = {{ env = "TASKS_JIRA_TOKEN" }}
project = "SUP"

[destinations.billing-asana]
type = "asana"
token = {{ env = "TASKS_ASANA_TOKEN" }}
projects = ["1100000000000002"]

[destinations.eng-linear]
type = "linear"
api_key = {{ env = "TASKS_LINEAR_KEY" }}
team_id = "9cfb482a-81e3-4154-b5b9-2c805e70a02d"

[destinations.inbox-todoist]
type = "todoist"
token = {{ env = "TASKS_TODOIST_TOKEN" }}

[destinations.board-trello]
type = "trello"
key = {{ env = "TASKS_TRELLO_KEY" }}
token = {{ env = "TASKS_TRELLO_TOKEN" }}
list_id = "5abbe4b7ddc1b351ef961414"
"""
SECRETS = {"TASKS_JIRA_TOKEN": "jira-cli-secret-1", "TASKS_ASANA_TOKEN": "asana-cli-secret-2",
           "TASKS_LINEAR_KEY": "lin_api_cli_secret_3", "TASKS_TODOIST_TOKEN": "todoist-cli-secret-4",
           "TASKS_TRELLO_KEY": "trello-cli-key-5", "TASKS_TRELLO_TOKEN": "trello-cli-secret-6"}
EXPECTED = {
    "support-jira": ("https://acme.atlassian.net/rest/api/3/issue", "would create Jira task SUP-1"),
    "eng-linear": ("https://api.linear.app/graphql", "would create Linear task DRY-1"),
    "board-trello": ("https://api.trello.com/1/cards?key=[secret]&token=[secret]",
                     "would create Trello task 5abbe4b7ddc1b351ef961414"),
}


@pytest.mark.skipif(not COMMAND.exists(), reason="the sovereign-hub command is not installed beside python")
def test_send_test_dry_run_prints_each_exact_request(tmp_path):
    config = tmp_path / "hub.toml"
    config.write_text(textwrap.dedent(CONFIG.format(db=tmp_path / "hub.db")))
    env = {**os.environ, **SECRETS}
    for name, (url, message) in EXPECTED.items():
        run = subprocess.run([str(COMMAND), "send-test", name, "--dry-run", "-c", str(config)],
                             capture_output=True, text=True, env=env, timeout=60)
        assert run.returncode == 0, run.stderr
        (sent,) = json.loads(run.stdout)
        assert sent["method"] == "POST" and sent["url"] == url
        assert sent["headers"].get("Authorization", "[secret]") == "[secret]"  # Trello: none, query params
        assert sent["body"], name
        assert "https://hub.acme.test/reports/send-test" in json.dumps(sent["body"])  # the dashboard link
        assert message in run.stderr
        for secret in SECRETS.values():
            assert secret not in run.stdout + run.stderr
