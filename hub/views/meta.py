"""Health, readiness and Prometheus metrics."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
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
    body, content_type = metrics.render(current_app.hub.store)
    return Response(body, content_type=content_type)
