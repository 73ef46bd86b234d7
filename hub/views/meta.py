"""Health, readiness and Prometheus metrics."""
from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from .errors import error_response

bp = Blueprint("meta", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    try:
        current_app.hub.store.ping()
    except SQLAlchemyError as exc:
        return error_response(503, "store_unavailable", f"The store is not reachable: {type(exc).__name__}")
    return jsonify({"status": "ready"})


@bp.get("/metrics")
def prometheus():
    expected = current_app.hub.config.server.metrics_token
    if expected:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"),
                                                                 expected.encode("utf-8")):
            response = error_response(401, "unauthorized", "GET /metrics needs Authorization: Bearer "
                                      "<[server] metrics_token>.", {"config_key": "server.metrics_token"})
            response[0].headers["WWW-Authenticate"] = 'Bearer realm="sovereign-hub metrics"'
            return response
    body, content_type = metrics.render(current_app.hub.store)
    return Response(body, content_type=content_type)
