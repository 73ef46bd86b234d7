"""The pytest plugin ``hub.testing``: it loads only the plugins a test asks for, its runner is the
real CLI, it has no autouse fixture, and it breaks nobody's pytest where the hub is installed
without its test extra."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hub.testing
from hub.testing import load_sample

REPO = Path(__file__).resolve().parents[1]


def test_app_loads_the_built_in_plugins_only_by_default(app):
    assert sorted(app.hub.registry.destinations) == ["jsonl", "webhook"]
    assert sorted(name for name, _ in app.hub.pm.list_name_plugin()) == [
        "hub.default_plugins.answer_tools", "hub.default_plugins.hms_source", "hub.default_plugins.jsonl",
        "hub.default_plugins.webhook"]


@pytest.mark.hub_plugins("slack")
def test_the_hub_plugins_marker_adds_installed_plugins_by_name(app):
    assert sorted(app.hub.registry.destinations) == ["jsonl", "slack", "webhook"]


@pytest.mark.hub_plugins("no-such-plugin")
def test_an_unknown_plugin_name_is_a_clear_error(request):
    with pytest.raises(LookupError, match="no plugin 'no-such-plugin' is installed .* \\(installed: .*slack"):
        request.getfixturevalue("app")


def test_runner_invokes_the_real_command_group_over_hub_config(runner, hub_config, signed_post, tmp_path):
    hub_config["destinations"] = {"archive": {"type": "jsonl", "path": str(tmp_path / "calls.jsonl")}}
    checked = runner.invoke(["check-config"])
    assert checked.exit_code == 0, checked.output
    assert "OK (1 enabled destination(s): archive (jsonl))" in checked.output
    assert runner.invoke(["reports", "list"]).output == "no reports\n"  # an empty listing says so
    result = runner.invoke(["replay", "nope"])
    assert (result.exit_code, result.output.strip()) == (1, "Error: no report nope")


def test_runner_sees_what_the_app_stored(app, runner):
    body = load_sample("end-of-call-report-full")
    source = app.hub.sources["hms"]
    report_id = app.hub.ingest("hms", source.schema.load(body), body).report_id
    listed = runner.invoke(["reports", "list"])
    assert listed.exit_code == 0 and listed.output.startswith(report_id)


def test_no_fixture_of_the_plugin_is_autouse():
    tree = ast.parse(Path(hub.testing.__file__).read_text())
    autouse = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)
               and any(k.arg == "autouse" for k in node.keywords)]
    assert autouse == []


def _pip_env() -> dict:
    """pip as ``make install`` runs it (the machine's index configuration), with its cache."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST"))}


@pytest.mark.fresh_venv
def test_pytest_runs_unrelated_tests_where_the_hub_is_installed_without_extras(tmp_path):
    """The hub installed WITHOUT its test extra (no ``responses``) beside pytest, in a fresh venv:
    an unrelated project's tests pass, with the plugin loaded and with ``-p no:sovereign_hub``.
    Slow (a venv and a pip install, about 30-60 s; pip's cache and local index are used)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "hub", source / "hub", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", str(source), "pytest"],
                             env=_pip_env(), capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    missing = subprocess.run([python, "-c", "import responses"], capture_output=True, text=True)
    assert missing.returncode != 0, "the test extra must not be installed for this check"

    project = tmp_path / "project"
    project.mkdir()
    (project / "test_unrelated.py").write_text(textwrap.dedent("""
        def test_arithmetic():
            assert 1 + 1 == 2
    """))
    for switch in ([], ["-p", "no:sovereign_hub"]):
        run = subprocess.run([python, "-m", "pytest", "-q", "test_unrelated.py", *switch], cwd=project,
                             env=_pip_env(), capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "1 passed" in run.stdout
    fixtures = subprocess.run([python, "-m", "pytest", "--fixtures", "test_unrelated.py"], cwd=project,
                              env=_pip_env(), capture_output=True, text=True, timeout=120).stdout
    assert "hub_config" in fixtures and "mocked_http" in fixtures  # the plugin is there...
    switched_off = subprocess.run([python, "-m", "pytest", "--fixtures", "-p", "no:sovereign_hub",
                                   "test_unrelated.py"], cwd=project, env=_pip_env(), capture_output=True,
                                  text=True, timeout=120).stdout
    assert "hub_config" not in switched_off  # ...and -p no:sovereign_hub switches it off
