"""``/api/...``: the admin API (reports, deliveries, retry/replay, stats, its OpenAPI document).

Every route needs ``Authorization: Bearer <[admin] token>``. With no token configured the
API answers 503 ``admin_disabled``; it never falls open. Cookies play no part here, so the
API needs no CSRF protection (the dashboard, which uses a session cookie, has its own).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import Schema, ValidationError

from .. import api_schemas as schemas
from .. import operations as ops
from ..analytics import to_csv
from . import auth_throttle as throttle
from .admin_auth import admin_disabled, admin_token, token_matches
from .errors import error_response
from .openapi import build_document

bp = Blueprint("api", __name__, url_prefix="/api")

class BadParam(Exception):
    """A query parameter or body field that cannot be used; answered as 400 naming it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
        self.message = message


# --- auth -------------------------------------------------------------------------------

@bp.before_request
def require_bearer_token():
    if admin_token() is None:
        return admin_disabled()
    wait = throttle.retry_after()
    if wait is not None:
        return throttle.too_many_tries(wait)
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        response = error_response(401, "unauthorized", "Send the admin token: Authorization: Bearer <token>.")
    elif scheme.lower() != "bearer" or not given.strip():
        response = error_response(401, "unauthorized", "The Authorization header must be: Bearer <token>.")
    elif not token_matches(given.strip()):
        response = error_response(401, "invalid_token", "The admin token is not valid.")
    else:
        throttle.record_success()
        return None
    if header:  # a request sent without a token is no guess at one
        throttle.record_failure(response[0].json["error"])
    response[0].headers["WWW-Authenticate"] = 'Bearer realm="sovereign-hub"'
    return response


@bp.after_app_request
def no_store(response):
    """Answers hold call data: no browser or proxy cache keeps them. Every answer under /api, also
    those for a path no route of this blueprint takes (a 404 answered by the app)."""
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(BadParam)
def bad_param(exc: BadParam):
    return error_response(400, "invalid_parameter", f"{exc.param}: {exc.message}", {"param": exc.param})


def status_of(exc: ops.OperationError) -> int:
    """The HTTP status of an operation's error (shared with the dashboard's pages)."""
    if isinstance(exc, ops.NotFound):
        return 404
    if isinstance(exc, ops.InvalidArgument):
        return 400
    return 409


@bp.errorhandler(ops.OperationError)
def operation_error(exc: ops.OperationError):
    return error_response(status_of(exc), exc.code, exc.message, exc.details)


# --- reading requests -----------------------------------------------------------------

def _load(schema: type[Schema], data: Any) -> dict[str, Any]:
    """``data`` through ``schema``; the first problem is a ``BadParam`` naming its parameter."""
    try:
        return schema().load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"body": exc.messages}
        unknown = sorted(k for k, v in messages.items() if v == ["Unknown field."])
        if unknown:
            allowed = ", ".join(sorted(schema().fields)) or "none"
            raise BadParam(unknown[0], f"unknown {'field' if schema is schemas.DestinationBody else 'query parameter'}"
                                       f" (allowed: {allowed})") from None
        param, problems = next(iter(messages.items()))
        if param == "_schema":
            raise BadParam("body", "must be a JSON object (send Content-Type: application/json)") from None
        raise BadParam(param, problems[0] if isinstance(problems, list) else str(problems)) from None


def _query(schema: type[Schema]) -> dict[str, Any]:
    """The query parameters; an empty one counts as not given."""
    return _load(schema, {k: v for k, v in request.args.items() if v != ""})


def _destination() -> str | None:
    """The optional ``{"destination": name}`` body of a POST; an empty body names none."""
    if not request.get_data(cache=True).strip():
        return None
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadParam("body", "must be a JSON object (send Content-Type: application/json)")
    return _load(schemas.DestinationBody, data)["destination"] or None


def _answer(schema: type[Schema], outcome: Any, status: int = 200):
    return jsonify(schema().dump(outcome)), status


# --- routes ----------------------------------------------------------------------------

@bp.get("/reports")
def list_reports():
    page = ops.list_reports(current_app.hub, **_query(schemas.ReportQuery))
    return _answer(schemas.ReportListSchema, {"reports": page.reports, "count": len(page.reports),
                                              "limit": page.limit, "offset": page.offset,
                                              "next_offset": page.next_offset})


@bp.get("/reports/<report_id>")
def get_report(report_id: str):
    _query(schemas.NoQuery)
    return _answer(schemas.ReportWithDeliveriesSchema, ops.get_report(current_app.hub, report_id))


@bp.get("/deliveries")
def list_deliveries():
    query = _query(schemas.DeliveryQuery)
    found = ops.list_deliveries(current_app.hub, **query)
    return _answer(schemas.DeliveryListSchema, {"deliveries": found, "count": len(found), "limit": query["limit"]})


@bp.get("/deliveries/<delivery_id>")
def get_delivery(delivery_id: str):
    _query(schemas.NoQuery)
    return _answer(schemas.DeliverySchema, ops.get_delivery(current_app.hub, delivery_id))


@bp.post("/deliveries/<delivery_id>/retry")
def retry(delivery_id: str):
    _query(schemas.NoQuery)
    return _answer(schemas.RetryAnswerSchema, ops.retry_delivery(current_app.hub, delivery_id), 202)


@bp.post("/reports/<report_id>/replay")
def replay(report_id: str):
    _query(schemas.NoQuery)
    return _answer(schemas.ReplayAnswerSchema, ops.replay_report(current_app.hub, report_id, _destination()), 202)


@bp.post("/deliveries/retry-dead")
def retry_dead():
    _query(schemas.NoQuery)
    return _answer(schemas.RetryDeadAnswerSchema, ops.retry_dead(current_app.hub, _destination()), 202)


@bp.delete("/customers/<path:number>")
def forget_customer(number: str):
    """Erase one caller; with ``?destinations=true`` also queue the erasure at the destinations."""
    query = _query(schemas.ForgetQuery)
    return _answer(schemas.ForgetAnswerSchema, ops.forget(current_app.hub, number, actor="api",
                                                          destinations=query["destinations"]))


@bp.get("/erasures")
def list_erasures():
    query = _query(schemas.ErasureQuery)
    return _answer(schemas.ErasureListSchema, {"erasures": ops.list_erasures(current_app.hub, limit=query["limit"])})


@bp.get("/erasures/<erasure_id>")
def get_erasure(erasure_id: str):
    _query(schemas.NoQuery)
    return _answer(schemas.ErasureSchema, ops.get_erasure(current_app.hub, erasure_id))


@bp.get("/customers/<path:number>/export")
def export_customer(number: str):
    _query(schemas.NoQuery)
    return _answer(schemas.CustomerExportSchema, ops.export_customer(current_app.hub, number))


@bp.get("/destinations")
def list_destinations():
    _query(schemas.NoQuery)
    return _answer(schemas.DestinationListSchema, {"destinations": ops.list_destinations(current_app.hub)})


@bp.post("/destinations/<name>/pause")
def pause_destination(name: str):
    _query(schemas.NoQuery)
    return _answer(schemas.DestinationSchema, ops.pause_destination(current_app.hub, name))


@bp.post("/destinations/<name>/resume")
def resume_destination(name: str):
    _query(schemas.NoQuery)
    return _answer(schemas.DestinationSchema, ops.resume_destination(current_app.hub, name))


@bp.post("/destinations/<name>/test")
def test_destination(name: str):
    _query(schemas.NoQuery)
    return _answer(schemas.ConnectionCheckedSchema, ops.check_connection(current_app.hub, name))


@bp.get("/stats")
def get_stats():
    query = _query(schemas.StatsQuery)
    hub, as_csv = current_app.hub, query.pop("format") == "csv"
    figures = ops.analytics(hub, query["days"], line=query["line"], assistant=query["assistant"])
    if as_csv:
        return Response(to_csv(figures), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="sovereign-hub-stats.csv"'})
    return _answer(schemas.StatsSchema, schemas.stats_answer(ops.stats(hub, query["days"]), figures))


@bp.get("/openapi.json")
def openapi():
    _query(schemas.NoQuery)
    return jsonify(openapi_document())


def openapi_document() -> dict[str, Any]:
    """This hub's OpenAPI document (its public URL, its HMS source's payload schema)."""
    hub = current_app.hub
    return build_document(hub.settings.public_url, hub.sources["hms"].schema)
