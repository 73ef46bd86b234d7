"""The sovereign-hub command, run through click with a real configuration file and SQLite."""
import json
import textwrap

import pytest
from click.testing import CliRunner

from hub.cli import cli
from hub.core import Hub
from hub.testing import load_sample, migrated


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CLI_TEST_SECRET", "whsec_cli_test_secret")
    path = tmp_path / "hub.toml"
    path.write_text(textwrap.dedent(f"""
        [store]
        url = "{migrated(f"sqlite:///{tmp_path / 'hub.db'}")}"
        [sources.hms]
        secret = {{ env = "CLI_TEST_SECRET" }}
        [dispatch]
        retry_delays = [0]
        [phone]
        default_region = "NL"
        [analysis.schema]
        type = "object"
        [analysis.schema.properties.sentiment]
        type = "integer"
        [destinations.calls_file]
        type = "jsonl"
        path = "{tmp_path / 'calls.jsonl'}"
        [destinations.broken]
        type = "webhook"
        url = "http://127.0.0.1:9/unreachable"
        when = "analysis.intent == 'complaint'"
        [destinations.signed]
        type = "webhook"
        url = "https://example.com/hook"
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        enabled = false
    """))
    return path


def run(*args, **kwargs):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)
    return result


def payload_file(tmp_path, *names):
    path = tmp_path / "payloads.json"
    path.write_text(json.dumps([load_sample(n) for n in names]))
    return path


def test_check_config_ok(config_file):
    result = run("check-config", "-c", config_file)
    assert result.exit_code == 0
    assert "OK (2 enabled destination(s): calls_file (jsonl), broken (webhook))" in result.output


def test_check_config_lists_problems_without_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("HUBSPOT_TOKEN", raising=False)
    path = tmp_path / "bad.toml"
    path.write_text('[sources.hms]\nsecret = { env = "HUBSPOT_TOKEN" }\n[server]\nport = 0\n')
    result = run("check-config", "-c", path)
    assert result.exit_code == 1
    assert f"error: {path}: sources.hms.secret: environment variable HUBSPOT_TOKEN is not set" in result.output
    assert f"error: {path}: server.port: Must be greater than or equal to 1" in result.output
    assert "Traceback" not in result.output


def test_missing_config_file_is_one_line(tmp_path):
    result = run("reports", "list", "-c", tmp_path / "nope.toml")
    assert result.exit_code == 1
    assert result.output.strip() == f"error: configuration file not found: {tmp_path / 'nope.toml'}"


def test_the_config_is_found_by_c_then_the_variable_then_hub_toml(config_file, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("SOVEREIGN_HUB_CONFIG", raising=False)
    result = run("deliveries", "list", "--status", "dead")
    assert result.exit_code == 1
    assert result.output.strip() == ("error: no configuration file: give one with -c/--config FILE, set "
                                     "SOVEREIGN_HUB_CONFIG, or create ./hub.toml (config.example.toml is one "
                                     "to start from)")
    (elsewhere / "hub.toml").write_text("[server]\nport = 0\n")  # found, so its problem is reported
    assert "error: hub.toml: server.port" in run("check-config").output
    monkeypatch.setenv("SOVEREIGN_HUB_CONFIG", str(config_file))  # the variable before ./hub.toml
    assert f"{config_file}: OK" in run("check-config").output
    assert run("check-config", "-c", "hub.toml").exit_code == 1  # -c before the variable
    monkeypatch.setenv("SOVEREIGN_HUB_CONFIG", str(tmp_path / "gone.toml"))
    assert run("check-config").output.strip() == (f"error: configuration file not found: {tmp_path / 'gone.toml'} "
                                                  f"(named by SOVEREIGN_HUB_CONFIG)")


def test_plugins_lists_builtins_with_hooks_and_types():
    result = run("plugins", "--json")
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["hub.default_plugins.webhook"]["destination_types"] == ["webhook"]
    assert rows["hub.default_plugins.jsonl"]["hooks"] == ["register_destinations"]
    assert rows["hub.default_plugins.hms_source"]["version"] == "built-in"
    assert rows["hub.default_plugins.hms_source"]["sources"] == ["hms"]
    text = run("plugins").output
    assert "types: webhook" in text and "types: jsonl" in text and "sources: hms" in text


def test_ingest_then_list_show_deliver_and_replay(config_file, tmp_path):
    path = payload_file(tmp_path, "end-of-call-report-full", "end-of-call-report", "end-of-call-report-full")
    result = run("ingest", "-c", config_file, path)
    assert result.exit_code == 0
    assert result.output.strip().splitlines()[-1] == "2 accepted, 1 duplicate"

    listing = run("reports", "list", "-c", config_file).output.splitlines()
    assert len(listing) == 2
    assert "+316*****789" in "\n".join(listing) and "+31623456789" not in "\n".join(listing)

    hub = Hub.from_path(str(config_file))
    try:
        # 2 x calls_file; broken (unreachable) twice: retry_delays = [0] retries at once, then dead
        assert hub.dispatcher.run_due() == 4
    finally:
        hub.close()

    dead = run("deliveries", "list", "--status", "dead", "-c", config_file).output.splitlines()
    assert len(dead) == 1 and "broken" in dead[0] and "ConnectionError" in dead[0]
    report_id = dead[0].split("report ")[1].split()[0]

    shown = json.loads(run("reports", "show", report_id, "-c", config_file).output)
    assert shown["call"]["id"] == "0b7e9a52-5d0c-4a8e-9f3e-2f1c6d8a4b11"
    assert {d["destination"]: d["status"] for d in shown["deliveries"]} == {"calls_file": "succeeded", "broken": "dead"}

    assert run("retry", "--dead", "-c", config_file).output.startswith("1 delivery queued")
    pending = run("deliveries", "list", "--status", "pending", "-c", config_file).output.splitlines()
    assert len(pending) == 1 and " broken " in pending[0]
    assert run("replay", report_id, "--destination", "calls_file", "-c", config_file).output.startswith("1 delivery")
    lines_before = (tmp_path / "calls.jsonl").read_text().count("\n")
    hub = Hub.from_path(str(config_file))
    try:
        hub.dispatcher.run_due()
    finally:
        hub.close()
    # the jsonl destination's state says "written": a replay does not append the line twice
    assert (tmp_path / "calls.jsonl").read_text().count("\n") == lines_before == 2


def test_replay_errors_are_one_line(config_file):
    assert run("replay", "-c", config_file).exit_code == 2
    result = run("replay", "no-such-report", "-c", config_file)
    assert result.exit_code == 1 and result.output.strip() == "Error: no report no-such-report"


def test_ingest_invalid_payload_names_file_and_field(config_file, tmp_path):
    bad = load_sample("end-of-call-report")
    del bad["message"]["call"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = run("ingest", "-c", config_file, path)
    assert result.exit_code == 1
    assert f"{path}#1: invalid payload:" in result.output and '"call"' in result.output


def test_ingest_json_lines(config_file, tmp_path):
    path = tmp_path / "calls.ndjson"
    path.write_text("\n".join(json.dumps(load_sample(n)) for n in ("end-of-call-report", "status-update")))
    assert run("ingest", "-c", config_file, path).output.strip().splitlines()[-1] == "1 accepted, 1 ignored"


def test_send_test_dry_run_prints_requests_and_sends_nothing(config_file, tmp_path):
    result = run("send-test", "broken", "--dry-run", "-c", config_file)
    assert result.exit_code == 0, result.output
    sent = json.loads(result.output[:result.output.rindex("]") + 1])
    # a webhook URL is a credential (secret_options): shown as [secret], like a token
    assert [(r["method"], r["url"]) for r in sent] == [("POST", "[secret]")]
    assert sent[0]["body"]["call"]["id"] == "0b7e9a52-5d0c-4a8e-9f3e-2f1c6d8a4b11"
    assert sent[0]["headers"]["webhook-id"].startswith("send-test-")


def test_send_test_for_disabled_destination_dry_run_shows_signature(config_file):
    result = run("send-test", "signed", "--dry-run", "--sample", "end-of-call-report", "-c", config_file)
    sent = json.loads(result.output[:result.output.rindex("]") + 1])
    assert sent[0]["headers"]["webhook-signature"].startswith("v1,")


def test_send_test_real_failure_is_one_line(config_file):
    result = run("send-test", "broken", "-c", config_file)
    assert result.exit_code == 1
    assert result.output.startswith("Error: retryable error: destination 'broken': ConnectionError")


def test_send_test_unknown_destination(config_file):
    result = run("send-test", "nope", "-c", config_file)
    assert result.exit_code == 1 and "no destination named 'nope'" in result.output


def test_analysis_plan_has_schema_and_placeholders(config_file):
    plan = json.loads(run("analysis-plan", "-c", config_file).output)["analysis_plan"]
    assert plan["structured_data_plan"]["enabled"] is True
    assert plan["structured_data_plan"]["schema"] == {"type": "object",
                                                      "properties": {"sentiment": {"type": "integer"}}}
    user = plan["structured_data_plan"]["messages"][1]["content"]
    assert "{{schema}}" in user and "{{transcript}}" in user and "{{ended_reason}}" in user
    assert plan["min_messages_threshold"] == 2


def test_analysis_plan_without_schema(tmp_path):
    path = tmp_path / "hub.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/h.db"\n[sources.hms]\nallow_unsigned = true\n')
    result = run("analysis-plan", "-c", path)
    assert result.exit_code == 1 and "[analysis] schema is not set" in result.output


@pytest.mark.parametrize("command", [["-c", "import hub.wsgi"], ["-m", "hub", "worker", "-c", "{config}"]])
def test_allow_unsigned_warning_is_logged_in_full_at_start(tmp_path, command):
    """The web process and the worker log the warning as a JSON line with its text; before
    logging was configured first, Python's last-resort handler printed only "config.warning"."""
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "hub.toml"
    path.write_text(f'[store]\nurl = "{migrated(f"sqlite:///{tmp_path}/h.db")}"\n[sources.hms]\nallow_unsigned = true\n')
    env = {**os.environ, "SOVEREIGN_HUB_CONFIG": str(path)}
    args = [sys.executable, *(a.format(config=path) for a in command)]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines = []
    try:  # up to the warning, or to the worker's start (logged after it), or to the end of output
        while (text := proc.stderr.readline()) and "config.warning" not in text and "dispatcher.started" not in text:
            lines.append(text)
        lines.append(text)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    line = json.loads(lines[-1])
    assert line["event"] == "config.warning" and line["level"] == "warning", lines
    assert "allow_unsigned = true" in line["message"] and "WITHOUT a signature check" in line["message"]


def test_the_readme_try_it_commands_work_as_written(tmp_path):
    """The Quickstart's second shell, run from a checkout where `make run` has made hub.toml and
    the secrets (and `serve` has migrated the store)."""
    import os
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = re.search(r"Try it with the platform's sample report.*?```sh\n(.*?)```", readme, re.S).group(1)
    for name in (".venv", "hub"):
        (tmp_path / name).symlink_to(root / name)
    (tmp_path / "hub.toml").write_text((root / "config.example.toml").read_text())
    (tmp_path / ".webhook-secret").write_text("whsec_readme_test\n")
    (tmp_path / ".admin-token").write_text("readme-admin-token\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SOVEREIGN_HUB_CONFIG", "HMS_WEBHOOK_SECRET",
                                                            "HUB_ADMIN_TOKEN")}
    export, *commands = block.splitlines()  # the first line exports the secrets the config names
    script = "\n".join(["set -e", export, ".venv/bin/sovereign-hub db upgrade", *commands])
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 accepted" in done.stdout
    assert "end-of-call-report" in done.stdout  # reports list
    assert "dry run:" in done.stderr  # send-test calls_file --dry-run


def test_an_empty_listing_says_so(config_file):
    assert run("reports", "list", "-c", config_file).output == "no reports\n"
    assert run("deliveries", "list", "--status", "dead", "--destination", "broken", "-c", config_file).output == (
        "no deliveries with status dead, destination broken\n")


def test_stats_csv_and_json_carry_the_analytics(config_file, tmp_path):
    run("ingest", payload_file(tmp_path, "end-of-call-report-full"), "-c", config_file)
    rows = run("stats", "--days", "2", "--csv", "-c", config_file).output.splitlines()
    assert rows[0] == "figure,key,value" and "duration,5 to 10 min,1" in rows
    figures = json.loads(run("stats", "--json", "--line", "+31850835037", "-c", config_file).output)
    assert figures["analytics"]["calls"] == 1 and figures["analytics"]["line"] == "+31850835037"
    assert run("stats", "--json", "--line", "0850835037", "-c", config_file).output.startswith("Error: line: must be")
