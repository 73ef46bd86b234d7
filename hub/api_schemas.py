"""The admin API's JSON, as marshmallow schemas: what it reads and what it answers.

The API loads its query parameters and bodies with the ``*Query``/``*Body`` schemas and dumps
every answer with the others; the CLI prints deliveries with ``DeliverySchema`` too, so a
delivery has one JSON form. ``hub/views/openapi.py`` generates the OpenAPI document from these
same classes, so the document cannot drift from what the API does.
"""
from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from .report import isoformat, parse_datetime
from .store import STATUSES

MAX_LIMIT = 500
#: a store's integers are 64-bit: a larger offset is a 400, not an overflow in the driver
MAX_OFFSET = 2**63 - 1
DEFAULT_LIMIT = 50
MAX_DAYS = 366
E164_PATTERN = r"^\+[1-9]\d{1,14}$"


# --- fields -------------------------------------------------------------------------------

class Timestamp(fields.DateTime):
    """UTC, ISO 8601 with a ``Z`` and milliseconds when written; any ISO 8601 date or timestamp
    (naive = UTC) when read."""

    def _serialize(self, value, attr, obj, **kwargs):
        return isoformat(value)

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_datetime(str(value))
        except ValueError:
            raise ValidationError(f"must be an ISO 8601 date or timestamp (2026-03-02 or 2026-03-02T09:15:00Z), "
                                  f"not {value!r}") from None


class ReportField(fields.Field):
    """A ``CallReport`` in its JSON form (docs/report.md); documented as the ``Report`` component."""

    def _serialize(self, value, attr, obj, **kwargs):
        return value.to_dict()


class Milliseconds(fields.Float):
    def _serialize(self, value, attr, obj, **kwargs):
        return round(value, 3)


def _bounded(low: int, high: int | None = None, **kwargs) -> fields.Integer:
    text = f"between {low} and {high}" if high is not None else f"at least {low}"
    return fields.Integer(validate=validate.Range(low, high, error=f"must be {text}, not {{input}}"),
                          error_messages={"invalid": "must be an integer"}, **kwargs)


def _text(**kwargs) -> fields.String:
    return fields.String(error_messages={"invalid": "must be a string"}, **kwargs)


# --- what the API reads -------------------------------------------------------------------

class _Strict(Schema):
    class Meta:
        unknown = RAISE


class ReportQuery(_Strict):
    since = Timestamp(metadata={"description": "received at or after (ISO 8601 date or timestamp; naive = UTC)"})
    until = Timestamp(metadata={"description": "received before (ISO 8601)"})
    customer = _text(validate=validate.Regexp(
        E164_PATTERN, error="must be an E.164 number like +31612345678 (URL-encode the + as %2B), not {input!r}"),
        metadata={"description": "customer number, E.164"})
    limit = _bounded(1, MAX_LIMIT, load_default=DEFAULT_LIMIT,
                     metadata={"description": f"page size, at most {MAX_LIMIT}"})
    offset = _bounded(0, MAX_OFFSET, load_default=0, metadata={"description": "reports to skip"})


class DeliveryQuery(_Strict):
    status = _text(validate=validate.OneOf(STATUSES, error=f"must be one of {', '.join(STATUSES)}, not {{input!r}}"),
                   metadata={"description": "only this status"})
    destination = _text(metadata={"description": "only this destination"})
    report_id = _text(metadata={"description": "only this report's"})
    limit = _bounded(1, MAX_LIMIT, load_default=DEFAULT_LIMIT, metadata={"description": f"at most {MAX_LIMIT}"})


class StatsQuery(_Strict):
    days = _bounded(1, MAX_DAYS, load_default=30, metadata={"description": "how many days, today included"})
    line = fields.String(validate=validate.Regexp(E164_PATTERN, error="must be an E.164 number like +31850835037"),
                         load_default=None, metadata={"description": "only calls to or from this line (E.164)"})
    assistant = _text(load_default=None, metadata={"description": "only calls of this assistant (its name, else id)"})
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]), metadata={
        "description": "csv: every figure as figure,key,value rows (text/csv)"})


class NoQuery(_Strict):
    """Routes that take no query parameter."""


class DestinationBody(_Strict):
    destination = _text(allow_none=True, load_default=None,
                        metadata={"description": "a configured destination name"})


# --- what the API answers -----------------------------------------------------------------

def _required(field: fields.Field) -> fields.Field:
    field.required = True
    return field


class ErrorSchema(Schema):
    error = _required(fields.String(metadata={"description": "a stable, machine-readable code"}))
    message = _required(fields.String(metadata={"description": "what went wrong and how to fix it"}))
    details = _required(fields.Dict())


class AttemptSchema(Schema):
    number = _required(fields.Integer(validate=validate.Range(min=1)))
    started_at = _required(Timestamp())
    duration_ms = _required(Milliseconds())
    outcome = _required(fields.String(validate=validate.OneOf(["succeeded", "retry", "dead"])))
    http_status = _required(fields.Integer(allow_none=True))
    error = _required(fields.String(allow_none=True, metadata={"description": "secrets are redacted"}))


class DeliverySchema(Schema):
    id = _required(fields.String())
    report_id = _required(fields.String())
    destination = _required(fields.String())
    status = _required(fields.String(validate=validate.OneOf(STATUSES)))
    attempts = _required(fields.Integer(validate=validate.Range(min=0)))
    next_attempt_at = _required(Timestamp(allow_none=True, metadata={
        "description": "when the next attempt is due; null when dead"}))
    lease_until = _required(Timestamp(allow_none=True))
    last_error = _required(fields.String(allow_none=True))
    result = _required(fields.String(allow_none=True))
    state = _required(fields.Dict(metadata={"description": "what the destination created so far (ids)"}))
    created_at = _required(Timestamp())
    updated_at = _required(Timestamp())
    attempt_log = fields.List(fields.Nested(AttemptSchema), metadata={
        "description": "every attempt, oldest first (single-delivery and report views)"})


class ReportListSchema(Schema):
    reports = _required(fields.List(ReportField()))
    count = _required(fields.Integer())
    limit = _required(fields.Integer())
    offset = _required(fields.Integer())
    next_offset = _required(fields.Integer(allow_none=True, metadata={
        "description": "offset of the next page; null on the last page"}))


class ReportWithDeliveriesSchema(Schema):
    report = _required(ReportField())
    deliveries = _required(fields.List(fields.Nested(DeliverySchema)))


class CustomerExportSchema(Schema):
    number = _required(fields.String(metadata={"description": "the caller, E.164"}))
    exported_at = _required(Timestamp())
    reports = _required(fields.List(fields.Nested(ReportWithDeliveriesSchema), metadata={
        "description": "every report and event of the caller, oldest first, with deliveries and attempts"}))


class ErasureCountsSchema(Schema):
    reports = _required(fields.Integer(validate=validate.Range(min=0)))
    deliveries = _required(fields.Integer(validate=validate.Range(min=0)))
    attempts = _required(fields.Integer(validate=validate.Range(min=0)))


class DestinationErasureSchema(Schema):
    destination = _required(fields.String())
    status = _required(fields.String(validate=validate.OneOf(STATUSES)))
    attempts = _required(fields.Integer(validate=validate.Range(min=0)))
    next_attempt_at = _required(Timestamp(allow_none=True, metadata={
        "description": "when the next attempt is due; null once it ended"}))
    held = _required(fields.String(allow_none=True, metadata={
        "description": "why a pending erasure waits (its destination is paused or not configured)"}))
    last_error = _required(fields.String(allow_none=True, metadata={"description": "secrets and numbers scrubbed"}))
    result = _required(fields.String(allow_none=True, metadata={"description": "what the destination erased"}))
    updated_at = _required(Timestamp())
    attempt_log = _required(fields.List(fields.Nested(AttemptSchema), metadata={"description": "oldest first"}))


class ErasureSchema(Schema):
    id = _required(fields.Integer())
    erased_at = _required(Timestamp())
    actor = _required(fields.String(metadata={"description": "cli, api or dashboard"}))
    counts = _required(fields.Nested(ErasureCountsSchema, metadata={"description": "rows deleted, per table"}))
    destinations = _required(fields.Dict(keys=fields.String(), values=fields.String(), metadata={
        "description": "what each enabled destination said when asked: queued, or cannot erase: ..."}))
    queued = _required(fields.List(fields.Nested(DestinationErasureSchema), metadata={
        "description": "the erasures queued at the destinations, run by the hub like deliveries"}))
    ended = _required(fields.Boolean(metadata={"description": "every queued erasure succeeded or is dead"}))


class ErasureListSchema(Schema):
    erasures = _required(fields.List(fields.Nested(ErasureSchema), metadata={"description": "newest first"}))


class ForgetQuery(_Strict):
    destinations = fields.Boolean(load_default=False, error_messages={"invalid": "must be true or false"},
                                  metadata={"description": "also queue the erasure at every enabled destination "
                                                           "whose type can erase"})


class ErasureQuery(_Strict):
    limit = _bounded(1, MAX_LIMIT, load_default=DEFAULT_LIMIT)


class ForgetAnswerSchema(Schema):
    status = _required(fields.Constant("erased"))
    number = _required(fields.String(metadata={"description": "masked"}))
    counts = _required(fields.Nested(ErasureCountsSchema, metadata={"description": "rows deleted, per table"}))
    destinations = _required(fields.Dict(keys=fields.String(), values=fields.String(), metadata={
        "description": "with destinations=true: queued, or cannot erase: ... per enabled destination"}))
    erasure = _required(fields.Nested(ErasureSchema, metadata={
        "description": "the kept record; GET /api/erasures/{id} follows its queued erasures"}))


class DeliveryListSchema(Schema):
    deliveries = _required(fields.List(fields.Nested(DeliverySchema)))
    count = _required(fields.Integer())
    limit = _required(fields.Integer())


def _queued() -> fields.Constant:
    return _required(fields.Constant("queued"))


class RetryAnswerSchema(Schema):
    status = _queued()
    delivery = _required(fields.Nested(DeliverySchema))


class ReplayAnswerSchema(Schema):
    status = _queued()
    report_id = _required(fields.String())
    deliveries = _required(fields.List(fields.Nested(DeliverySchema)))
    skipped_running = _required(fields.List(fields.String()))


class RetryDeadAnswerSchema(Schema):
    status = _queued()
    requeued = _required(fields.Integer())
    delivery_ids = _required(fields.List(fields.String()))
    skipped_unconfigured = _required(fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "dead deliveries left alone because their destination is no longer configured"}))


DeliveryCountsSchema = Schema.from_dict(
    {status: _required(fields.Integer(validate=validate.Range(min=0))) for status in STATUSES},
    name="DeliveryCountsSchema")


class DaySchema(Schema):
    date = _required(fields.String(metadata={"format": "date"}))
    reports = _required(fields.Integer(validate=validate.Range(min=0)))
    average_sentiment = _required(fields.Float(allow_none=True, metadata={
        "description": "mean of numeric analysis.sentiment"}))


def _nullable_float(description: str | None = None):
    return _required(fields.Float(allow_none=True, metadata={"description": description} if description else {}))


class FieldSummarySchema(Schema):
    name = _required(fields.String())
    kind = _required(fields.String(validate=validate.OneOf(["enum", "boolean", "number"])))
    answered = _required(fields.Integer(metadata={"description": "calls whose analysis held a value of the field's type"}))
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), allow_none=True,
                         metadata={"description": "enum: calls per value"})
    rate = fields.Float(allow_none=True, metadata={"description": "boolean: share of true"})
    average = fields.Float(allow_none=True, metadata={"description": "number: the average"})
    per_day = fields.List(fields.Float(allow_none=True), allow_none=True,
                          metadata={"description": "number: the average per day (the trend)"})


class DestinationSummarySchema(Schema):
    name = _required(fields.String())
    deliveries = _required(fields.Integer())
    succeeded = _required(fields.Integer())
    dead = _required(fields.Integer())
    success_rate = _nullable_float("succeeded / (succeeded + dead)")
    p50_seconds = _nullable_float("median time from the report's acknowledgement to the delivery's success")
    p95_seconds = _nullable_float("95th percentile of the same")


class DurationBucketSchema(Schema):
    bucket = _required(fields.String())
    calls = _required(fields.Integer())


class AnalyticsSchema(Schema):
    since = _required(Timestamp())
    dates = _required(fields.List(fields.String(metadata={"format": "date"})))
    line = fields.String(allow_none=True)
    assistant = fields.String(allow_none=True)
    calls = _required(fields.Integer(metadata={"description": "end-of-call reports in the window"}))
    calls_per_day = _required(fields.List(fields.Integer()))
    sentiment_per_day = _required(fields.List(fields.Float(allow_none=True)))
    hour_of_week = _required(fields.List(fields.List(fields.Integer()), metadata={
        "description": "calls per UTC hour: 7 rows (Monday first) of 24"}))
    fields_ = _required(fields.List(fields.Nested(FieldSummarySchema), data_key="fields", attribute="fields",
                                    metadata={"description": "each field of the [analysis] schema, by its type"}))
    durations = _required(fields.List(fields.Nested(DurationBucketSchema), metadata={
        "description": "calls per duration bucket"}))
    destinations = _required(fields.List(fields.Nested(DestinationSummarySchema)))
    lines = _required(fields.List(fields.String()))
    assistants = _required(fields.List(fields.String()))


class StatsSchema(Schema):
    days = _required(fields.Integer())
    since = _required(Timestamp())
    deliveries = _required(fields.Dict(keys=fields.String(), values=fields.Nested(DeliveryCountsSchema),
                                       metadata={"description": "counts by status, per destination"}))
    delivery_totals = _required(fields.Nested(DeliveryCountsSchema))
    per_day = _required(fields.List(fields.Nested(DaySchema)))
    paused = _required(fields.List(fields.String(), metadata={"description": "the paused destinations"}))
    analytics = _required(fields.Nested(AnalyticsSchema))


class DestinationSchema(Schema):
    name = _required(fields.String())
    type = _required(fields.String())
    paused = _required(fields.Boolean(metadata={"description": "nothing is attempted while paused"}))
    paused_at = _required(Timestamp(allow_none=True))


class DestinationListSchema(Schema):
    destinations = _required(fields.List(fields.Nested(DestinationSchema)))


def stats_answer(stats, analytics) -> dict:
    """What ``StatsSchema`` dumps: the stats with the analytics of the same window."""
    return {**stats.__dict__, "analytics": analytics}


class ConnectionCheckedSchema(Schema):
    destination = _required(fields.String())
    type = _required(fields.String())
    ok = _required(fields.Boolean())
    problem = _required(fields.String(allow_none=True, validate=validate.OneOf(
        ["bad_token", "missing_scope", "unreachable", "rejected", "error"]), metadata={
        "description": "null when ok; bad_token (401), missing_scope (403), unreachable (network, 5xx, 429), "
                       "rejected (anything else the far side refused), error (the type's own bug)"}))
    message = _required(fields.String(metadata={"description": "one line: what was reached, or what is wrong"}))


class WebhookDeliverySchema(Schema):
    destination = _required(fields.String())
    status = _required(fields.String(validate=validate.OneOf(STATUSES)))


class WebhookAnswerSchema(Schema):
    status = _required(fields.String(validate=validate.OneOf(["accepted", "duplicate", "ignored"])))
    report_id = _required(fields.String())
    deliveries = fields.List(fields.Nested(WebhookDeliverySchema))
