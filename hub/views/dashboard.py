"""The admin dashboard: server-rendered pages behind a login with the ``[admin] token``.

The session is Flask's signed cookie (HttpOnly, SameSite=Strict, Secure when the public URL
is https, or the request is, through ``[server] trusted_proxies``) carrying a session id that the store must still hold (``hub.sessions``): logging out
deletes it, and it ends ``SESSION_HOURS`` after login however busy it is. The cookie's key is
derived from the admin token with HMAC, so every process and restart agrees on it and rotating
the token logs everyone out. Failed logins are throttled per address (``auth_throttle``). Every POST form carries a CSRF token
kept in the session. Customer numbers are masked in lists and shown in full on a report's
and a customer's own page; error texts are redacted again before display.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import (Blueprint, Response, current_app, flash, redirect, render_template, request, session, url_for)
from flask.sessions import SecureCookieSessionInterface

from .. import operations as ops
from ..analytics import WEEKDAYS, to_csv
from ..api_schemas import MAX_DAYS
from ..jobs import last_run
from ..reconcile import JOB as RECONCILE_JOB
from ..redaction import mask_phone, redact, scrub
from ..report import CallReport
from ..store import DEAD, STATUSES, utcnow
from ..templates import format_datetime, format_duration, format_phone
from .. import sessions
from . import auth_throttle as throttle
from .admin_auth import ADMIN_KEY_HINT, admin_disabled, admin_token, token_matches

bp = Blueprint("dashboard", __name__)

PAGE_SIZE = 50
SESSION_HOURS = 12
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def session_key(token: str) -> bytes:
    """The session signing key: stable for one admin token, unguessable without it."""
    return hmac.new(token.encode(), b"sovereign-hub dashboard session key v1", hashlib.sha256).digest()


class SessionCookies(SecureCookieSessionInterface):
    """Secure cookies for an https public URL, and for any request that came over https (seen
    through ``[server] trusted_proxies`` when a TLS proxy is in front)."""

    def get_cookie_secure(self, app) -> bool:
        return super().get_cookie_secure(app) or request.is_secure


@bp.record_once
def configure_sessions(state) -> None:
    app = state.app
    app.session_interface = SessionCookies()
    token = app.hub.config.admin.token
    if token and not app.secret_key:
        app.secret_key = session_key(token)
    app.config.update(
        SESSION_COOKIE_NAME="hub_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=app.hub.settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )
    app.jinja_env.filters.update(masked=mask_phone, duration=format_duration, when=format_datetime,
                                 phone=format_phone, redacted=redact, scrubbed=scrub, zip=zip)


# --- auth and CSRF -------------------------------------------------------------------

def _disabled():
    if request.accept_mimetypes.accept_html and request.accept_mimetypes.best == "text/html":
        return render_template("dashboard_error.html", title="Dashboard disabled", status=503,
                               message=f"The dashboard is disabled: {ADMIN_KEY_HINT}."), 503
    return admin_disabled()


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_ok() -> bool:
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to another host."""
    if not target:
        return url_for("dashboard.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("dashboard.index")
    return target


def _logged_in() -> bool:
    return sessions.is_live(current_app.hub.store, session.get("sid"))


def login_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        if admin_token() is None:
            return _disabled()
        if not _logged_in():
            session.clear()
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
        if request.method == "POST" and not _csrf_ok():
            return _page_error(400, "Form expired", "The form was stale or came from elsewhere (CSRF check "
                                                    "failed). Reload the page and try again.")
        return view(*args, **kwargs)

    return wrapped


@bp.app_context_processor
def inject_csrf():
    return {"csrf_token": csrf_token}


@bp.after_request
def security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _page_error(status: int, title: str, message: str):
    return render_template("dashboard_error.html", title=title, status=status, message=message), status


@bp.route("/login", methods=["GET", "POST"])
def login():
    if admin_token() is None:
        return _disabled()
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if _logged_in():
            return redirect(next_url)
        return render_template("dashboard_login.html", title="Log in", next_url=next_url, error=None)
    if not _csrf_ok():
        return render_template("dashboard_login.html", title="Log in", next_url=next_url,
                               error="The login form expired; please try again."), 400
    wait = throttle.retry_after()
    if wait is not None:
        answer = render_template("dashboard_login.html", title="Log in", next_url=next_url,
                                 error=f"Too many failed logins from this address; try again in {wait} s.")
        return answer, 429, {"Retry-After": str(wait)}
    if not token_matches(request.form.get("token", "")):
        throttle.record_failure("wrong_admin_token")
        return render_template("dashboard_login.html", title="Log in", next_url=next_url,
                               error="That token is not the admin token."), 401
    throttle.record_success()
    session.clear()  # a fresh session on login: no fixation
    session.permanent = True
    session["sid"] = sessions.start(current_app.hub.store, timedelta(hours=SESSION_HOURS))
    session["csrf"] = secrets.token_urlsafe(32)
    return redirect(next_url, code=303)


@bp.post("/logout")
@login_required
def logout():
    sessions.end(current_app.hub.store, session.get("sid"))
    session.clear()
    flash("Logged out.")
    return redirect(url_for("dashboard.login"), code=303)


# --- view helpers ----------------------------------------------------------------------

def _summary_row(report: CallReport, deliveries) -> dict[str, Any]:
    analysis = report.analysis if isinstance(report.analysis, dict) else {}
    return {"id": report.id, "received_at": report.received_at, "direction": report.call.direction,
            "event": report.event, "customer": report.customer.number, "duration": report.duration_seconds,
            "sentiment": analysis.get("sentiment"), "intent": analysis.get("intent"),
            "deliveries": deliveries}


def chart(per_day: list[dict[str, Any]], width: int = 600, height: int = 120) -> dict[str, Any]:
    """Bars for report volume, a line (and dots) for average sentiment: coordinates for an inline SVG."""
    pad_top, pad_bottom = 8, 18
    plot = height - pad_top - pad_bottom
    n = max(len(per_day), 1)
    step = width / n
    top_volume = max([d["reports"] for d in per_day] + [1])
    sentiments = [d["average_sentiment"] for d in per_day if d["average_sentiment"] is not None]
    top_sentiment = max(sentiments + [10.0])
    bars, points = [], []
    for i, day in enumerate(per_day):
        h = plot * day["reports"] / top_volume
        bars.append({"x": round(i * step + 1, 1), "y": round(pad_top + plot - h, 1), "w": round(max(step - 2, 1), 1),
                     "h": round(h, 1), "date": day["date"], "reports": day["reports"],
                     "sentiment": day["average_sentiment"]})
        if day["average_sentiment"] is not None:
            y = pad_top + plot - plot * day["average_sentiment"] / top_sentiment
            points.append(f"{round(i * step + step / 2, 1)},{round(y, 1)}")
    return {"width": width, "height": height, "bars": bars, "line": " ".join(points),
            "dots": [point.split(",") for point in points],  # a lone day's average shows as a dot
            "top_volume": top_volume, "top_sentiment": top_sentiment, "baseline": pad_top + plot,
            "first": per_day[0]["date"] if per_day else "", "last": per_day[-1]["date"] if per_day else "",
            "total": sum(d["reports"] for d in per_day)}


def _int_arg(name: str, default: int, low: int = 0) -> int:
    try:
        return max(low, int(request.args.get(name, default)))
    except ValueError:
        return default


def _back_to(default: str) -> str:
    return _safe_next(request.form.get("back") or default)


# --- pages ----------------------------------------------------------------------------

@bp.get("/")
@login_required
def index():
    hub = current_app.hub
    page = ops.list_reports(hub, limit=PAGE_SIZE, offset=_int_arg("offset", 0), with_deliveries=True)
    rows = [_summary_row(r, page.deliveries.get(r.id, [])) for r in page.reports]
    summary = ops.stats(hub, 30)
    dead = summary.dead_by_destination
    return render_template("dashboard_index.html", title="Reports", rows=rows, offset=page.offset,
                           page_size=PAGE_SIZE, has_more=page.next_offset is not None,
                           chart=chart([day.__dict__ for day in summary.per_day]), dead=dead,
                           dead_total=sum(dead.values()), totals=summary.delivery_totals,
                           destinations=ops.list_destinations(hub),
                           reconcile=last_run(hub.store, RECONCILE_JOB),
                           reconcile_schedule=hub.config.sources["hms"].get("reconcile"))


@bp.get("/reports/<report_id>")
@login_required
def report(report_id: str):
    try:
        detail = ops.get_report(current_app.hub, report_id)
    except ops.NotFound:
        return _page_error(404, "Report not found", f"There is no report with id {report_id}.")
    found = detail.report
    timeline = [{"delivery": d, "attempts": d.attempt_log, "configured": d.destination in detail.configured}
                for d in detail.deliveries]
    recording = found.recording_url if (found.recording_url or "").startswith(("https://", "http://")) else None
    return render_template("dashboard_report.html", title=f"Report {found.id}", report=found,
                           timeline=timeline, missing=detail.undelivered, recording=recording, story=detail.story)


#: the deliveries page's time windows: label -> how far back (None: ever)
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7),
           "30d": timedelta(days=30), "all": None}


@bp.get("/deliveries")
@login_required
def deliveries():
    """Every delivery, newest first, filtered by status, destination and time window, with the
    count of each status under the destination and window chosen."""
    hub = current_app.hub
    status = request.args.get("status") or None
    destination = request.args.get("destination") or None
    window = request.args.get("window") or "all"
    if window not in WINDOWS:
        return _page_error(400, "Unknown window", f"window must be one of {', '.join(WINDOWS)}.")
    since = utcnow() - WINDOWS[window] if WINDOWS[window] else None
    try:
        found = ops.list_deliveries(hub, status=status, destination=destination, since=since, limit=PAGE_SIZE * 10)
    except ops.InvalidArgument:
        return _page_error(400, "Unknown status", f"status must be one of {', '.join(STATUSES)}.")
    counts = ops.count_deliveries(hub, destination=destination, since=since)
    names = sorted(set(ops.configured(hub)) | {name for name, _ in hub.store.delivery_counts()})
    title = "Dead letters" if status == DEAD else f"Deliveries: {status}" if status else "Deliveries"
    return render_template("dashboard_deliveries.html", title=title, deliveries=found, status=status,
                           destination=destination, window=window, windows=list(WINDOWS), statuses=STATUSES,
                           counts=counts, destinations=names, configured=set(ops.configured(hub)),
                           paused=hub.store.paused(), shown_limit=PAGE_SIZE * 10)


ANALYTICS_WINDOWS = (1, 7, 30, 90, 365)
SENTIMENT = "sentiment"


@bp.get("/analytics")
@bp.get("/analytics.csv", endpoint="analytics_csv")
@login_required
def analytics():
    """The analytics page (or, as /analytics.csv, its figures) of the window and the line or
    assistant the query asks for."""
    line, assistant = request.args.get("line") or None, request.args.get("assistant") or None
    try:
        figures = ops.analytics(current_app.hub, min(_int_arg("days", 30, low=1), MAX_DAYS), line=line,
                                assistant=assistant)
    except ops.InvalidArgument as exc:
        return _page_error(400, "Not a line", exc.message)
    if request.path.endswith(".csv"):
        return Response(to_csv(figures), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="sovereign-hub-analytics.csv"'})
    days = len(figures.dates)
    return render_template("dashboard_analytics.html", title="Analytics", figures=figures, days=days,
                           windows=sorted({*ANALYTICS_WINDOWS, days}), weekdays=WEEKDAYS,
                           charts=chart_data(figures), csv_args=request.args.to_dict(),
                           sentiment=next((f for f in figures.fields if f.name == SENTIMENT), None))


def chart_data(figures) -> dict[str, Any]:
    """What the page's script draws, by chart id: labels, series and the kind of chart."""
    charts = {
        "calls-per-day": {"kind": "bars", "labels": figures.dates,
                          "series": [{"label": "calls", "values": figures.calls_per_day}]},
        "sentiment": {"kind": "line", "labels": figures.dates,
                      "series": [{"label": "average sentiment", "values": figures.sentiment_per_day}]},
        "hour-of-week": {"kind": "bars", "labels": [f"{day} {hour:02d}h" for day in WEEKDAYS for hour in range(24)],
                         "series": [{"label": "calls", "values": [n for hours in figures.hour_of_week for n in hours]}]},
        "durations": {"kind": "bars", "labels": [d.bucket for d in figures.durations],
                      "series": [{"label": "calls", "values": [d.calls for d in figures.durations]}]},
    }
    booleans = [f for f in figures.fields if f.kind == "boolean"]
    if booleans:
        charts["booleans"] = {"kind": "bars", "labels": [f.name for f in booleans],
                              "series": [{"label": "share true", "values": [f.rate for f in booleans]}]}
    for f in figures.fields:
        if f.kind == "enum":
            charts[f"field-{f.name}"] = {"kind": "bars", "labels": list(f.counts),
                                         "series": [{"label": "calls", "values": list(f.counts.values())}]}
        elif f.kind == "number" and f.name != SENTIMENT:  # sentiment has its own chart
            charts[f"field-{f.name}"] = {"kind": "line", "labels": figures.dates,
                                         "series": [{"label": f"average {f.name}", "values": f.per_day}]}
    if figures.destinations:
        names = [d.name for d in figures.destinations]
        charts["destinations"] = {"kind": "bars", "labels": names,
                                  "series": [{"label": "p50 seconds", "values": [d.p50_seconds for d in figures.destinations]},
                                             {"label": "p95 seconds", "values": [d.p95_seconds for d in figures.destinations]}]}
        charts["success-rate"] = {"kind": "bars", "labels": names,
                                  "series": [{"label": "success rate", "values": [d.success_rate for d in figures.destinations]}]}
    return charts


@bp.get("/customers/<customer>")
@login_required
def customer(customer: str):
    try:
        page = ops.list_reports(current_app.hub, customer=customer, limit=500, with_deliveries=True)
    except ops.InvalidArgument:
        return _page_error(400, "Not an E.164 number", "A customer is named by an E.164 number such as +31612345678.")
    rows = [_summary_row(r, page.deliveries.get(r.id, [])) for r in page.reports]
    return render_template("dashboard_customer.html", title=f"Customer {customer}", customer=customer, rows=rows)


# --- actions (POST, CSRF-checked) ------------------------------------------------------

def _flash_outcome(action, success) -> None:
    """Run ``action()``; flash ``success(outcome)`` or the operation's own error message."""
    try:
        outcome = action()
    except ops.OperationError as exc:
        flash(exc.message, "error")
    else:
        flash(success(outcome), "ok")


@bp.post("/deliveries/<delivery_id>/retry")
@login_required
def retry(delivery_id: str):
    _flash_outcome(lambda: ops.retry_delivery(current_app.hub, delivery_id),
                   lambda _: "Retry queued: the delivery is pending again.")
    return redirect(_back_to(url_for("dashboard.deliveries")), code=303)


@bp.post("/reports/<report_id>/replay")
@login_required
def replay(report_id: str):
    destination = request.form.get("destination") or None
    _flash_outcome(lambda: ops.replay_report(current_app.hub, report_id, destination),
                   lambda _: f"Replay queued for {destination or 'every destination'}.")
    return redirect(url_for("dashboard.report", report_id=report_id), code=303)


@bp.post("/customers/<customer>/forget")
@login_required
def forget(customer: str):
    """Erase the caller; with the form's ``destinations`` box ticked, queue the erasure at the
    destinations too. Then the erasure's page, which shows each queued erasure as it runs."""
    at_destinations = request.form.get("destinations") == "yes"
    try:
        outcome = ops.forget(current_app.hub, customer, actor="dashboard", destinations=at_destinations)
    except ops.OperationError as exc:
        flash(exc.message, "error")
        return redirect(url_for("dashboard.index"), code=303)
    queued = len(outcome.erasure.queued)
    flash(f"Erased {outcome.number}: " + ", ".join(f"{n} {table}" for table, n in outcome.counts.items()) + "."
          + (f" Erasure queued at {queued} destination{'' if queued == 1 else 's'}." if queued else ""), "ok")
    return redirect(url_for("dashboard.erasures", _anchor=f"erasure-{outcome.erasure.id}"), code=303)


@bp.get("/erasures")
@login_required
def erasures():
    """The kept erasure records, newest first, with each destination's erasure as it stands."""
    return render_template("dashboard_erasures.html", title="Erasures",
                           erasures=ops.list_erasures(current_app.hub, limit=min(_int_arg("limit", 50, 1), 1000)))


@bp.post("/destinations/<name>/test")
@login_required
def test_destination(name: str):
    try:
        outcome = ops.check_connection(current_app.hub, name)
    except ops.OperationError as exc:
        flash(exc.message, "error")
    else:
        problem = "" if outcome.ok else f"{outcome.problem.replace('_', ' ')}: "
        flash(f"Test of {name}: {'ok: ' if outcome.ok else ''}{problem}{outcome.message}", "ok" if outcome.ok else "error")
    return redirect(_back_to(url_for("dashboard.index")), code=303)


@bp.post("/deliveries/retry-dead")
@login_required
def retry_dead():
    destination = request.form.get("destination") or None
    _flash_outcome(lambda: ops.retry_dead(current_app.hub, destination),
                   lambda outcome: f"{outcome.requeued} dead deliveries queued again.")
    return redirect(_back_to(url_for("dashboard.deliveries")), code=303)


_PAUSE_ACTIONS = {
    "pause": (ops.pause_destination,
              "{} is paused: nothing is attempted until it is resumed; new reports still queue."),
    "resume": (ops.resume_destination, "{} is resumed: its waiting deliveries go out now."),
}


@bp.post("/destinations/<name>/<any(pause, resume):action>")
@login_required
def pause_or_resume(name: str, action: str):
    operation, done = _PAUSE_ACTIONS[action]
    _flash_outcome(lambda: operation(current_app.hub, name), lambda _: done.format(name))
    return redirect(_back_to(url_for("dashboard.index")), code=303)
