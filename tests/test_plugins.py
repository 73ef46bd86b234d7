"""The plugin system, seen through a real distribution installed from tests/fixtures/sample_plugin."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hub import hookspecs
from hub.plugins import collect, make_manager
from hub.testing import migrated

FIXTURE = Path(__file__).parent / "fixtures" / "sample_plugin"
DOCS = Path(__file__).parents[1] / "docs" / "plugin_hooks.md"
HOOKS = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "sovereign_hub_spec"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-installs the sample distribution into its own folder; returns an env that sees it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(FIXTURE)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    return env


def hub_cmd(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hub", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_entry_point_plugin_is_discovered_with_version_hooks_and_types(installed):
    result = hub_cmd(installed, "plugins", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    sample = rows["sample"]
    assert sample["distribution"] == "hub-sample-plugin" and sample["version"] == "1.2.3"
    assert sample["destination_types"] == ["recorder"]
    assert sample["sources"] == ["plain"]
    assert sample["hooks"] == HOOKS
    assert "No module named 'a_module_that_is_not_installed'" in rows["broken"]["error"]
    text = hub_cmd(installed, "plugins").stdout
    assert "broken: FAILED TO LOAD" in text


def test_every_hook_of_an_installed_plugin_fires(installed, tmp_path):
    """End to end in a fresh interpreter: both sources, the destination, observers, route, command."""
    log = tmp_path / "hooks.jsonl"
    config = tmp_path / "hub.toml"
    config.write_text(textwrap.dedent(f"""
        [store]
        url = "{migrated(f"sqlite:///{tmp_path / 'hub.db'}")}"
        [sources.hms]
        secret = "whsec_test_secret_12345"
        [sources.plain]
        secret = "plain-token-0123456"
        [destinations.rec]
        type = "recorder"
        label = "first"
    """))
    script = textwrap.dedent(f"""
        import json
        from hub.app import create_app
        from hub.testing import load_sample, signed_headers
        app = create_app({str(config)!r})
        client = app.test_client()
        body = json.dumps(load_sample("end-of-call-report-full")).encode()
        print(client.post("/webhooks/hms", data=body, headers=signed_headers(body)).status_code)
        plain = json.dumps({{"call_id": "c-1", "summary": "hi"}}).encode()
        print(client.post("/webhooks/plain", data=plain,
                          headers={{"Content-Type": "application/json", "X-Token": "nope"}}).status_code)
        print(client.post("/webhooks/plain", data=plain,
                          headers={{"Content-Type": "application/json", "X-Token": "plain-token-0123456"}}).status_code)
        print(app.hub.dispatcher.run_due())
        print(client.get("/sample/ping").get_json())
    """)
    env = {**installed, "SAMPLE_PLUGIN_LOG": str(log)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:5] == ["202", "401", "202", "2", "{'pong': True}"]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    hooks = [e["hook"] for e in events]
    assert hooks[0] == "startup" and events[0]["destinations"] == ["rec"]
    assert hooks.count("report_received") == 2 and hooks.count("deliver") == 2
    assert hooks.count("delivery_finished") == 2
    assert {e["source"] for e in events if e["hook"] == "report_received"} == {"hms", "plain"}
    assert {e["status"] for e in events if e["hook"] == "delivery_finished"} == {"succeeded"}

    command = hub_cmd(env, "sample-hello", "-c", config)
    assert command.stdout.strip() == "hello from sample; 2 report(s)"


def test_hub_starts_without_a_broken_plugin_unless_configured(installed, tmp_path):
    config = tmp_path / "hub.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/h.db"\n[sources.hms]\nsecret = "whsec_x_secret_0123"\n')
    assert hub_cmd(installed, "check-config", "-c", config).returncode == 0
    config.write_text(config.read_text() + '[destinations.missing]\ntype = "broken-thing"\n')
    result = hub_cmd(installed, "check-config", "-c", config)
    assert result.returncode == 1
    assert "destinations.missing.type: unknown destination type 'broken-thing'" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_the_distribution_it_is_not_there():
    assert "recorder" not in collect(make_manager()).destinations


def test_hookspecs_check_pending_rejects_a_misspelt_hook():
    import pluggy

    class Misspelt:
        @hookspecs.hookimpl
        def register_destination(self, register):  # missing "s"
            pass

    pm = make_manager(load_entry_points=False)
    pm.register(Misspelt())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_two_plugins_registering_one_type_is_a_clear_error():
    from hub import Destination, hookimpl
    from hub.errors import ConfigError

    class Other(Destination):
        type = "webhook"

    class Plugin:
        @hookimpl
        def register_destinations(self, register):
            register(Other)

    pm = make_manager(load_entry_points=False)
    pm.register(Plugin(), name="impostor")
    with pytest.raises(ConfigError, match="'webhook' is registered by both"):
        collect(pm)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    """datasette's rule: a hook without a section in docs/plugin_hooks.md fails the build."""
    text = DOCS.read_text()
    spec = getattr(hookspecs, hook)
    import inspect

    signature = f"{hook}({', '.join(inspect.signature(spec).parameters)})"
    assert f"## {signature}" in text, f"docs/plugin_hooks.md has no '## {signature}' section"


def test_every_hook_is_implemented_by_the_tested_sample_plugin():
    source = (FIXTURE / "hub_sample_plugin" / "__init__.py").read_text()
    for hook in HOOKS:
        assert f"def {hook}(" in source, hook


def test_register_plugin_fixture_runs_an_uninstalled_plugin_in_the_app(register_plugin, hub_config):
    """hub.testing's ``register_plugin``: a plugin object's destination type and observer are live."""
    import hub
    from hub.testing import load_sample, signed_headers

    seen, delivered = [], []

    class Collector(hub.Destination):
        type = "collector"

        def deliver(self, report, ctx):
            delivered.append(report.call.id)
            return hub.Result("collected")

    class Plugin:
        @hub.hookimpl
        def register_destinations(self, register):
            register(Collector)

        @hub.hookimpl
        def report_received(self, report, hub):
            seen.append(report.id)

    hub_config["destinations"] = {"bucket": {"type": "collector"}}
    app = register_plugin(Plugin())
    body = json.dumps(load_sample("end-of-call-report")).encode()
    response = app.test_client().post("/webhooks/hms", data=body, headers=signed_headers(body))
    assert response.status_code == 202
    assert response.get_json()["deliveries"] == [{"destination": "bucket", "status": "pending"}]
    assert seen == [response.get_json()["report_id"]]
    assert delivered == [], "the request never calls a destination: the dispatcher does, afterwards"
    assert app.hub.dispatcher.run_due() == 1
    assert delivered == [load_sample("end-of-call-report")["message"]["call"]["id"]]
