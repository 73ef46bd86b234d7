"""What the security review probed: sessions that end, throttled logins and tokens, weak webhook
secrets, the metrics token, /api caching and the template sandbox. Real HTTP through Flask's
test client over a real SQLite store."""
from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hub import sessions
from hub.cli import cli
from hub.errors import Permanent
from hub.sources import SourceConfig
from hub.store import utcnow
from hub.templates import MAX_RENDERED_CHARS, Template
from hub.testing import toml_text

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client, token: str = TOKEN):
    form = client.get("/login")
    return client.post("/login", data={"csrf_token": csrf_of(form.get_data(as_text=True)), "token": token})


# --- sessions that end --------------------------------------------------------------------------

def test_an_old_cookie_reads_nothing_and_posts_nothing_after_logout(app):
    alice = app.test_client()
    assert log_in(alice).status_code == 303
    cookie = alice.get_cookie("hub_session").value
    csrf = csrf_of(alice.get("/").get_data(as_text=True))
    assert alice.post("/logout", data={"csrf_token": csrf}).status_code == 303

    thief = app.test_client()
    thief.set_cookie("hub_session", cookie)
    for path in ("/", "/deliveries?status=dead"):
        answer = thief.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].startswith("/login"), path
    retried = thief.post("/deliveries/retry-dead", data={"csrf_token": csrf})
    assert retried.status_code == 302 and retried.headers["Location"].startswith("/login")


def test_a_session_ends_at_its_absolute_lifetime_however_busy(app):
    client = app.test_client()
    log_in(client)
    assert client.get("/").status_code == 200
    with app.hub.store.write() as conn:  # 12 hours pass
        conn.execute(sa.text("UPDATE admin_sessions SET expires_at = :t"), {"t": utcnow() - timedelta(seconds=1)})
    assert client.get("/").status_code == 302


def test_the_store_keeps_only_a_hash_of_the_session_id(app):
    store = app.hub.store
    session_id = sessions.start(store, timedelta(hours=12))
    with store.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT id_hash, created_at, expires_at FROM admin_sessions")).all()
    assert len(stored) == 1 and session_id not in stored[0].id_hash and len(stored[0].id_hash) == 64
    assert sessions.is_live(store, session_id) and not sessions.is_live(store, session_id + "x")
    sessions.end(store, session_id)
    assert not sessions.is_live(store, session_id)


# --- throttled logins and tokens ------------------------------------------------------------------

def test_wrong_logins_are_throttled_with_a_growing_retry_after_and_logged(app, caplog):
    client = app.test_client()
    caplog.set_level(logging.WARNING, logger="hub.views.auth_throttle")
    answers = [log_in(client, token="wrong-guess-number-1").status_code for _ in range(5)]
    assert answers == [401] * 5
    blocked = log_in(client, token="wrong-guess-number-1")
    assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "1"
    failures = [r for r in caplog.records if r.getMessage() == "auth.failed"]
    assert len(failures) == 5 and failures[0].fields == {"client": "127.0.0.1", "path": "/login",
                                                         "reason": "wrong_admin_token"}
    assert "wrong-guess-number-1" not in caplog.text
    throttle = app.extensions["auth_throttle"]
    throttle._failures["127.0.0.1"].last -= 1.5  # the second passes; the next failure doubles the wait
    assert log_in(client, token="wrong-guess-number-1").status_code == 401
    again = log_in(client, token=TOKEN)  # even the right token waits its turn
    assert again.status_code == 429 and again.headers["Retry-After"] == "2"
    other = app.test_client()
    form = other.get("/login", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.post("/login", environ_base={"REMOTE_ADDR": "10.0.0.9"},
                      data={"csrf_token": csrf_of(form.get_data(as_text=True)), "token": TOKEN}).status_code == 303


def test_bad_api_tokens_are_throttled_and_the_json_names_the_wait(client, caplog):
    caplog.set_level(logging.WARNING, logger="hub.views.auth_throttle")
    for _ in range(5):
        assert client.get("/api/reports", headers={"Authorization": "Bearer guessed-token-123456"}).status_code == 401
    blocked = client.get("/api/reports", headers=AUTH)
    assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "1"
    assert blocked.json == {"error": "too_many_attempts",
                            "message": "Too many failed attempts from this address; try again in 1 s.",
                            "details": {"retry_after_seconds": 1}}
    assert "guessed-token-123456" not in caplog.text
    assert [r.fields["reason"] for r in caplog.records if r.getMessage() == "auth.failed"] == ["invalid_token"] * 5


def test_a_request_without_a_token_is_not_a_guess(client):
    for _ in range(10):
        assert client.get("/api/reports").status_code == 401
    assert client.get("/api/reports", headers=AUTH).status_code == 200


# --- weak webhook secrets -----------------------------------------------------------------------

@pytest.mark.parametrize("secret", ["abc", " ", "   fifteen-chars  "])
def test_a_weak_webhook_secret_is_refused_naming_the_key(hub_config, tmp_path, secret):
    hub_config["sources"]["hms"]["secret"] = secret
    path = tmp_path / "hub.toml"
    path.write_text(toml_text(hub_config))
    result = CliRunner().invoke(cli, ["check-config", "-c", str(path)])
    assert result.exit_code != 0
    assert "sources.hms.secret: the webhook secret is too weak" in result.output and "16 or more" in result.output
    serve = CliRunner().invoke(cli, ["serve", "-c", str(path)])
    assert serve.exit_code != 0 and "sources.hms.secret: the webhook secret is too weak" in serve.output


# --- /metrics and /api headers ------------------------------------------------------------------

@pytest.fixture
def metrics_app(hub_config, register_plugin):
    hub_config["server"] = {"metrics_token": "metrics-token-0123456789"}
    return register_plugin()


def test_metrics_token_guards_metrics(metrics_app):
    client = metrics_app.test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.json["details"] == {"config_key": "server.metrics_token"}
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-one-0123456789"}).status_code == 401
    good = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-0123456789"})
    assert good.status_code == 200 and b"hub_reports" in good.data


def test_metrics_are_open_without_a_metrics_token(client):
    assert client.get("/metrics").status_code == 200


def test_api_answers_are_never_cached(client):
    for headers in (AUTH, {}):
        assert client.get("/api/reports", headers=headers).headers["Cache-Control"] == "no-store"


# --- templates ----------------------------------------------------------------------------------

def test_a_template_cannot_change_the_report():
    report = {"messages": [{"role": "user", "content": "hi"}], "analysis": {"sentiment": 3}}
    for source in ("{{ messages.append(1) }}", "{{ analysis.update({'sentiment': 9}) }}", "{{ messages.pop() }}"):
        with pytest.raises(Permanent, match="template could not be rendered"):
            Template(source).render(report)
    assert report == {"messages": [{"role": "user", "content": "hi"}], "analysis": {"sentiment": 3}}


@pytest.mark.parametrize("source", ['{{ "x" * 1000000000 }}', "{{ 2 ** 100000 }}",
                                    "{% for i in range(90000) %}{{ summary }}{% endfor %}"])
def test_a_rendered_template_is_capped(source):
    with pytest.raises(Permanent) as refused:
        Template(source).render({"summary": "long enough"})
    assert str(MAX_RENDERED_CHARS) in str(refused.value) or "too large" in str(refused.value)


def test_an_ordinary_template_still_renders():
    assert Template("{{ summary }} ({{ 3 * 4 }}, {{ '-' * 3 }})").render({"summary": "Called back"}) == \
        "Called back (12, ---)"


# --- a source that cannot read what its schema let through ----------------------------------------

class BrittleSource:
    """A third-party source with a bug: its schema takes any object, its normalize indexes into it."""

    name = "brittle"
    events = ("end-of-call-report",)

    def __init__(self):
        from marshmallow import INCLUDE, Schema

        class Anything(Schema):
            class Meta:
                unknown = INCLUDE

        self.schema = Anything()

    Config = SourceConfig

    def configure(self, settings):
        pass

    def verify(self, body, headers, now):
        pass

    def event_of(self, payload):
        return "end-of-call-report"

    def event_key_of(self, payload):
        return ""

    def call_id_of(self, payload):
        return str(payload.get("id"))

    def normalize(self, payload, **_):
        return payload["call"]["id"]  # KeyError, TypeError... on a payload it did not expect


def test_a_source_that_cannot_normalize_a_payload_is_a_422_and_stores_nothing(hub_config, register_plugin):
    import hub as hub_api

    source = BrittleSource()

    class Plugin:
        @hub_api.hookimpl
        def register_sources(self, register):
            register(source)

    hub_config["sources"]["brittle"] = {"allow_unsigned": True}
    app = register_plugin(Plugin())
    answer = app.test_client().post("/webhooks/brittle", json={"call": ["not", "an", "object"]})
    assert answer.status_code == 422 and answer.json == {
        "error": "unusable_payload",
        "message": "The brittle source could not read this payload (TypeError); a field has a type or shape the "
                   "source does not expect.",
        "details": {"source": "brittle"}}
    with app.hub.store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reports")).scalar_one() == 0
