"""Nothing leaks through errors: a send to each bundled destination type fails, once with a
connection error naming the request's URL (as urllib3 words it) and once with a 400 whose body
echoes the credential and the caller's number in the national forms CRMs use; then every table,
every log line, the API and the dashboard are searched for the secrets and the number."""
from __future__ import annotations

import io
import json
import logging
import re
from datetime import timedelta

import pytest
import requests
import responses
import sqlalchemy as sa

from hub import sessions
from hub.logs import JsonFormatter
from hub.store import metadata
from hub.testing import closed_port, load_sample

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOK_URL = f"http://127.0.0.1:{closed_port()}/hooks/catch/1234/webhookpathsecret9?auth=webhookquerysecret7"
SLACK_HOOK = "https://hooks.slack.com/services/T0000LEAK/B0000LEAK/slackpathsecret0123456789"
SECRETS = {
    "webhook": {"url": WEBHOOK_URL, "secret": "whsec_" + "c2VjcmV0LWZvci10aGUtbGVhay10ZXN0"},
    "slack_hook": {"type": "slack", "webhook_url": SLACK_HOOK},
    "slack_bot": {"type": "slack", "token": "xoxb-1111-2222-leaktestleaktest", "channel": "C0123ABCDE"},
    "hubspot": {"token": "pat-eu1-leaktest-0000-1111-2222"},
    "salesforce": {"login_url": "https://acme.my.salesforce.com", "client_id": "3MVG9-leak-consumer-key",
                   "client_secret": "sf-leak-consumer-s3cret"},
    "jira": {"base_url": "https://acme.atlassian.net", "email": "ops@example.com",
             "api_token": "jira-leak-token-123456", "project": "SUP"},
    "asana": {"token": "2/1200/1200:asana-leak-pat", "workspace": "1100000000000001",
              "projects": ["1100000000000002"]},
    "linear": {"api_key": "lin_api_leakleakleak0123", "team_id": "9cfb482a-81e3-4154-b5b9-2c805e70a02d"},
    "trello": {"key": "0471642aefef5fa1fa76530ce1baleak", "token": "9eb76d9a9d02b8dd40c2f3e5df18leak",
               "list_id": "5abbe4b7ddc1b351ef961414"},
    "todoist": {"token": "0123456789abcdef0123456789abcdefleak0000", "project_id": "6Jf8VQXxpwv56VQ7"},
}
# every secret, and the parts of the secret URLs that HTTP libraries quote on their own
SECRET_TEXTS = sorted({value for options in SECRETS.values() for key, value in options.items()
                       if key in ("url", "secret", "webhook_url", "token", "client_secret", "api_token", "api_key",
                                  "key")}
                      | {"sf-leak-access-token-0000", "webhookpathsecret9", "webhookquerysecret7", "slackpathsecret0123456789"})
# the caller (+31 6 2345 6789 in the sample) in every form the hub could be handed it back
NUMBER_FORMS = ["+31623456789", "0031623456789", "623456789", "23456789", "2345 6789", "23 45 67 89", "(0)6 2345"]
ECHOED = "0031623456789, 623456789, +31 (0)6 2345 6789, 06-23 45 67 89, 0623456789 and +31623456789"


@pytest.fixture
def hub_config(hub_config, tmp_path):
    hub_config["dispatch"].update(retry_delays=[0], max_attempts=1)
    hub_config["destinations"] = {name: dict(options) for name, options in SECRETS.items()}
    hub_config["destinations"]["jsonl"] = {"path": str(tmp_path)}  # a directory: the write fails
    return hub_config


def failing(mode: list[str]):
    """A responses callback: a connection error naming the URL's path and query, as urllib3 does,
    or a 400 echoing the Authorization header, the URL and the caller's number."""

    def answer(request):
        url = requests.utils.urlparse(request.url)
        if mode[0] == "connection":
            raise requests.ConnectionError(
                f"HTTPSConnectionPool(host='{url.hostname}', port=443): Max retries exceeded with url: "
                f"{request.path_url} (Caused by NewConnectionError('Failed to establish a new connection: "
                f"[Errno 111] Connection refused'))")
        body = {"message": f"invalid phone {ECHOED}; sent by {request.headers.get('Authorization')} to "
                           f"{request.url}", "error": "INVALID", "errors": [{"message": ECHOED}]}
        return 400, {"Content-Type": "application/json"}, json.dumps(body)

    return answer


@pytest.mark.hub_plugins("hubspot", "salesforce", "slack", "tasks")
def test_no_secret_and_no_caller_number_reaches_the_store_logs_api_or_dashboard(app):
    log_text = io.StringIO()
    handler = logging.StreamHandler(log_text)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level, mode = root.level, ["connection"]
    root.setLevel(logging.DEBUG)
    client = app.test_client()
    report_ids = []
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            rsps.add_passthru("http://127.0.0.1")
            # Salesforce's token is granted, so its phone search (the number in the URL) is what fails
            rsps.post("https://acme.my.salesforce.com/services/oauth2/token", json={
                "access_token": "sf-leak-access-token-0000", "instance_url": "https://acme.my.salesforce.com",
                "token_type": "Bearer"})
            for method in ("GET", "POST", "PUT", "PATCH"):
                rsps.add_callback(getattr(responses, method), re.compile(r"https://.*"), callback=failing(mode))
            for n, which in enumerate(("connection", "echo")):
                mode[0] = which
                payload = load_sample("end-of-call-report-full")
                payload["message"]["call"]["id"] = f"call-leak-{n}"
                body = json.dumps(payload).encode()
                from hub.testing import signed_headers

                answer = client.post("/webhooks/hms", data=body, headers=signed_headers(body))
                assert answer.status_code == 202
                report_ids.append(answer.get_json()["report_id"])
                assert app.hub.dispatcher.run_due() == len(SECRETS) + 1
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    dead = app.hub.store.list_deliveries(status="dead", limit=None)
    assert {d.destination for d in dead} == {*SECRETS, "jsonl"} and len(dead) == 2 * (len(SECRETS) + 1)
    assert any("Max retries exceeded with url: [secret]" in d.last_error for d in dead)
    assert any("+316*****789" in d.last_error for d in dead), "the echoed number is there, masked"

    with app.hub.store.engine.connect() as conn:
        tables = {t.name: json.dumps([dict(r._mapping) for r in conn.execute(sa.select(t))], default=str)
                  for t in metadata.sorted_tables}
    api = {path: client.get(path, headers=AUTH).get_data(as_text=True)
           for path in ["/api/deliveries?status=dead&limit=500",
                        *(f"/api/reports/{r}" for r in report_ids),
                        *(f"/api/deliveries/{d.id}" for d in dead)]}
    dashboard = client
    with dashboard.session_transaction() as session:
        session.update(sid=sessions.start(app.hub.store, timedelta(hours=1)), csrf="csrf-token")  # a live session
    pages = {path: dashboard.get(path).get_data(as_text=True)
             for path in ["/deliveries?status=dead", "/", *(f"/reports/{r}" for r in report_ids)]}
    logged = log_text.getvalue()
    assert logged.count("delivery.dead") == len(dead)

    everywhere = {**{f"table {n}": t for n, t in tables.items()}, **api, **pages, "logs": logged}
    for where, text in everywhere.items():
        for secret in SECRET_TEXTS:
            assert secret not in text, f"{secret!r} in {where}: " + text[max(0, text.find(secret) - 300):][:400]
    # The report itself holds the number (that is what it is about); nothing about a delivery may.
    about_deliveries = {**{f"table {n}": t for n, t in tables.items() if n != "reports"},
                        "logs": logged, "dead letters page": pages["/deliveries?status=dead"],
                        **{p: t for p, t in api.items() if p.startswith("/api/deliveries")}}
    for where, text in about_deliveries.items():
        for form in NUMBER_FORMS:
            assert form not in text, f"{form!r} in {where}"
