"""Salesforce's error answers mapped to the hub's ``Retryable`` / ``Permanent``.

REST errors are a JSON list of ``{"errorCode", "message", "fields"}``; the token endpoint
answers ``{"error", "error_description"}``. The generic ``raise_for_response`` cannot be
used as it is: Salesforce reports an exhausted API quota as 403 ``REQUEST_LIMIT_EXCEEDED``
(retry later, not a permission problem) and an expired token as 401
``INVALID_SESSION_ID`` (fetch a new token and try again once).
"""
from __future__ import annotations

from typing import Any

import requests
from hub import Permanent, Retryable, redact, retry_after_seconds


FIELD_ERRORS = {
    "INVALID_FIELD", "REQUIRED_FIELD_MISSING", "INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_TYPE",
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "FIELD_CUSTOM_VALIDATION_EXCEPTION", "STRING_TOO_LONG",
    "MALFORMED_ID", "INVALID_CROSS_REFERENCE_KEY", "FIELD_INTEGRITY_EXCEPTION", "JSON_PARSER_ERROR",
    "NOT_FOUND", "INVALID_ID_FIELD", "DUPLICATES_DETECTED", "DUPLICATE_VALUE", "FIELD_FILTER_VALIDATION_EXCEPTION",
}
PERMISSION_ERRORS = {
    "INSUFFICIENT_ACCESS", "INSUFFICIENT_ACCESS_OR_READONLY", "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
    "API_DISABLED_FOR_ORG", "API_CURRENTLY_DISABLED", "FUNCTIONALITY_NOT_ENABLED", "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
}
PERMISSION_FIX = ("give the integration user (the client credentials 'Run As' user, or the JWT username) "
                  "API Enabled and create access to Task, Contact, Lead and Opportunity and read access to "
                  "their phone fields (profile or permission set); to erase callers (forget --destinations), "
                  "also delete access to Task, Contact and Lead")
TOKEN_FIX = {
    "invalid_client_id": "client_id is not the consumer key of a connected/external client app in this org",
    "invalid_client": "client_id/client_secret are wrong, or the app does not allow this flow "
                      "(enable 'Client Credentials Flow' and set a Run As user)",
    "invalid_grant": "the JWT was refused: check username, audience (https://login.salesforce.com, or "
                     "https://test.salesforce.com for a sandbox), that the certificate uploaded to the app matches "
                     "private_key, and that the user is pre-authorized (Admin approved users + profile/permission set)",
    "unsupported_grant_type": "the app does not allow this OAuth flow; enable it in the app's OAuth settings",
    "invalid_request": "login_url must be the org's My Domain URL (https://<domain>.my.salesforce.com) "
                       "for the client credentials flow",
    "inactive_user": "the integration user is inactive; activate it or choose another Run As user",
    "inactive_org": "the org is locked or inactive",
    "rate_limit_exceeded": "too many logins; it will be retried",
}


class SessionExpired(Exception):
    """401 INVALID_SESSION_ID: the cached token is dead; fetch another and repeat the request once."""


def salesforce_errors(response: requests.Response) -> list[dict[str, Any]]:
    """The ``[{"errorCode", "message", "fields"}]`` of a REST error answer (or one made up from its text)."""
    try:
        body = response.json()
    except ValueError:
        return [{"errorCode": f"HTTP_{response.status_code}", "message": (response.text or "")[:300], "fields": []}]
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        return [{"errorCode": f"HTTP_{response.status_code}", "message": str(body)[:300], "fields": []}]
    return [e for e in body if isinstance(e, dict)]


def describe(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors[:3]:
        code = error.get("errorCode") or error.get("error") or "ERROR"
        message = error.get("message") or error.get("error_description") or ""
        names = error.get("fields") or []
        where = f" (field{'s' if len(names) > 1 else ''}: {', '.join(names)})" if names else ""
        parts.append(f"{code}: {message}{where}")
    return redact("; ".join(parts))[:600]


def retry_floor(retry_after: str | None, floor: float) -> float | None:
    """``Retry-After`` when Salesforce sends one, else the destination's own floor (0: none).

    Either is a floor: the dispatcher's ``[dispatch] retry_delays`` still apply when longer.
    """
    return retry_after_seconds(retry_after) or floor or None


def raise_for_errors(status: int, errors: list[dict[str, Any]], destination, *, what: str,
                     retry_after: str | None = None) -> None:
    """Raise the outcome of a failed Salesforce call (``status`` is never 2xx here).

    ``destination`` supplies its name and the floors ``request_limit_retry_seconds`` and
    ``server_error_retry_seconds``.
    """
    config = destination.config
    codes = {e.get("errorCode") for e in errors}
    where = f"destination {destination.name!r}: Salesforce refused {what}"
    text = describe(errors)
    if "INVALID_SESSION_ID" in codes or status == 401:
        raise SessionExpired(text)
    if "REQUEST_LIMIT_EXCEEDED" in codes or "TOO_MANY_REQUESTS" in codes or status == 429:
        wait = retry_floor(retry_after, config["request_limit_retry_seconds"])
        later = f"retrying in {wait:.0f}s at the earliest" if wait else "retrying on the dispatch schedule"
        raise Retryable(f"{where}: {text}. The org's API request limit is used up; {later} "
                        f"(raise the limit or lower the traffic)", retry_after=wait, http_status=status)
    if status >= 500 or codes & {"SERVER_UNAVAILABLE", "UNABLE_TO_LOCK_ROW"}:
        raise Retryable(f"{where}: HTTP {status}: {text}",
                        retry_after=retry_floor(retry_after, config["server_error_retry_seconds"]), http_status=status)
    if status == 403 or codes & PERMISSION_ERRORS:
        raise Permanent(f"{where}: {text}. Fix: {PERMISSION_FIX}.", http_status=status)
    if "DUPLICATES_DETECTED" in codes:
        raise Permanent(f"{where}: {text}. Fix: a duplicate rule matched an existing record the phone search did "
                        f"not confirm; link the caller with who_id, set create = \"none\", or let the duplicate "
                        f"rule allow API inserts.", http_status=status)
    field_names = sorted({f for e in errors for f in (e.get("fields") or [])})
    if codes & FIELD_ERRORS or field_names:
        fix = (f"fix field{'s' if len(field_names) > 1 else ''} {', '.join(field_names)} in the destination's "
               f"settings or the org (field-level security, picklist values, validation rules)" if field_names
               else "check the field names and values in the destination's settings")
        raise Permanent(f"{where}: {text}. Fix: {fix}.", http_status=status)
    raise Permanent(f"{where}: HTTP {status}: {text}", http_status=status)


def raise_for_token_response(response: requests.Response, destination) -> None:
    """Map a failed answer of ``/services/oauth2/token`` (``destination`` as for ``raise_for_errors``)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = str(body.get("error") or "") if isinstance(body, dict) else ""
    description = str(body.get("error_description") or "") if isinstance(body, dict) else ""
    where = f"destination {destination.name!r}: Salesforce login failed (HTTP {status}"
    if status >= 500 or status == 429 or error == "rate_limit_exceeded":
        wait = retry_floor(response.headers.get("Retry-After"), destination.config["server_error_retry_seconds"])
        raise Retryable(f"{where}): {redact(error or response.text[:200])}", retry_after=wait, http_status=status)
    fix = TOKEN_FIX.get(error, "check login_url, client_id and the connected/external client app's OAuth settings")
    if "approve" in description:  # "user hasn't approved this consumer"
        fix = ("pre-authorize the user: in the app's policies choose 'Admin approved users are pre-authorized' "
               "and add the user's profile or a permission set")
    raise Permanent(f"{where}, {error or 'no error code'}: {redact(description)[:200]}). Fix: {fix}.",
                    http_status=status)
