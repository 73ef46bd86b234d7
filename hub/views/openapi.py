"""The OpenAPI 3.1 document of the admin API and the webhook receiver, generated with apispec.

Every schema in it comes from the marshmallow classes the API loads and dumps with
(``hub/api_schemas.py``) and from the source's own payload schema; only the routes, their
summaries and their status codes are written here.
"""
from __future__ import annotations

import copy
from importlib import metadata
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields

from .. import api_schemas as s
from ..report import REPORT_JSON_SCHEMA

ERROR_TEXT = {
    400: "A query parameter or body field is wrong; details.param names it.",
    401: "The bearer token is missing or wrong.",
    404: "Not found.",
    409: "Conflict: the delivery is running, the destination is not configured, or there is nothing to replay.",
    503: "The admin API is disabled: no [admin] token is configured.",
}
WEBHOOK_ERRORS = {
    400: "invalid_json: the body is not JSON",
    401: "missing or invalid signature, or a stale timestamp",
    404: "unknown_source",
    413: "body_too_large ([server] max_body_bytes)",
    415: "unsupported_media_type: send application/json",
    422: "invalid_payload (details.fields names each field) or event_mismatch",
    503: "store_unavailable: not stored, send again later",
}
ADMIN = [{"bearerAuth": []}]


def _extra_properties(self, field: fields.Field, **_: Any) -> dict[str, Any]:
    """What apispec cannot guess: a report is the ``Report`` component, a constant is a ``const``."""
    if isinstance(field, s.ReportField):
        return {"$ref": "#/components/schemas/Report"}
    if isinstance(field, fields.Constant):
        return {"const": field.constant}
    return {}


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: Any, status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": description, "content": _json(schema)}}


def _errors(*codes: int, text: dict[int, str] = ERROR_TEXT) -> dict[str, Any]:
    return {str(c): {"description": text[c], "content": _json("Error")} for c in codes}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _header(name: str, description: str, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": {"type": "string"},
            "description": description}


def _query(schema: type) -> list[dict[str, Any]]:
    return [{"in": "query", "schema": schema}]


def _destination_body() -> dict[str, Any]:
    return {"required": False, "content": _json(s.DestinationBody)}


def _admin_paths() -> dict[str, dict[str, Any]]:
    report_id = _path_param("report_id", "the hub's report id")
    delivery_id = _path_param("delivery_id", "the delivery id")
    number = _path_param("number", "the caller's phone number in any form (E.164, or national in "
                                   "[phone] default_region), URL-encoded")
    name = _path_param("name", "a configured destination's name")
    return {
        "/api/reports": {"get": {
            "operationId": "listReports", "summary": "Reports, newest first",
            "parameters": _query(s.ReportQuery),
            "responses": {**_answer("A page of reports", s.ReportListSchema), **_errors(400, 401, 503)}}},
        "/api/reports/{report_id}": {"get": {
            "operationId": "getReport", "summary": "One report with its deliveries and their attempts",
            "parameters": [report_id],
            "responses": {**_answer("The report", s.ReportWithDeliveriesSchema), **_errors(400, 401, 404, 503)}}},
        "/api/reports/{report_id}/replay": {"post": {
            "operationId": "replayReport",
            "summary": "Deliver a report again: every delivery, or the one to a destination (created if missing)",
            "parameters": [report_id], "requestBody": _destination_body(),
            "responses": {**_answer("Requeued", s.ReplayAnswerSchema, 202), **_errors(400, 401, 404, 409, 503)}}},
        "/api/deliveries": {"get": {
            "operationId": "listDeliveries", "summary": "Deliveries, most recently updated first",
            "parameters": _query(s.DeliveryQuery),
            "responses": {**_answer("Deliveries", s.DeliveryListSchema), **_errors(400, 401, 503)}}},
        "/api/deliveries/{delivery_id}": {"get": {
            "operationId": "getDelivery", "summary": "One delivery with its attempts",
            "parameters": [delivery_id],
            "responses": {**_answer("The delivery", s.DeliverySchema), **_errors(400, 401, 404, 503)}}},
        "/api/deliveries/{delivery_id}/retry": {"post": {
            "operationId": "retryDelivery",
            "summary": "Make one delivery due now with a fresh attempt budget (its saved state is kept)",
            "parameters": [delivery_id],
            "responses": {**_answer("Requeued", s.RetryAnswerSchema, 202), **_errors(400, 401, 404, 409, 503)}}},
        "/api/deliveries/retry-dead": {"post": {
            "operationId": "retryDeadDeliveries",
            "summary": "Requeue every dead delivery of the configured destinations (or of one)",
            "requestBody": _destination_body(),
            "responses": {**_answer("Requeued", s.RetryDeadAnswerSchema, 202), **_errors(400, 401, 409, 503)}}},
        "/api/destinations": {"get": {
            "operationId": "listDestinations", "summary": "The enabled destinations and whether each is paused",
            "responses": {**_answer("Destinations", s.DestinationListSchema), **_errors(400, 401, 503)}}},
        "/api/destinations/{name}/pause": {"post": {
            "operationId": "pauseDestination",
            "summary": "Attempt nothing for a destination until it is resumed; new reports still queue",
            "parameters": [name],
            "responses": {**_answer("Paused", s.DestinationSchema), **_errors(400, 401, 409, 503)}}},
        "/api/destinations/{name}/resume": {"post": {
            "operationId": "resumeDestination", "summary": "Deliver a paused destination's deliveries again",
            "parameters": [name],
            "responses": {**_answer("Resumed", s.DestinationSchema), **_errors(400, 401, 409, 503)}}},
        "/api/destinations/{name}/test": {"post": {
            "operationId": "testDestination",
            "summary": "One cheap authenticated call to the destination: whether delivery can work, and if not, why",
            "parameters": [name],
            "responses": {**_answer("The test call's outcome (ok or not)", s.ConnectionCheckedSchema),
                          **_errors(400, 401, 409, 503)}}},
        "/api/stats": {"get": {
            "operationId": "getStats",
            "summary": "Delivery counts per destination; reports and average sentiment per UTC day; the "
                       "analytics of the window (of one line or assistant)",
            "parameters": _query(s.StatsQuery),
            "responses": {"200": {"description": "Statistics (format=csv: every figure as figure,key,value rows)",
                                  "content": {**_json(s.StatsSchema), "text/csv": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 503)}}},
        "/api/customers/{number}": {"delete": {
            "operationId": "forgetCustomer",
            "summary": "Erase one caller: every report, event, delivery and attempt; the erasure is recorded "
                       "without the number",
            "parameters": [number, *_query(s.ForgetQuery)],
            "responses": {**_answer("Erased (the destinations' erasures queued)", s.ForgetAnswerSchema),
                          **_errors(400, 401, 503)}}},
        "/api/erasures": {"get": {
            "operationId": "listErasures",
            "summary": "The kept erasure records, newest first, each with its erasures queued at the destinations",
            "parameters": _query(s.ErasureQuery),
            "responses": {**_answer("Erasure records", s.ErasureListSchema), **_errors(400, 401, 503)}}},
        "/api/erasures/{erasure_id}": {"get": {
            "operationId": "getErasure",
            "summary": "One erasure record and the state of each erasure queued at a destination",
            "parameters": [_path_param("erasure_id", "the erasure record's id (forget's answer names it)")],
            "responses": {**_answer("The erasure record", s.ErasureSchema), **_errors(400, 401, 404, 503)}}},
        "/api/customers/{number}/export": {"get": {
            "operationId": "exportCustomer",
            "summary": "Everything the hub holds about one caller: reports, events, deliveries, attempts",
            "parameters": [number],
            "responses": {**_answer("The caller's data", s.CustomerExportSchema), **_errors(400, 401, 503)}}},
        "/api/openapi.json": {"get": {
            "operationId": "getOpenApi", "summary": "This document",
            "responses": {**_answer("OpenAPI 3.1 document", {"type": "object"}), **_errors(400, 401, 503)}}},
    }


def _webhook_path(payload_schema) -> dict[str, Any]:
    accepted = {"description": "Accepted: stored, deliveries queued", "content": _json(s.WebhookAnswerSchema)}
    repeated = {"description": "Duplicate (already stored) or ignored (no destination wants this event)",
                "content": _json(s.WebhookAnswerSchema)}
    return {"post": {
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
        "requestBody": {"required": True, "content": _json(payload_schema)},
        "responses": {"202": accepted, "200": repeated, **_errors(*WEBHOOK_ERRORS, text=WEBHOOK_ERRORS)},
    }}


def build_document(public_url: str, webhook_schema) -> dict[str, Any]:
    """OpenAPI 3.1: every ``/api`` route, and the HMS webhook receiver (``webhook_schema``: its payload)."""
    plugin = MarshmallowPlugin(schema_name_resolver=lambda schema: None)
    spec = APISpec(
        title="Sovereign Hub API", version=_version(), openapi_version="3.1.0", plugins=[plugin],
        info={"description": "Admin API of a Sovereign Hub (bearer [admin] token) and the webhook receiver. "
                             "Errors are always {\"error\": code, \"message\": text, \"details\": {...}}."},
        servers=[{"url": public_url.rstrip("/")}], security=ADMIN)
    plugin.converter.add_attribute_function(_extra_properties)
    report = copy.deepcopy(REPORT_JSON_SCHEMA)
    report.pop("$schema", None)
    report.pop("$id", None)
    spec.components.schema("Report", report)
    for name, schema in [("Error", s.ErrorSchema), ("Attempt", s.AttemptSchema), ("Delivery", s.DeliverySchema),
                         ("ReportList", s.ReportListSchema), ("ReportWithDeliveries", s.ReportWithDeliveriesSchema),
                         ("DeliveryList", s.DeliveryListSchema), ("RetryAnswer", s.RetryAnswerSchema),
                         ("ReplayAnswer", s.ReplayAnswerSchema), ("RetryDeadAnswer", s.RetryDeadAnswerSchema),
                         ("DeliveryCounts", s.DeliveryCountsSchema), ("Day", s.DaySchema), ("Stats", s.StatsSchema),
                         ("Destination", s.DestinationSchema), ("DestinationList", s.DestinationListSchema),
                         ("WebhookAccepted", s.WebhookAnswerSchema), ("ErasureCounts", s.ErasureCountsSchema),
                         ("ForgetAnswer", s.ForgetAnswerSchema), ("CustomerExport", s.CustomerExportSchema)]:
        spec.components.schema(name, schema=schema)
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer",
                                                   "description": "the [admin] token of the hub's configuration"})
    for path, operations in _admin_paths().items():
        spec.path(path=path, operations=operations)
    spec.path(path="/webhooks/hms", operations=_webhook_path(webhook_schema))
    return spec.to_dict()


def _version() -> str:
    try:
        return metadata.version("sovereign-hub")
    except metadata.PackageNotFoundError:  # running from a checkout that is not installed
        return "0.0.0"
