"""``/api/...``: the admin API (reports, deliveries, retry/replay, stats, its OpenAPI document).

Every route needs ``Authorization: Bearer <[admin] token>``. With no token configured the
API answers 503 ``admin_disabled``; it never falls open. Cookies play no part here, so the
API needs no CSRF protection (the dashboard, which uses a session cookie, has its own).
"""
from __future__ import annotations

import copy
import hmac
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from .errors import error_response
from ..report import REPORT_JSON_SCHEMA, isoformat, parse_datetime
from ..store import DEAD, RUNNING, STATUSES, Delivery, utcnow

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_DAYS = 366
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
ADMIN_KEY_HINT = ('set [admin] token in the configuration, e.g. token = { env = "HUB_ADMIN_TOKEN" } '
                  '(16 characters or more)')


class BadParam(Exception):
    """A query parameter or body field that cannot be used; answered as 400 naming it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
        self.message = message


# --- auth -------------------------------------------------------------------------------

def admin_token() -> str | None:
    return current_app.hub.config.admin.get("token") or None


def token_matches(given: str | None) -> bool:
    """Constant-time comparison of ``given`` with the configured admin token."""
    expected = admin_token()
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def admin_disabled():
    return error_response(503, "admin_disabled",
                          f"The admin API and dashboard are disabled: {ADMIN_KEY_HINT}.",
                          {"config_key": "admin.token"})


@bp.before_request
def require_bearer_token():
    if admin_token() is None:
        return admin_disabled()
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        response = error_response(401, "unauthorized", "Send the admin token: Authorization: Bearer <token>.")
    elif scheme.lower() != "bearer" or not given.strip():
        response = error_response(401, "unauthorized", "The Authorization header must be: Bearer <token>.")
    elif not token_matches(given.strip()):
        response = error_response(401, "invalid_token", "The admin token is not valid.")
    else:
        return None
    response[0].headers["WWW-Authenticate"] = 'Bearer realm="sovereign-hub"'
    return response


@bp.errorhandler(BadParam)
def bad_param(exc: BadParam):
    return error_response(400, "invalid_parameter", f"{exc.param}: {exc.message}", {"param": exc.param})


# --- parameter parsing ----------------------------------------------------------------

def _args(allowed: set[str]) -> dict[str, str]:
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise BadParam(unknown[0], f"unknown query parameter (allowed: {', '.join(sorted(allowed)) or 'none'})")
    return request.args.to_dict()


def _int(args: dict, name: str, default: int, low: int, high: int | None = None) -> int:
    text = args.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParam(name, f"must be an integer, not {text!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadParam(name, f"must be {bounds}, not {value}")
    return value


def _datetime(args: dict, name: str) -> datetime | None:
    text = args.get(name)
    if not text:
        return None
    try:
        return parse_datetime(text)
    except ValueError:
        raise BadParam(name, f"must be an ISO 8601 date or timestamp (2026-03-02 or 2026-03-02T09:15:00Z), "
                             f"not {text!r}") from None


def _status(args: dict) -> str | None:
    status = args.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadParam("status", f"must be one of {', '.join(STATUSES)}, not {status!r}")
    return status


def _customer(args: dict) -> str | None:
    customer = args.get("customer") or None
    if customer is not None and not E164.match(customer):
        raise BadParam("customer", f"must be an E.164 number like +31612345678 (URL-encode the + as %2B), "
                                   f"not {customer!r}")
    return customer


def _json_body(allowed: set[str]) -> dict[str, Any]:
    """The optional JSON object body of a POST; an empty body is ``{}``."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadParam("body", "must be a JSON object (send Content-Type: application/json)")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadParam(unknown[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")
    for key, value in data.items():
        if value is not None and not isinstance(value, str):
            raise BadParam(key, "must be a string")
    return data


def _not_configured(name: str, message: str | None = None) -> tuple[int, dict]:
    """The 409 answer for a destination that is not (or no longer) an enabled one."""
    hub = current_app.hub
    return 409, {"error": "destination_not_configured",
                 "message": message or f"No enabled destination named {name!r} is configured.",
                 "details": {"destination": name, "configured": sorted(hub.destinations)}}


# --- JSON forms ----------------------------------------------------------------------

def delivery_json(delivery: Delivery, *, with_attempts: bool = False) -> dict[str, Any]:
    out = {
        "id": delivery.id,
        "report_id": delivery.report_id,
        "destination": delivery.destination,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": isoformat(delivery.next_attempt_at) if delivery.status != DEAD else None,
        "lease_until": isoformat(delivery.lease_until),
        "last_error": delivery.last_error,
        "result": delivery.result,
        "state": delivery.state,
        "created_at": isoformat(delivery.created_at),
        "updated_at": isoformat(delivery.updated_at),
    }
    if with_attempts:
        out["attempt_log"] = [attempt_json(a) for a in current_app.hub.store.list_attempts(delivery.id)]
    return out


def attempt_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": row["number"],
        "started_at": isoformat(row["started_at"]),
        "duration_ms": round(row["duration_ms"], 3),
        "outcome": row["outcome"],
        "http_status": row["http_status"],
        "error": row["error"],
    }


def stats(days: int) -> dict[str, Any]:
    """Delivery counts by destination and status; reports and average sentiment per UTC day."""
    store = current_app.hub.store
    today = utcnow().date()
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    found = store.report_days(since)
    per_day = []
    for n in range(days):
        day = (first + timedelta(days=n)).isoformat()
        entry = found.get(day, {"reports": 0, "average_sentiment": None})
        average = entry["average_sentiment"]
        per_day.append({"date": day, "reports": entry["reports"],
                        "average_sentiment": round(average, 2) if average is not None else None})
    by_destination: dict[str, dict[str, int]] = {}
    for (destination, status), count in sorted(store.delivery_counts().items()):
        by_destination.setdefault(destination, {s: 0 for s in STATUSES})[status] = count
    for name in current_app.hub.destinations:  # configured ones show up even before their first delivery
        by_destination.setdefault(name, {s: 0 for s in STATUSES})
    totals = {s: sum(c[s] for c in by_destination.values()) for s in STATUSES}
    return {"days": days, "since": isoformat(since), "deliveries": dict(sorted(by_destination.items())),
            "delivery_totals": totals, "per_day": per_day}


# --- routes ----------------------------------------------------------------------------

@bp.get("/reports")
def list_reports():
    args = _args({"since", "until", "customer", "limit", "offset"})
    since, until = _datetime(args, "since"), _datetime(args, "until")
    customer = _customer(args)
    limit = _int(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int(args, "offset", 0, 0)
    found = current_app.hub.store.list_reports(since=since, until=until, customer=customer,
                                               limit=limit, offset=offset)
    return jsonify({"reports": [r.to_dict() for r in found], "count": len(found), "limit": limit,
                    "offset": offset, "next_offset": offset + limit if len(found) == limit else None})


@bp.get("/reports/<report_id>")
def get_report(report_id: str):
    _args(set())
    store = current_app.hub.store
    report = store.get_report(report_id)
    if report is None:
        return error_response(404, "report_not_found", f"No report with id {report_id!r}.", {"report_id": report_id})
    found = sorted(store.list_deliveries(report_id=report_id, limit=None), key=lambda d: d.destination)
    return jsonify({"report": report.to_dict(),
                    "deliveries": [delivery_json(d, with_attempts=True) for d in found]})


@bp.get("/deliveries")
def list_deliveries():
    args = _args({"status", "destination", "report_id", "limit"})
    status = _status(args)
    limit = _int(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    found = current_app.hub.store.list_deliveries(status=status, destination=args.get("destination") or None,
                                                  report_id=args.get("report_id") or None, limit=limit)
    return jsonify({"deliveries": [delivery_json(d) for d in found], "count": len(found), "limit": limit})


@bp.get("/deliveries/<delivery_id>")
def get_delivery(delivery_id: str):
    _args(set())
    delivery = current_app.hub.store.get_delivery(delivery_id)
    if delivery is None:
        return error_response(404, "delivery_not_found", f"No delivery with id {delivery_id!r}.",
                              {"delivery_id": delivery_id})
    return jsonify(delivery_json(delivery, with_attempts=True))


def retry_delivery(delivery_id: str):
    """Requeue one delivery; ``(status, body)`` shared with the dashboard's Retry button."""
    hub = current_app.hub
    delivery = hub.store.get_delivery(delivery_id)
    if delivery is None:
        return 404, {"error": "delivery_not_found", "message": f"No delivery with id {delivery_id!r}.",
                     "details": {"delivery_id": delivery_id}}
    if delivery.destination not in hub.destinations:
        return _not_configured(delivery.destination,
                               f"The destination {delivery.destination!r} is not configured (any more); "
                               f"add it back to the configuration, then retry.")
    ids = [] if delivery.status == RUNNING else hub.store.requeue(report_id=delivery.report_id,
                                                                  destination=delivery.destination)
    if not ids:
        return 409, {"error": "delivery_running",
                     "message": "The delivery is being attempted right now; look again when the attempt is over.",
                     "details": {"delivery_id": delivery_id}}
    hub.dispatcher.wake(ids)
    return 202, {"status": "queued", "delivery": delivery_json(hub.store.get_delivery(delivery_id))}


@bp.post("/deliveries/<delivery_id>/retry")
def retry(delivery_id: str):
    _args(set())
    status, body = retry_delivery(delivery_id)
    return jsonify(body), status


def replay_report(report_id: str, destination: str | None):
    """Requeue a report's deliveries (or the one to ``destination``, creating it if need be)."""
    hub = current_app.hub
    if hub.store.get_report(report_id) is None:
        return 404, {"error": "report_not_found", "message": f"No report with id {report_id!r}.",
                     "details": {"report_id": report_id}}
    if destination is not None and destination not in hub.destinations:
        return _not_configured(destination)
    existing = hub.store.list_deliveries(report_id=report_id, destination=destination, limit=None)
    if destination is None and not existing:
        return 409, {"error": "nothing_to_replay",
                     "message": "The report has no deliveries; name a destination to deliver it to: "
                                '{"destination": "<name>"}.',
                     "details": {"configured": sorted(hub.destinations)}}
    ids = hub.store.requeue(report_id=report_id, destination=destination, create_missing=destination is not None)
    skipped = sorted(d.id for d in existing if d.id not in ids)
    if not ids:
        return 409, {"error": "delivery_running",
                     "message": "Every matching delivery is being attempted right now; try again shortly.",
                     "details": {"running": skipped}}
    hub.dispatcher.wake(ids)
    return 202, {"status": "queued", "report_id": report_id,
                 "deliveries": [delivery_json(hub.store.get_delivery(i)) for i in ids],
                 "skipped_running": skipped}


@bp.post("/reports/<report_id>/replay")
def replay(report_id: str):
    _args(set())
    body = _json_body({"destination"})
    status, answer = replay_report(report_id, body.get("destination") or None)
    return jsonify(answer), status


def retry_dead(destination: str | None):
    """Requeue every dead delivery of configured destinations (or of one)."""
    hub = current_app.hub
    if destination is not None and destination not in hub.destinations:
        return _not_configured(destination)
    dead = {name: n for (name, status), n in hub.store.delivery_counts().items() if status == DEAD}
    names = [destination] if destination else sorted(name for name in dead if name in hub.destinations)
    ids = [i for name in names for i in hub.store.requeue(destination=name, dead_only=True)]
    if ids:
        hub.dispatcher.wake(ids)
    skipped = {name: n for name, n in sorted(dead.items()) if name not in hub.destinations}
    return 202, {"status": "queued", "requeued": len(ids), "delivery_ids": ids,
                 "skipped_unconfigured": skipped}


@bp.post("/deliveries/retry-dead")
def retry_dead_route():
    _args(set())
    body = _json_body({"destination"})
    status, answer = retry_dead(body.get("destination") or None)
    return jsonify(answer), status


@bp.get("/stats")
def get_stats():
    args = _args({"days"})
    return jsonify(stats(_int(args, "days", 30, 1, MAX_DAYS)))


@bp.get("/openapi.json")
def openapi():
    _args(set())
    return jsonify(openapi_document())


# --- the OpenAPI document -------------------------------------------------------------

def _error_schema_ref() -> dict:
    return {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "A query parameter or body field is wrong; details.param names it.",
            401: "The bearer token is missing or wrong.",
            404: "Not found.",
            409: "Conflict: the delivery is running, or the destination is not configured.",
            503: "The admin API is disabled: no [admin] token is configured."}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": _error_schema_ref()}}}
            for c in codes}


def _ok(description: str, ref: str, status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": description,
                          "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}}


def _query(name: str, schema: dict, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _header(name: str, description: str, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": {"type": "string"},
            "description": description}


def _destination_body() -> dict[str, Any]:
    return {"required": False, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False,
        "properties": {"destination": {"type": ["string", "null"],
                                       "description": "a configured destination name"}}}}}}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1: every ``/api`` route, and the webhook receiver the platform calls."""
    report_schema = copy.deepcopy(REPORT_JSON_SCHEMA)
    report_schema.pop("$schema", None)
    report_schema.pop("$id", None)
    timestamp = {"type": "string", "format": "date-time"}
    maybe_timestamp = {"type": ["string", "null"], "format": "date-time"}
    status_enum = {"type": "string", "enum": list(STATUSES)}
    counts = {"type": "object", "required": list(STATUSES), "additionalProperties": False,
              "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES}}
    schemas = {
        "Error": {
            "type": "object", "required": ["error", "message", "details"],
            "properties": {"error": {"type": "string", "description": "a stable, machine-readable code"},
                           "message": {"type": "string", "description": "what went wrong and how to fix it"},
                           "details": {"type": "object"}},
        },
        "Report": report_schema,
        "Attempt": {
            "type": "object", "required": ["number", "started_at", "duration_ms", "outcome", "http_status", "error"],
            "properties": {"number": {"type": "integer", "minimum": 1}, "started_at": timestamp,
                           "duration_ms": {"type": "number"},
                           "outcome": {"type": "string", "enum": ["succeeded", "retry", "dead"]},
                           "http_status": {"type": ["integer", "null"]},
                           "error": {"type": ["string", "null"], "description": "secrets are redacted"}},
        },
        "Delivery": {
            "type": "object",
            "required": ["id", "report_id", "destination", "status", "attempts", "next_attempt_at",
                         "lease_until", "last_error", "result", "state", "created_at", "updated_at"],
            "properties": {
                "id": {"type": "string"}, "report_id": {"type": "string"}, "destination": {"type": "string"},
                "status": status_enum, "attempts": {"type": "integer", "minimum": 0},
                "next_attempt_at": {**maybe_timestamp, "description": "when the next attempt is due; null when dead"},
                "lease_until": maybe_timestamp, "last_error": {"type": ["string", "null"]},
                "result": {"type": ["string", "null"]},
                "state": {"type": "object", "description": "what the destination created so far (ids)"},
                "created_at": timestamp, "updated_at": timestamp,
                "attempt_log": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"},
                                "description": "every attempt, oldest first (single-delivery and report views)"},
            },
        },
        "ReportList": {
            "type": "object", "required": ["reports", "count", "limit", "offset", "next_offset"],
            "properties": {"reports": {"type": "array", "items": {"$ref": "#/components/schemas/Report"}},
                           "count": {"type": "integer"}, "limit": {"type": "integer"},
                           "offset": {"type": "integer"},
                           "next_offset": {"type": ["integer", "null"],
                                           "description": "offset of the next page; null on the last page"}},
        },
        "ReportWithDeliveries": {
            "type": "object", "required": ["report", "deliveries"],
            "properties": {"report": {"$ref": "#/components/schemas/Report"},
                           "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}}},
        },
        "DeliveryList": {
            "type": "object", "required": ["deliveries", "count", "limit"],
            "properties": {"deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
                           "count": {"type": "integer"}, "limit": {"type": "integer"}},
        },
        "RetryAnswer": {
            "type": "object", "required": ["status", "delivery"],
            "properties": {"status": {"const": "queued"}, "delivery": {"$ref": "#/components/schemas/Delivery"}},
        },
        "ReplayAnswer": {
            "type": "object", "required": ["status", "report_id", "deliveries", "skipped_running"],
            "properties": {"status": {"const": "queued"}, "report_id": {"type": "string"},
                           "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
                           "skipped_running": {"type": "array", "items": {"type": "string"}}},
        },
        "RetryDeadAnswer": {
            "type": "object", "required": ["status", "requeued", "delivery_ids", "skipped_unconfigured"],
            "properties": {"status": {"const": "queued"}, "requeued": {"type": "integer"},
                           "delivery_ids": {"type": "array", "items": {"type": "string"}},
                           "skipped_unconfigured": {"type": "object", "additionalProperties": {"type": "integer"},
                                                    "description": "dead deliveries left alone because their "
                                                                   "destination is no longer configured"}},
        },
        "Stats": {
            "type": "object", "required": ["days", "since", "deliveries", "delivery_totals", "per_day"],
            "properties": {
                "days": {"type": "integer"}, "since": timestamp,
                "deliveries": {"type": "object", "additionalProperties": counts,
                               "description": "counts by status, per destination"},
                "delivery_totals": counts,
                "per_day": {"type": "array", "items": {
                    "type": "object", "required": ["date", "reports", "average_sentiment"],
                    "properties": {"date": {"type": "string", "format": "date"},
                                   "reports": {"type": "integer", "minimum": 0},
                                   "average_sentiment": {"type": ["number", "null"],
                                                         "description": "mean of numeric analysis.sentiment"}}}},
            },
        },
        "WebhookAccepted": {
            "type": "object", "required": ["status", "report_id"],
            "properties": {
                "status": {"type": "string", "enum": ["accepted", "duplicate", "ignored"]},
                "report_id": {"type": "string"},
                "deliveries": {"type": "array", "items": {
                    "type": "object", "required": ["destination", "status"],
                    "properties": {"destination": {"type": "string"}, "status": status_enum}}},
            },
        },
    }
    limit = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}
    admin = [{"bearerAuth": []}]
    paths = {
        "/api/reports": {"get": {
            "operationId": "listReports", "summary": "Reports, newest first", "security": admin,
            "parameters": [
                _query("since", {"type": "string"}, "received at or after (ISO 8601 date or timestamp; naive = UTC)"),
                _query("until", {"type": "string"}, "received before (ISO 8601)"),
                _query("customer", {"type": "string", "pattern": E164.pattern}, "customer number, E.164"),
                _query("limit", limit, f"page size, at most {MAX_LIMIT}"),
                _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "reports to skip"),
            ],
            "responses": {**_ok("A page of reports", "ReportList"), **_errors(400, 401, 503)}}},
        "/api/reports/{report_id}": {"get": {
            "operationId": "getReport", "summary": "One report with its deliveries and their attempts",
            "security": admin, "parameters": [_path("report_id", "the hub's report id")],
            "responses": {**_ok("The report", "ReportWithDeliveries"), **_errors(400, 401, 404, 503)}}},
        "/api/reports/{report_id}/replay": {"post": {
            "operationId": "replayReport",
            "summary": "Deliver a report again: every delivery, or the one to a destination (created if missing)",
            "security": admin, "parameters": [_path("report_id", "the hub's report id")],
            "requestBody": _destination_body(),
            "responses": {**_ok("Requeued", "ReplayAnswer", 202), **_errors(400, 401, 404, 409, 503)}}},
        "/api/deliveries": {"get": {
            "operationId": "listDeliveries", "summary": "Deliveries, most recently updated first",
            "security": admin,
            "parameters": [_query("status", status_enum, "only this status"),
                           _query("destination", {"type": "string"}, "only this destination"),
                           _query("report_id", {"type": "string"}, "only this report's"),
                           _query("limit", limit, f"at most {MAX_LIMIT}")],
            "responses": {**_ok("Deliveries", "DeliveryList"), **_errors(400, 401, 503)}}},
        "/api/deliveries/{delivery_id}": {"get": {
            "operationId": "getDelivery", "summary": "One delivery with its attempts", "security": admin,
            "parameters": [_path("delivery_id", "the delivery id")],
            "responses": {**_ok("The delivery", "Delivery"), **_errors(400, 401, 404, 503)}}},
        "/api/deliveries/{delivery_id}/retry": {"post": {
            "operationId": "retryDelivery",
            "summary": "Make one delivery due now with a fresh attempt budget (its saved state is kept)",
            "security": admin, "parameters": [_path("delivery_id", "the delivery id")],
            "responses": {**_ok("Requeued", "RetryAnswer", 202), **_errors(400, 401, 404, 409, 503)}}},
        "/api/deliveries/retry-dead": {"post": {
            "operationId": "retryDeadDeliveries",
            "summary": "Requeue every dead delivery of the configured destinations (or of one)",
            "security": admin, "requestBody": _destination_body(),
            "responses": {**_ok("Requeued", "RetryDeadAnswer", 202), **_errors(400, 401, 409, 503)}}},
        "/api/stats": {"get": {
            "operationId": "getStats",
            "summary": "Delivery counts per destination; reports and average sentiment per UTC day",
            "security": admin,
            "parameters": [_query("days", {"type": "integer", "minimum": 1, "maximum": MAX_DAYS, "default": 30},
                                  "how many days, today included")],
            "responses": {**_ok("Statistics", "Stats"), **_errors(400, 401, 503)}}},
        "/api/openapi.json": {"get": {
            "operationId": "getOpenApi", "summary": "This document", "security": admin,
            "responses": {"200": {"description": "OpenAPI 3.1 document",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          **_errors(400, 401, 503)}}},
        "/webhooks/hms": {"post": {
            "operationId": "receiveHmsReport",
            "summary": "Receive an HMS Sovereign webhook (end-of-call report, status update, ...)",
            "description": "Signed by the platform: X-Webhook-Signature is sha256=<hex HMAC-SHA256(secret, "
                           "\"<X-Webhook-Timestamp>.<raw body>\")>. 2xx means the report is stored; "
                           "deliveries happen afterwards.",
            "security": [],
            "parameters": [
                _header("X-Webhook-Signature", "sha256=<hex HMAC-SHA256 of \"<timestamp>.<raw body>\">"),
                _header("X-Webhook-Timestamp", "Unix seconds; rejected outside [sources.hms] tolerance_seconds"),
                _header("X-Webhook-Event", "the event type; must match message.type when sent", required=False),
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["message"],
                "properties": {"message": {"type": "object", "required": ["type"],
                                           "properties": {"type": {"type": "string"}}}}}}}},
            "responses": {
                "202": {"description": "Accepted: stored, deliveries queued",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebhookAccepted"}}}},
                "200": {"description": "Duplicate (already stored) or ignored (no destination wants this event)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebhookAccepted"}}}},
                **{str(code): {"description": text, "content": {"application/json": {"schema": _error_schema_ref()}}}
                   for code, text in [(400, "invalid_json: the body is not JSON"),
                                      (401, "missing or invalid signature, or a stale timestamp"),
                                      (404, "unknown_source"),
                                      (413, "body_too_large ([server] max_body_bytes)"),
                                      (415, "unsupported_media_type: send application/json"),
                                      (422, "invalid_payload (details.fields names each field) or event_mismatch"),
                                      (503, "store_unavailable: not stored, send again later")]},
            }}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sovereign Hub API", "version": _version(),
                 "description": "Admin API of a Sovereign Hub (bearer [admin] token) and the webhook receiver. "
                                "Errors are always {\"error\": code, \"message\": text, \"details\": {...}}."},
        "servers": [{"url": current_app.hub.settings.public_url.rstrip("/")}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer",
                           "description": "the [admin] token of the hub's configuration"}}},
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sovereign-hub")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        return "0.0.0"
