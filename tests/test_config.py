"""The TOML configuration: secrets, validation, and errors that name the key and the fix."""
import textwrap

import pytest

from hub.config import ConfigProblems, ServerConfig, load_config
from hub.plugins import collect, make_manager
from hub.redaction import redact


@pytest.fixture(scope="module")
def registry():
    return collect(make_manager())


SIGNED = '[sources.hms]\nsecret = "whsec_literal_secret"\n'


def write(tmp_path, text, *, signed=False):
    """The file ``text`` (dedented); ``signed`` puts a literal webhook secret before it."""
    path = tmp_path / "hub.toml"
    path.write_text((SIGNED if signed else "") + textwrap.dedent(text))
    return path


def problems(path, registry):
    with pytest.raises(ConfigProblems) as info:
        load_config(path, registry)
    return info.value.problems


def test_example_config_loads(registry, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("HMS_WEBHOOK_SECRET", "whsec_example_secret")
    monkeypatch.setenv("HUB_ADMIN_TOKEN", "example-admin-token-0123")
    config = load_config(Path(__file__).parents[1] / "config.example.toml", registry)
    assert config.server.port == 8080 and config.store.url == "sqlite:///hub.db"
    assert config.store.sqlite_synchronous == "NORMAL"
    assert config.dispatch.retry_delays[:3] == [5, 30, 120]
    assert config.max_attempts == 11
    assert config.sources["hms"]["secret"] == "whsec_example_secret"
    assert config.admin.token == "example-admin-token-0123"
    assert config.analysis.schema["properties"]["sentiment"]["maximum"] == 10
    assert [d.name for d in config.enabled_destinations()] == ["calls_file"]


def test_example_config_shows_every_built_in_option(registry):
    """Every key of the core sections, [sources.hms] and the built-in destination types is in
    config.example.toml, set or commented out (a table counts as ``[section.key]``)."""
    import re
    from pathlib import Path

    from hub.config import SECTIONS
    from hub.sources import SourceConfig

    text = (Path(__file__).parents[1] / "config.example.toml").read_text()
    keys = [(section, key) for section, schema in SECTIONS.items() for key in schema().fields]
    keys += [("sources.hms", key) for key in SourceConfig().fields]
    keys += [(kind, key) for kind in ("webhook", "jsonl") for key in registry.destinations[kind].Config().fields]
    missing = [f"{where}.{key}" for where, key in keys
               if not re.search(rf"^#?\s*{key}\s*=", text, re.MULTILINE) and f"[{where}.{key}]" not in text]
    assert missing == []


@pytest.mark.parametrize("text, expected", [
    ('worker_class = "eventlet"', "server.worker_class: Must be one of: gevent, sync."),
    ("header_timeout_seconds = 0", "server.header_timeout_seconds: Must be greater than or equal to 1"),
    ("header_timeout_seconds = 2.5", "server.header_timeout_seconds: 2.5 is not a whole number such as 30"),
])
def test_server_model_keys_are_checked(tmp_path, registry, text, expected):
    found = problems(write(tmp_path, signed=True, text=f"[server]\n{text}\n"), registry)
    assert any(line.startswith(expected) for line in found), found


def test_defaults_with_a_minimal_file(tmp_path, registry):
    path = write(tmp_path, signed=True, text="""
    """)
    config = load_config(path, registry)
    assert config.server == ServerConfig(host="127.0.0.1", port=8080, max_body_bytes=1048576, metrics_token=None,
                                         public_url=None, workers=2, worker_class="gevent",
                                         header_timeout_seconds=10, trusted_proxies=0)
    assert config.dispatch.backend == "embedded" and config.dispatch.workers == 4
    assert config.sources["hms"]["tolerance_seconds"] == 300
    assert config.settings.public_url == "http://127.0.0.1:8080"


def test_env_secret_is_resolved_and_redacted(tmp_path, registry, monkeypatch):
    monkeypatch.setenv("MY_HOOK_SECRET", "s3cr3t-value-from-env")
    path = write(tmp_path, """
        [sources.hms]
        secret = { env = "MY_HOOK_SECRET" }
    """)
    assert load_config(path, registry).sources["hms"]["secret"] == "s3cr3t-value-from-env"
    assert redact("token s3cr3t-value-from-env leaked") == "token [secret] leaked"


def test_literal_webhook_secret_and_admin_token_are_redacted_too(tmp_path, registry):
    path = write(tmp_path, """
        [sources.hms]
        secret = "literal-hook-secret-42"
        [admin]
        token = "literal-admin-token-0042"
    """)
    load_config(path, registry)
    assert redact("a literal-hook-secret-42 b literal-admin-token-0042") == "a [secret] b [secret]"


def test_file_secret_is_read_relative_to_the_config(tmp_path, registry):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hms").write_text("file-secret-value\n")
    path = write(tmp_path, """
        [sources.hms]
        secret = { file = "secrets/hms" }
    """)
    assert load_config(path, registry).sources["hms"]["secret"] == "file-secret-value"


def test_missing_env_names_key_and_variable(tmp_path, registry, monkeypatch):
    monkeypatch.delenv("HUBSPOT_TOKEN_X", raising=False)
    path = write(tmp_path, """
        [sources.hms]
        secret = { env = "HUBSPOT_TOKEN_X" }
    """)
    assert problems(path, registry) == ["sources.hms.secret: environment variable HUBSPOT_TOKEN_X is not set"]


def test_missing_secret_file_names_the_file(tmp_path, registry):
    path = write(tmp_path, """
        [sources.hms]
        secret = { file = "nope.txt" }
    """)
    [problem] = problems(path, registry)
    assert problem.startswith("sources.hms.secret: cannot read secret file") and "nope.txt" in problem


def test_every_problem_is_listed_with_its_key(tmp_path, registry):
    path = write(tmp_path, """
        [server]
        port = "eighty"
        colour = "blue"

        [dispatch]
        backend = "carrier-pigeon"

        [sources.hms]
        tolerance_seconds = 0

        [surprise]

        [destinations.file]
        type = "jsonl"
        paht = "calls.jsonl"
        when = "analysis.sentiment <="

        [destinations.crm]
        type = "no-such-crm"

        [destinations.hook]
        type = "webhook"
        url = "not a url"
        secret = "plain"
        events = ["end-of-call-report", "call-started"]
    """)
    found = problems(path, registry)
    joined = "\n".join(found)
    for expected in [
        'server.port: "eighty" is not a whole number such as 30',
        "server.colour: unknown key (known: header_timeout_seconds, host, max_body_bytes, metrics_token, port, public_url, trusted_proxies, worker_class, workers)",
        'dispatch.backend: must be "embedded" (delivery threads beside the receiver) or "celery"',
        "sources.hms.tolerance_seconds:",
        "sources.hms.secret: no webhook secret is set",
        "surprise: unknown section",
        "destinations.file.paht: unknown key; did you mean 'path'?",
        "destinations.file.when: not a valid JMESPath expression",
        "destinations.crm.type: unknown destination type 'no-such-crm'",
        "destinations.hook.url: the value given is not an absolute http(s) URL such as https://example.com/path",
        'destinations.hook.secret: must look like "whsec_<base64>"',
        "destinations.hook.events: unknown event type(s) call-started",
    ]:
        assert expected in joined, expected
    assert "destinations.file.path" not in joined  # the misspelling says it once
    assert "not a url" not in joined  # a webhook's URL is a secret: never quoted


def test_not_toml_names_the_file(tmp_path, registry):
    path = write(tmp_path, "[server\nport = 1\n")
    [problem] = problems(path, registry)
    assert str(path) in str(ConfigProblems([problem], str(path))) and "not valid TOML" in problem


def test_missing_file(tmp_path, registry):
    assert problems(tmp_path / "absent.toml", registry) == [f"configuration file not found: {tmp_path / 'absent.toml'}"]


def test_invalid_analysis_schema(tmp_path, registry):
    path = write(tmp_path, signed=True, text="""
        [analysis.schema]
        type = "banana"
    """)
    [problem] = problems(path, registry)
    assert problem.startswith("analysis.schema: not a valid JSON Schema")


def test_several_instances_of_one_type(tmp_path, registry):
    path = write(tmp_path, signed=True, text="""
        [destinations.all_calls]
        type = "jsonl"
        path = "all.jsonl"
        [destinations.unhappy]
        type = "jsonl"
        path = "unhappy.jsonl"
        when = "analysis.sentiment <= 3"
        [destinations.off]
        type = "jsonl"
        path = "off.jsonl"
        enabled = false
    """)
    config = load_config(path, registry)
    assert [d.name for d in config.enabled_destinations()] == ["all_calls", "unhappy"]
    assert config.destinations["unhappy"].when.expression == "analysis.sentiment <= 3"
    assert config.destinations["off"].enabled is False


def test_type_defaults_to_table_name(tmp_path, registry):
    path = write(tmp_path, signed=True, text="""
        [destinations.jsonl]
        path = "calls.jsonl"
    """)
    assert load_config(path, registry).destinations["jsonl"].type == "jsonl"


def test_a_missing_variable_is_one_problem_not_also_the_schemas(tmp_path, registry, monkeypatch):
    monkeypatch.delenv("NO_SUCH_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("NO_SUCH_SLACK_TOKEN", raising=False)
    path = write(tmp_path, signed=True, text="""
        [admin]
        token = { env = "NO_SUCH_ADMIN_TOKEN" }
        [destinations.alerts]
        type = "slack"
        token = { env = "NO_SUCH_SLACK_TOKEN" }
        channel = "#calls"
    """)
    assert problems(path, registry) == ["admin.token: environment variable NO_SUCH_ADMIN_TOKEN is not set",
                                        "destinations.alerts.token: environment variable NO_SUCH_SLACK_TOKEN is not set"]


def test_a_bad_url_is_quoted_with_what_is_expected_and_names_get_a_did_you_mean(tmp_path, registry):
    path = write(tmp_path, text="""
        [dispatcher]
        [sources.hms]
        allow_unsigned = true
        api_url = "htps//api.example.com"
        [destinations.crm]
        type = "hubspt"
    """)
    assert problems(path, registry) == [
        "dispatcher: unknown section; did you mean 'dispatch'? (known: admin, analysis, answers, dispatch, logging, phone, "
        "privacy, ratelimit, server, store, sources, destinations)",
        'sources.hms.api_url: "htps//api.example.com" is not an absolute http(s) URL such as https://example.com/path',
        "destinations.crm.type: unknown destination type 'hubspt'; did you mean 'hubspot'? (installed: "
        + ", ".join(sorted(registry.destinations)) + "); install the plugin that provides it",
    ]


def test_a_secret_written_in_the_file_warns_naming_the_key_and_the_env_form(tmp_path, registry, monkeypatch):
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/x")
    path = write(tmp_path, text="""
        [store]
        url = "postgresql+psycopg://hub:pa55word@127.0.0.1/hub"
        [admin]
        token = "an-admin-token-written-here"
        [sources.hms]
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        [destinations.alerts]
        type = "slack"
        webhook_url = { env = "SLACK_WEBHOOK_URL" }
    """)
    warnings = load_config(path, registry).warnings
    assert warnings == [
        'admin.token: a secret written in the configuration file; keep it out of the file: '
        'token = { env = "ADMIN_TOKEN" } (or { file = "path" })',
        'sources.hms.secret: a secret written in the configuration file; keep it out of the file: '
        'secret = { env = "HMS_SECRET" } (or { file = "path" })',
        'store.url: a password written in the configuration file; write url = { env = "STORE_URL" } '
        '(or { file = "path" }) instead',
    ]
