"""One operator action, three front ends: the admin API, the dashboard and the CLI give the same
answer and change the same rows, because each only translates ``hub.operations``."""
from __future__ import annotations

import json
import textwrap
from datetime import timedelta

import pytest
from click.testing import CliRunner

from hub import operations as ops
from hub import sessions
from hub.app import create_app
from hub.cli import cli
from hub.store import utcnow
from hub.testing import TEST_SECRET, closed_port, load_sample, migrated, signed_headers

TOKEN = "test-admin-token-0123456789"
FRONT_ENDS = ["api", "dashboard", "cli"]


@pytest.fixture
def config_file(tmp_path):
    """A hub with an enabled jsonl file, a webhook nobody answers, and a disabled destination."""
    path = tmp_path / "hub.toml"
    path.write_text(textwrap.dedent(f"""
        [store]
        url = "{migrated(f"sqlite:///{tmp_path / 'hub.db'}")}"
        [sources.hms]
        secret = "{TEST_SECRET}"
        [admin]
        token = "{TOKEN}"
        [dispatch]
        retry_delays = [0]
        max_attempts = 1
        [destinations.archive]
        type = "jsonl"
        path = "{tmp_path / 'calls.jsonl'}"
        [destinations.hook]
        type = "webhook"
        url = "http://127.0.0.1:{closed_port()}/calls"
        [destinations.off]
        type = "jsonl"
        path = "{tmp_path / 'off.jsonl'}"
        enabled = false
    """))
    return path


@pytest.fixture
def app(config_file):
    application = create_app(str(config_file))
    application.config["TESTING"] = True
    yield application
    application.hub.close()


@pytest.fixture
def stored(app):
    """One report: archive succeeded, hook dead, and a dead delivery to "gone", a destination
    that is no longer configured. Returns the report id."""
    hub = app.hub
    raw = json.dumps(load_sample("end-of-call-report-full")).encode()
    answer = app.test_client().post("/webhooks/hms", data=raw, headers=signed_headers(raw)).get_json()
    payload = load_sample("end-of-call-report-full")
    payload["message"]["call"]["id"] = "call-of-gone"
    source = hub.sources["hms"]
    other = source.normalize(source.schema.load(payload), raw=payload, report_id="r-gone", received_at=utcnow(),
                             normalizer=hub.normalizer)
    hub.store.insert_report(other, ["gone"])
    assert hub.dispatcher.run_due() == 3
    return answer["report_id"]


def rows(app) -> dict[str, str]:
    return {f"{d.report_id}/{d.destination}": d.status for d in app.hub.store.list_deliveries(limit=None)}


def act(front_end: str, app, config_file, action: str, *args: str) -> str:
    """Run ``action`` ("replay" report [destination] | "retry-dead" | "retry" delivery) through one
    front end; returns what it said (the API's error code, the dashboard's flash, the CLI's line)."""
    if front_end == "api":
        client = app.test_client()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        if action == "replay":
            response = client.post(f"/api/reports/{args[0]}/replay", headers=auth,
                                   json={"destination": args[1]} if len(args) > 1 else None)
        elif action == "retry":
            response = client.post(f"/api/deliveries/{args[0]}/retry", headers=auth)
        else:
            response = client.post("/api/deliveries/retry-dead", headers=auth)
        body = response.get_json()
        return f"{response.status_code} {body.get('error') or body.get('message') or body['status']}: " \
               f"{body.get('message', '')}"
    if front_end == "dashboard":
        client = app.test_client()
        with client.session_transaction() as session:  # logged in: a live session in the store
            session.update(sid=sessions.start(app.hub.store, timedelta(hours=1)), csrf="csrf-token")
        form = {"csrf_token": "csrf-token"}
        if action == "replay":
            path = f"/reports/{args[0]}/replay"
            form["destination"] = args[1] if len(args) > 1 else ""
        elif action == "retry":
            path = f"/deliveries/{args[0]}/retry"
        else:
            path = "/deliveries/retry-dead"
        assert client.post(path, data=form).status_code == 303
        with client.session_transaction() as session:
            [(category, message)] = session["_flashes"]
        return f"{category}: {message}"
    if action == "replay":
        command = ["replay", args[0], *(["--destination", args[1]] if len(args) > 1 else [])]
    else:
        command = ["retry", args[0]] if action == "retry" else ["retry", "--dead"]
    result = CliRunner().invoke(cli, [*command, "-c", str(config_file)])
    assert "Traceback" not in result.output
    return f"exit {result.exit_code}: {result.output.strip()}"


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_replay_to_a_disabled_destination_is_refused_everywhere(front_end, app, config_file, stored):
    before = rows(app)
    said = act(front_end, app, config_file, "replay", stored, "off")
    refusal = "No enabled destination named 'off' is configured."
    assert said == {"api": f"409 destination_not_configured: {refusal}", "dashboard": f"error: {refusal}",
                    "cli": f"exit 1: Error: {refusal}"}[front_end]
    assert rows(app) == before  # nothing requeued, no delivery created


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_retry_dead_leaves_unconfigured_destinations_alone_everywhere(front_end, app, config_file, stored):
    said = act(front_end, app, config_file, "retry-dead")
    assert said.startswith({"api": "202 queued", "dashboard": "ok: 1 dead deliveries queued again.",
                            "cli": "exit 0: 1 delivery queued"}[front_end])
    if front_end == "cli":
        assert "left alone: 1 dead delivery of 'gone', which is no longer configured" in said
    assert rows(app) == {f"{stored}/archive": "succeeded", f"{stored}/hook": "pending", "r-gone/gone": "dead"}


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_retry_and_replay_of_unknown_ids_are_not_found_everywhere(front_end, app, config_file, stored):
    said = act(front_end, app, config_file, "retry", "nope")
    assert said == {"api": "404 delivery_not_found: No delivery with id 'nope'.",
                    "dashboard": "error: No delivery with id 'nope'.",
                    "cli": "exit 1: Error: no delivery nope"}[front_end]
    said = act(front_end, app, config_file, "replay", "nope")
    assert said.endswith({"api": "No report with id 'nope'.", "dashboard": "No report with id 'nope'.",
                          "cli": "Error: no report nope"}[front_end])


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_retry_of_a_delivery_to_a_removed_destination_is_refused_everywhere(front_end, app, config_file, stored):
    [gone] = app.hub.store.list_deliveries(destination="gone")
    said = act(front_end, app, config_file, "retry", gone.id)
    refusal = "The destination 'gone' is not configured (any more); add it back to the configuration, then retry."
    assert said.endswith(refusal)
    assert said.startswith({"api": "409 destination_not_configured", "dashboard": "error",
                            "cli": "exit 1"}[front_end])
    assert app.hub.store.get_delivery(gone.id).status == "dead"


def test_outcomes_are_typed(app, stored):
    retried = ops.retry_dead(app.hub)
    assert isinstance(retried, ops.RetriedDead)
    assert (retried.requeued, retried.skipped_unconfigured) == (1, {"gone": 1})
    with pytest.raises(ops.StillRunning):
        delivery = app.hub.store.claim("someone-else", 60)
        ops.retry_delivery(app.hub, delivery.id)
    with pytest.raises(ops.InvalidArgument) as info:
        ops.list_deliveries(app.hub, status="lost")
    assert info.value.param == "status"
