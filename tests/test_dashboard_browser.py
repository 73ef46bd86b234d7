"""The dashboard in a real headless Chromium (Playwright), against the real app on a real port.

Skipped only when /usr/bin/chromium is missing AND the environment variable CI is unset; under
CI a missing Chromium fails. Install: ``apt-get install -y chromium`` and ``pip install playwright``
(the package carries its driver; ``playwright install`` is never needed: the system Chromium is used).
"""
from __future__ import annotations

import json
import os
import struct
import threading

import pytest
import requests
from werkzeug.serving import make_server

from hub.testing import closed_port, load_sample, signed_headers

import answers_crm

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "test-admin-token-0123456789"
IN_CI = bool(os.environ.get("CI"))

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not IN_CI,
    reason=f"{CHROMIUM} is missing (apt-get install -y chromium); this test runs, and must pass, when CI is set")


@pytest.fixture
def hub_config(hub_config):
    hub_config["dispatch"].update(retry_delays=[0], max_attempts=1)
    hub_config["destinations"] = {
        "crm_hook": {"type": "webhook", "url": f"http://127.0.0.1:{closed_port()}/calls", "timeout_seconds": 2},
    }
    return hub_config


@pytest.fixture
def live_server(app):
    """The app served by werkzeug on a free 127.0.0.1 port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"CI is set but {CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def seeded(app, live_server):
    """One complaint POSTed with a valid signature; its webhook delivery goes dead (closed port)."""
    body = json.dumps(load_sample("end-of-call-report-full")).encode()
    answer = requests.post(f"{live_server}/webhooks/hms", data=body, headers=signed_headers(body), timeout=10)
    assert answer.status_code == 202, answer.text
    report_id = answer.json()["report_id"]
    assert app.hub.dispatcher.run_due() == 1
    [delivery] = app.hub.store.list_deliveries(report_id=report_id)
    assert delivery.status == "dead"
    return report_id


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def watched_page(browser):
    """A new page, the console errors and page errors it shows, and every URL it requests."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    requested: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("request", lambda request: requested.append(request.url))
    return context, page, problems, requested


def log_in(page, live_server: str, next_path: str = "/") -> None:
    """Log in with the admin token on the login page and land on ``next_path``."""
    page.goto(f"{live_server}/login" + (f"?next={next_path}" if next_path != "/" else ""))
    page.fill("#token", TOKEN)
    page.click("form.login button[type=submit]")
    page.wait_for_url(f"{live_server}{next_path}")


def test_login_list_report_timeline_retry(app, live_server, seeded, browser, tmp_path):
    context, page, problems, requested = watched_page(browser)

    # Not logged in: the report link (as Slack sends it) leads to the login form.
    page.goto(f"{live_server}/reports/{seeded}")
    assert page.url == f"{live_server}/login?next=/reports/{seeded}"
    assert page.title() == "Log in · Sovereign Hub"
    assert page.locator("h1").inner_text() == "Log in"

    # A wrong token is refused with a message, and the token is not echoed back.
    page.fill("#token", "definitely-not-the-token")
    with page.expect_navigation() as refused:
        page.click("form.login button[type=submit]")
    assert refused.value.status == 401
    assert "not the admin token" in page.locator("#login-error").inner_text()
    assert "definitely-not-the-token" not in page.content()
    assert problems == ["Failed to load resource: the server responded with a status of 401 (UNAUTHORIZED)"]
    problems.clear()

    # The right token: back to the report the link named.
    page.fill("#token", TOKEN)
    page.click("form.login button[type=submit]")
    page.wait_for_url(f"{live_server}/reports/{seeded}")
    cookie = next(c for c in context.cookies() if c["name"] == "hub_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # The list: the report is there, the customer masked, the dead letter counted.
    page.goto(f"{live_server}/")
    assert page.title() == "Reports · Sovereign Hub"
    assert page.locator("h1").inner_text() == "Reports"
    row = page.locator(f"tr[data-report-id='{seeded}']")
    assert row.locator("td.number").inner_text() == "+316*****789"
    assert "+31623456789" not in page.content()
    assert "crm_hook: dead" in row.inner_text()
    assert page.locator("#volume-chart rect.bar").count() == 30
    assert page.locator("#dead-link").inner_text() == "1 dead delivery"
    # The stylesheet came from the hub and applies (no CDN, nothing blocked by the CSP).
    assert page.eval_on_selector("header.top", "e => getComputedStyle(e).backgroundColor") == "rgb(17, 24, 39)"

    # Dead letters list, then the report itself through the list's link.
    page.click("#dead-link")
    assert page.title() == "Dead letters · Sovereign Hub"
    assert page.locator("h1").inner_text() == "Dead letters"
    assert page.locator("#retry-all").is_visible()
    page.goto(f"{live_server}/")
    row.get_by_role("link", name="Open").click()
    page.wait_for_url(f"{live_server}/reports/{seeded}")
    assert page.title() == f"Report {seeded} · Sovereign Hub"
    assert page.locator("#customer").inner_text() == "+31623456789"
    assert "charged twice" in page.locator("#summary").inner_text()
    assert page.locator("#transcript li").count() == 5
    section = page.locator("section.delivery[data-destination='crm_hook']")
    assert section.locator(".delivery-status").inner_text() == "dead"
    attempt = section.locator("li.attempt")
    assert attempt.count() == 1
    assert "#1 dead" in attempt.inner_text()
    assert "Connection refused" in attempt.locator(".error-text").inner_text()

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    width, height = png_size(data)
    assert width >= 1000 and height >= 600 and len(data) > 20_000

    # Retry: the delivery becomes pending, on the page and in the store.
    section.get_by_role("button", name="Retry").click()
    page.wait_for_load_state()
    assert page.locator(".flash-ok").inner_text() == "Retry queued: the delivery is pending again."
    assert page.locator("section.delivery[data-destination='crm_hook'] .delivery-status").inner_text() == "pending"
    [delivery] = app.hub.store.list_deliveries(report_id=seeded)
    assert (delivery.status, delivery.attempts) == ("pending", 0)

    assert problems == [], f"browser console errors: {problems}"
    assert all(url.startswith(live_server) for url in requested), [u for u in requested
                                                                   if not u.startswith(live_server)]
    context.close()


def test_the_customer_page_erases_the_caller_after_a_confirmation(app, live_server, seeded, browser):
    """Dismissing the confirmation erases nothing; accepting it erases every report of the caller,
    says how many rows went, and leaves a record without the number."""
    page = browser.new_context().new_page()
    page.set_default_timeout(10_000)
    log_in(page, live_server)
    page.goto(f"{live_server}/customers/+31623456789")
    assert page.locator(f"tr[data-report-id='{seeded}']").count() == 1

    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("#forget")
    assert asked == ["Erase every report, event, delivery and attempt of this caller? This cannot be undone."]
    assert app.hub.store.get_report(seeded) is not None

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#forget")
    page.wait_for_url(f"{live_server}/erasures#erasure-1")
    assert page.locator(".flash-ok").inner_text() == "Erased +316*****789: 1 reports, 1 deliveries, 1 attempts."
    assert app.hub.store.get_report(seeded) is None
    [record] = app.hub.store.list_erasures()
    assert (record["actor"], record["reports"], record["deliveries"], record["attempts"]) == ("dashboard", 1, 1, 1)
    page.context.close()


@pytest.fixture
def with_hubspot(hub_config):
    """A destination that can erase (HubSpot, mocked with ``responses``), asked for before ``app``."""
    hub_config["destinations"]["crm"] = {"type": "hubspot", "token": "pat-eu1-browser-0000"}
    hub_config["dispatch"].update(max_attempts=2, retry_delays=[3600])


@pytest.mark.hub_plugins("hubspot")
def test_an_erasure_at_the_destinations_is_followed_on_the_erasures_page(with_hubspot, app, live_server, browser,
                                                                         mocked_http):
    """Ticking "also erase at the destinations" queues HubSpot's erasure; the erasures page shows
    it pending, then its failed attempt, then its success, and the webhook as unable to erase."""
    from datetime import timedelta

    import sqlalchemy as sa

    from hub.erasures import run_due
    from hub.store import destination_erasures, utcnow

    api = "https://api.hubapi.com/crm/objects/2026-03/contacts"
    mocked_http.post(f"{api}/search", json={"total": 1, "results": [{"id": "51", "properties": {
        "phone": "+31 6 2345 6789"}}]})
    mocked_http.post(f"{api}/gdpr-delete", status=503, body="upstream unavailable")
    mocked_http.post(f"{api}/gdpr-delete", status=204)
    mocked_http.add_passthru(live_server)
    body = json.dumps(load_sample("end-of-call-report-full")).encode()  # its deliveries left pending
    assert requests.post(f"{live_server}/webhooks/hms", data=body, headers=signed_headers(body),
                         timeout=10).status_code == 202
    context, page, problems, _ = watched_page(browser)
    log_in(page, live_server)
    page.goto(f"{live_server}/customers/+31623456789")
    page.check("#forget-destinations")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#forget")
    page.wait_for_url(f"{live_server}/erasures#erasure-1")
    assert page.locator(".flash-ok").inner_text().endswith("Erasure queued at 1 destination.")
    crm = page.locator("#erasure-1 tr[data-destination='crm']")
    assert crm.get_attribute("data-status") == "pending" and crm.locator("td").nth(2).inner_text() == "0"
    hook = page.locator("#erasure-1 tr[data-destination='crm_hook']")
    assert hook.get_attribute("data-status") == "cannot-erase" and "what it was sent stays there" in hook.inner_text()

    assert run_due(app.hub)["retry"] == 1
    page.reload()
    assert crm.get_attribute("data-status") == "pending" and crm.locator("td").nth(2).inner_text() == "1"
    assert "HTTP 503" in crm.inner_text() and "next attempt" in crm.inner_text()

    with app.hub.store.engine.begin() as conn:  # the retry's delay has passed
        conn.execute(destination_erasures.update().values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    assert run_due(app.hub)["succeeded"] == 1
    page.click("nav >> text=Erasures")
    page.wait_for_url(f"{live_server}/erasures")
    assert crm.get_attribute("data-status") == "succeeded"
    assert crm.locator(".badge").inner_text() == "succeeded" and "GDPR-deleted 1 contact(s): 51" in crm.inner_text()
    text = page.content()
    assert "623456789" not in text and "2345 6789" not in text
    assert problems == []
    context.close()


def test_pause_and_resume_a_destination_from_the_reports_page(app, live_server, seeded, browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    log_in(page, live_server)

    row = page.locator("#destinations tr[data-destination='crm_hook']")
    assert "active" in row.inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Pause").click()
    page.wait_for_load_state()
    assert page.locator(".flash-ok").inner_text().startswith("crm_hook is paused")
    assert "paused since" in row.inner_text()
    assert list(app.hub.store.paused()) == ["crm_hook"]
    assert "crm_hook: 1 dead (paused)" in page.locator("ul.dead").inner_text()

    row.get_by_role("button", name="Resume").click()
    page.wait_for_load_state()
    assert page.locator(".flash-ok").inner_text().startswith("crm_hook is resumed")
    assert "active" in row.inner_text() and app.hub.store.paused() == {}
    assert problems == []
    context.close()


# --- the analytics page: every chart draws, with a day of data and with a month -------------------

SERIES_BLUE = (37, 99, 235)  # analytics.js's first series colour, #2563eb


def stored_call(app, n: int, received_at, *, sentiment: int, intent: str, resolved: bool, duration: int,
                assistant: str) -> None:
    payload = load_sample("end-of-call-report-full")
    payload["message"]["call"]["id"] = f"analytics-{n}"
    payload["message"]["analysis"] = {"sentiment": sentiment, "intent": intent, "resolved": resolved,
                                      "follow_up_needed": not resolved}
    payload["message"]["assistant"] = {"id": f"id-{assistant}", "name": assistant}
    payload["message"]["duration_seconds"] = duration
    source = app.hub.sources["hms"]
    app.hub.ingest("hms", source.schema.load(json.loads(json.dumps(payload))), payload, received_at=received_at)


@pytest.fixture
def with_archive(hub_config, tmp_path):
    """A destination that succeeds beside the one that goes dead (asked for before ``app``)."""
    hub_config["destinations"]["archive"] = {"type": "jsonl", "path": str(tmp_path / "calls.jsonl")}


def drawn_pixels(page) -> dict[str, int]:
    """Per chart: how many pixels of its canvas have the first series' colour."""
    return page.evaluate("""([r, g, b]) => {
        const found = {};
        for (const holder of document.querySelectorAll('.chart-canvas')) {
            const canvas = holder.querySelector('canvas');
            if (!canvas) { found[holder.dataset.chart] = -1; continue; }
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 0; i < pixels.length; i += 4) {
                if (Math.abs(pixels[i] - r) < 8 && Math.abs(pixels[i + 1] - g) < 8 && Math.abs(pixels[i + 2] - b) < 8
                    && pixels[i + 3] > 200) { n++; }
            }
            found[holder.dataset.chart] = n;
        }
        return found;
    }""", list(SERIES_BLUE))


@pytest.mark.parametrize("days", [1, 30], ids=["a-day", "a-month"])
def test_every_analytics_chart_draws(with_archive, app, live_server, browser, days):
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    n = 0
    for back in range(days):  # today four calls (seconds apart); every day before one to three
        for k in range(4 if back == 0 else 1 + back % 3):
            when = now - timedelta(seconds=k) if back == 0 else midnight - timedelta(days=back) + timedelta(hours=8 + 3 * k)
            stored_call(app, n, when, sentiment=1 + n % 10, intent=["support", "sales", "complaint"][n % 3],
                        resolved=n % 2 == 0, duration=20 + 45 * (n % 9), assistant=["Support NL", "Sales NL"][n % 2])
            n += 1
    app.hub.dispatcher.run_due()

    _, page, problems, requested = watched_page(browser)
    log_in(page, live_server, f"/analytics?days={days}")
    page.wait_for_selector(".chart-canvas[data-drawn='true']")

    charts = ["calls-per-day", "sentiment", "hour-of-week", "durations", "field-intent", "booleans",
              "success-rate", "destinations"]
    assert sorted(page.eval_on_selector_all(".chart-canvas", "els => els.map(e => e.dataset.chart)")) == sorted(charts)
    pixels = drawn_pixels(page)
    assert all(pixels[c] > 20 for c in charts), pixels  # the series, not just the axes
    assert page.locator("#analytics-summary").inner_text().startswith(f"{n} calls from ")
    assert problems == [] and all(url.startswith(live_server) for url in requested), (problems, requested)

    # the tables beside them say the same without JavaScript
    rows = page.locator("#block-calls-per-day tbody tr")
    assert rows.count() == days and sum(int(rows.nth(i).locator("td").nth(1).inner_text())
                                        for i in range(days)) == n
    archive = page.locator("#block-success-rate tbody tr", has_text="archive")
    assert archive.locator("td").nth(4).inner_text() == "100.0%"


# --- one call's whole story on the report page ---------------------------------------------------------

@pytest.fixture
def crm():
    with answers_crm.LocalCrm({"+31623456789": {"id": "501", "name": "Alice de Vries", "company": "Acme BV"}}) as server:
        yield server


@pytest.fixture
def answering(hub_config, crm):
    hub_config["destinations"]["crm"] = {"type": "localcrm", "base_url": crm.url}
    hub_config["answers"] = {"assistant_request": {"crm": "crm", "first_message": "Hello {{ caller.name }}!"},
                             "tools": {"followup": "crm"}}
    return hub_config


def post_event(live_server, payload):
    body = json.dumps(payload).encode()
    answer = requests.post(f"{live_server}/webhooks/hms", data=body, timeout=10,
                           headers=signed_headers(body, event=payload["message"]["type"]))
    assert answer.status_code in (200, 202), answer.text
    return answer.json()


def call_event(kind, status, **fields):
    payload = load_sample("end-of-call-report-full")
    message = payload["message"]
    if kind != "end-of-call-report":
        message = {key: message[key] for key in ("timestamp", "call", "phone_number", "customer")}
        payload["message"] = message
    message.update(type=kind, **fields)
    message["call"] = {**message["call"], "status": status}
    return payload


@pytest.mark.hub_plugins(answers_crm.PLUGIN)
def test_the_report_page_tells_the_whole_call(answering, app, live_server, browser, crm):
    """The assistant-request and its answer, a status update, the tool calls with their results,
    the end-of-call report and the follow-up, each with its deliveries, on every report page of the call."""
    greeting = post_event(live_server, call_event("assistant-request", "ringing", timestamp="2026-03-02T09:08:00.000Z"))
    assert greeting["assistant"]["first_message"] == "Hello Alice de Vries!"
    post_event(live_server, call_event("status-update", "in-progress", timestamp="2026-03-02T09:08:30.000Z"))
    tools = post_event(live_server, call_event("tool-calls", "in-progress", timestamp="2026-03-02T09:10:00.000Z",
                                               tool_call_list=[
        {"id": "tc1", "type": "function", "function": {"name": "lookup_customer", "arguments": {}}},
        {"id": "tc2", "type": "function", "function": {"name": "create_followup",
                                                       "arguments": {"title": "Send the quote"}}}]))
    assert [r["tool_call_id"] for r in tools["results"]] == ["tc1", "tc2"]
    ended = post_event(live_server, call_event("end-of-call-report", "ended",
                                               assistant={"metadata": greeting["assistant"]["metadata"]}))
    app.hub.dispatcher.run_due()
    assert crm.tasks and crm.tasks[0]["title"] == "Send the quote"

    context, page, problems, _ = watched_page(browser)
    log_in(page, live_server)
    page.goto(f"{live_server}/reports/{ended['report_id']}")
    events = page.locator("#story li.story-event")
    assert [events.nth(i).get_attribute("data-event") for i in range(events.count())] == [
        "assistant-request", "status-update", "tool-calls", "followup", "end-of-call-report"]
    request = page.locator("#story li[data-event='assistant-request']")
    assert request.locator(".answer-outcome").inner_text() == "answered"
    assert request.locator(".answer-latency").inner_text().endswith(" ms")
    assert json.loads(request.locator(".answer-json").inner_text())["assistant"]["metadata"] == {
        "crm_destination": "crm", "crm_contact_id": "501"}
    assert page.locator("#story li[data-event='status-update'] .call-status").inner_text() == "in-progress"
    calls = page.locator("#story li[data-event='tool-calls'] li.tool-call")
    assert calls.count() == 2
    assert "lookup_customer" in calls.nth(0).inner_text() and '"name": "Alice de Vries"' in calls.nth(0).inner_text()
    assert "create_followup" in calls.nth(1).inner_text() and '"status": "queued"' in calls.nth(1).inner_text()
    followup = page.locator("#story li[data-event='followup']")
    assert followup.locator(".followup-title").inner_text() == "Send the quote"
    assert "crm: succeeded" in followup.inner_text()
    assert "current" in page.locator("#story li[data-event='end-of-call-report']").get_attribute("class")

    # the same story from the assistant-request's own page
    page.click("#story li[data-event='assistant-request'] a")
    page.wait_for_selector("#story li.story-event.current[data-event='assistant-request']")
    assert page.locator("#story li.story-event").count() == 5
    assert problems == []
    context.close()
