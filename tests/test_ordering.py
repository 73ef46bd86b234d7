"""Per-customer order: five calls from one new number, close together, make one contact.

The CRM is a real HTTP server on 127.0.0.1 whose search, like HubSpot's and Salesforce's, shows
a new record only seconds after it was created. Each delivery searches for the caller, finds
nobody and would create a contact; with ``ordering = "customer"`` the store runs one delivery per
customer at a time, and each takes the contact its predecessor created from that delivery's
saved state. Checked with 8 dispatcher threads and with two ``worker`` processes, on SQLite and
PostgreSQL, and (as the control) with ``ordering = "none"``, which creates a contact per call.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from hub.store import order_key
from hub.testing import (
    answer_json, kill_process_group, load_sample, start_hub_process, toml_text, wait_until,
)

pytestmark = pytest.mark.hub_plugins("hubspot", "salesforce")

NUMBER = "+31623456789"  # the full sample's caller, normalized
SEARCH_LAG = 3.0  # seconds before a new record shows in search (both vendors: "a few seconds")


class LaggingCRM:
    """A CRM on 127.0.0.1: records it created, and a search that shows them only after SEARCH_LAG.

    ``people`` are the contacts (HubSpot) or Leads (Salesforce); ``calls`` the call logs, each
    with the id of the person it is linked to."""

    def __init__(self):
        self.lock = threading.Lock()
        self.people: list[dict] = []
        self.calls: list[dict] = []
        self.next_id = 1000
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                time.sleep(0.02)  # an API's latency: the deliveries overlap
                answer_json(self, *crm.answer(self.command, urlsplit(self.path).path,
                                              json.loads(raw) if raw.startswith(b"{") else None))

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)

    def searchable(self) -> list[dict]:
        with self.lock:
            return [p for p in self.people if time.monotonic() - p["created"] >= SEARCH_LAG]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class LaggingHubSpot(LaggingCRM):
    """``/crm/objects/2026-03/{contacts,calls,tasks}`` and their ``/search``."""

    objects = re.compile(r"^/crm/objects/2026-03/(?P<type>contacts|calls|tasks)(?P<search>/search)?$")

    def options(self) -> dict:
        return {"type": "hubspot", "token": "pat-eu1-test-token-0000", "base_url": self.url}

    def answer(self, method, path, body):
        match = self.objects.match(path)
        if method != "POST" or match is None:
            return 404, {"message": f"no route {method} {path}"}
        kind = match["type"]
        if match["search"]:
            found = self.searchable() if kind == "contacts" else []
            return 200, {"total": len(found), "results": [{"id": p["id"], "properties": p["fields"]} for p in found]}
        with self.lock:
            record = {"id": self.new_id(), "created": time.monotonic(), "fields": dict(body["properties"]),
                      "linked": [a["to"]["id"] for a in body.get("associations", [])]}
            record["fields"]["hs_object_id"] = record["id"]
            {"contacts": self.people, "calls": self.calls}.get(kind, []).append(record)
        return 201, {"id": record["id"], "properties": record["fields"]}


class LaggingSalesforce(LaggingCRM):
    """OAuth client credentials, SOSL search, and the allOrNone composite (Lead + Tasks)."""

    data = "/services/data/v67.0"

    def options(self) -> dict:
        return {"type": "salesforce", "login_url": self.url, "client_id": "3MVG9-consumer-key",
                "client_secret": "consumer-s3cret"}

    def answer(self, method, path, body):
        if (method, path) == ("POST", "/services/oauth2/token"):
            return 200, {"access_token": "tok", "instance_url": self.url, "token_type": "Bearer"}
        if (method, path) == ("GET", f"{self.data}/search/"):
            return 200, {"searchRecords": [{"attributes": {"type": "Lead"}, "Id": p["id"],
                                            "LastModifiedDate": "2026-03-02T09:00:00.000+0000", **p["fields"]}
                                           for p in self.searchable()]}
        if (method, path) == ("POST", f"{self.data}/composite"):
            return 200, {"compositeResponse": self.composite(body["compositeRequest"])}
        return 404, [{"errorCode": "NOT_FOUND", "message": f"no route {method} {path}"}]

    def composite(self, subrequests: list[dict]) -> list[dict]:
        made, answers = {}, []
        with self.lock:
            for sub in subrequests:
                fields = {k: (made.get(v[2:-4], v) if isinstance(v, str) and v.startswith("@{") else v)
                          for k, v in sub["body"].items()}  # "@{newWho.id}" -> the id made just now
                record = {"id": self.new_id(), "created": time.monotonic(), "fields": fields,
                          "linked": [fields["WhoId"]] if fields.get("WhoId") else []}
                made[sub["referenceId"]] = record["id"]
                if sub["url"].endswith("/sobjects/Lead"):
                    self.people.append(record)
                elif fields.get("TaskSubtype") == "Call":
                    self.calls.append(record)
                answers.append({"referenceId": sub["referenceId"], "httpStatusCode": 201, "httpHeaders": {},
                                "body": {"id": record["id"], "success": True, "errors": [], "created": True}})
        return answers


@pytest.fixture(params=[LaggingHubSpot, LaggingSalesforce], ids=["hubspot", "salesforce"])
def crm(request):
    server = request.param()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def hub_config(request, hub_config, crm):
    if request.param == "postgresql":
        hub_config["store"]["url"] = request.getfixturevalue("new_pg_database")()
    hub_config["dispatch"].update(workers=8, poll_interval=0.05, retry_delays=[0.2, 0.5, 1], max_attempts=4)
    hub_config["destinations"] = {"crm": crm.options()}
    return hub_config


def five_calls_from_one_new_number(signed_post) -> list[str]:
    """Five end-of-call reports (five calls), all stored before any delivery runs: every one of
    them is pending when the workers start, the worst case for a race on the new contact."""
    ids = []
    for n in range(5):
        payload = load_sample("end-of-call-report-full")
        payload["message"]["call"]["id"] = f"call-callback-{n}"
        answer = signed_post(payload)
        assert answer.status_code == 202, answer.get_json()
        ids.append(answer.get_json()["report_id"])
    return ids


def all_delivered(app, report_ids) -> bool:
    rows = [d for r in report_ids for d in app.hub.store.list_deliveries(report_id=r)]
    assert not [d for d in rows if d.status == "dead"], [d.last_error for d in rows]
    return len(rows) == len(report_ids) and all(d.status == "succeeded" for d in rows)


def assert_one_person_and_five_calls_on_it(crm):
    """HubSpot: one contact and five calls on it. Salesforce: one Lead and five call Tasks on it."""
    assert len(crm.people) == 1, f"{len(crm.people)} contacts/Leads for one caller"
    assert NUMBER in crm.people[0]["fields"].values()
    assert len(crm.calls) == 5 and all(c["linked"] == [crm.people[0]["id"]] for c in crm.calls)


def deliver_with_eight_threads(app, report_ids) -> None:
    app.hub.dispatcher.start(8)
    try:
        assert wait_until(lambda: all_delivered(app, report_ids), timeout=30)
    finally:
        app.hub.dispatcher.stop(5)


def test_five_calls_from_one_new_number_make_one_contact_with_eight_threads(app, signed_post, crm):
    deliver_with_eight_threads(app, five_calls_from_one_new_number(signed_post))
    assert_one_person_and_five_calls_on_it(crm)


def test_five_calls_from_one_new_number_make_one_contact_with_two_worker_processes(
        app, signed_post, crm, hub_config, tmp_path):
    hub_config["dispatch"]["workers"] = 4
    config = tmp_path / "workers.toml"
    config.write_text(toml_text(hub_config))
    report_ids = five_calls_from_one_new_number(signed_post)
    workers = [start_hub_process("worker", config, tmp_path, f"worker-{n}.log") for n in range(2)]
    try:
        assert wait_until(lambda: all_delivered(app, report_ids), timeout=60), \
            "\n".join((tmp_path / f"worker-{n}.log").read_text()[-2000:] for n in range(2))
    finally:
        for worker in workers:
            kill_process_group(worker)
    assert_one_person_and_five_calls_on_it(crm)


def test_without_ordering_each_call_makes_its_own_contact(crm, hub_config, request):
    """The control: the same five reports with ``ordering = "none"`` race (and search lags)."""
    hub_config["destinations"]["crm"]["ordering"] = "none"
    app, signed_post = request.getfixturevalue("app"), request.getfixturevalue("signed_post")
    deliver_with_eight_threads(app, five_calls_from_one_new_number(signed_post))
    assert len(crm.people) == 5 and len(crm.calls) == 5


def test_a_web_call_has_no_order_key_and_other_customers_run_side_by_side(app, signed_post, hub_config):
    payload = load_sample("end-of-call-report-full")
    payload["message"]["call"]["id"] = "call-web"
    payload["message"]["customer"] = {}
    web = signed_post(payload).get_json()["report_id"]
    other = load_sample("end-of-call-report-full")
    other["message"]["call"]["id"] = "call-other-customer"
    other["message"]["customer"] = {"number": "+31 6 1111 2222"}
    first, second = five_calls_from_one_new_number(signed_post)[:2]
    second_customer = signed_post(other).get_json()["report_id"]
    rows = {r: app.hub.store.list_deliveries(report_id=r)[0] for r in (web, first, second, second_customer)}
    assert rows[web].order_key is None
    assert rows[first].order_key == rows[second].order_key == order_key(NUMBER)
    assert rows[second_customer].order_key == order_key("+31611112222") != order_key(NUMBER)
    claimed = {d.report_id for d in app.hub.store.claim_batch("test", 60, 10)}
    assert claimed == {web, first, second_customer}, "the second call waits for the first; the rest run"
