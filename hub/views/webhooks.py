"""``POST /webhooks/<source>``: limits, signature, parse, validate, store, answer. Nothing slower
(an assistant-request or tool-calls answer waits for its lookups and tools within its budget only)."""
from __future__ import annotations

import logging
import time

from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from .. import logs, metrics
from ..core import UnusablePayload
from .errors import error_response
from ..report import loads_json
from ..sources import SignatureError

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)


def _reject(source: str, status: int, code: str, message: str, details: dict | None = None):
    metrics.REPORTS.labels(source, "rejected").inc()
    logs.event(log, "report.rejected", logging.WARNING, source=source, http_status=status, error=code)
    return error_response(status, code, message, details)


@bp.post("/webhooks/<source_name>")
def receive(source_name: str):
    started = time.monotonic()  # an answer's budget counts from here
    hub = current_app.hub
    source = hub.sources.get(source_name)
    if source is None:
        return error_response(404, "unknown_source", f"No source named {source_name!r} is installed.",
                              {"installed": sorted(hub.sources)})
    limit = hub.config.server.max_body_bytes
    too_large = (413, "body_too_large", f"The body is larger than {limit} bytes.", {"max_body_bytes": limit})
    if (request.content_length or 0) > limit:
        return _reject(source_name, *too_large)
    if request.mimetype != "application/json":
        return _reject(source_name, 415, "unsupported_media_type",
                       "The body must be sent as Content-Type: application/json.",
                       {"content_type": request.content_type})
    body = request.stream.read(limit + 1)  # chunked bodies carry no Content-Length: count them too
    if len(body) > limit:
        return _reject(source_name, *too_large)
    try:
        source.verify(body, request.headers, time.time())
    except SignatureError as exc:
        return _reject(source_name, 401, exc.code, exc.message)
    try:
        raw = loads_json(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return _reject(source_name, 400, "invalid_json", f"The body is not valid JSON: {exc}")
    try:
        payload = source.schema.load(raw)
    except ValidationError as exc:
        return _reject(source_name, 422, "invalid_payload", "The payload does not match the expected schema.",
                       {"fields": exc.messages})
    header_event = request.headers.get("X-Webhook-Event")
    if header_event and header_event != source.event_of(payload):
        return _reject(source_name, 422, "event_mismatch",
                       f"X-Webhook-Event says {header_event!r} but message.type is {source.event_of(payload)!r}.")
    try:
        result = hub.ingest(source_name, payload, raw)
    except UnusablePayload as exc:
        log.warning("source %s could not normalize a payload", source_name, exc_info=exc.cause)
        return _reject(source_name, 422, "unusable_payload", str(exc), {"source": source_name})
    except SQLAlchemyError:
        log.exception("store unavailable")
        metrics.REPORTS.labels(source_name, "error").inc()
        return error_response(503, "store_unavailable", "The report could not be stored; send it again later.")
    metrics.REPORTS.labels(source_name, result.status).inc()
    if hub.answers.handles(result.report.event):
        # assistant-request, tool-calls: the platform acts on the answer (hub.answers)
        answered = hub.answers.respond(result.report, result.report_id, result.status == "duplicate", started)
        response = jsonify(answered.answer)
        response.call_on_close(lambda: hub.answers.keep(result.report, result.report_id, answered))
        return response, 200
    answer = {"status": result.status, "report_id": result.report_id}
    if result.status == "accepted":
        answer["deliveries"] = [{"destination": name, "status": status} for name, status in result.deliveries]
        return jsonify(answer), 202
    return jsonify(answer), 200
