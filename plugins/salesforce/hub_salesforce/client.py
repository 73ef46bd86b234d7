"""A thin REST client for one delivery attempt: every request goes through ``ctx.send``.

That keeps dry runs, rate limiting and the delivery's request log working, and lets
tests mock Salesforce with ``responses``. A request answered ``INVALID_SESSION_ID`` gets a
fresh token and is sent once more.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hub import Permanent, Retryable

from .auth import TokenCache
from .config import normalized_version
from .errors import SessionExpired, raise_for_errors, salesforce_errors

HALTED = "PROCESSING_HALTED"


class SalesforceClient:
    def __init__(self, destination, tokens: TokenCache, ctx):
        self.destination = destination
        self.name = destination.name
        self.tokens = tokens
        self.ctx = ctx
        self.version = normalized_version(destination.config["api_version"])
        self.token = None  # the token this attempt uses (one login per attempt at most, even in a dry run)

    def path(self, suffix: str) -> str:
        return f"/services/data/{self.version}/{suffix.lstrip('/')}"

    def request(self, method: str, suffix: str, *, what: str, ok=(200, 201, 204), allow=(),
                bucket: str | None = None, dry_run_response: Any = None, **kwargs: Any):
        """Send one REST request; return the response when its status is in ``ok`` or ``allow``."""
        for attempt in (1, 2):
            token = self.token = self.token or self.tokens.get(self.ctx)
            headers = {"Authorization": f"Bearer {token.access_token}", "Accept": "application/json"}
            response = self.ctx.send(method, token.instance_url + self.path(suffix), bucket=bucket, check=False,
                                     headers=headers, dry_run_response=dry_run_response, **kwargs)
            if response.status_code in ok or response.status_code in allow:
                return response
            try:
                raise_for_errors(response.status_code, salesforce_errors(response), self.destination, what=what,
                                 retry_after=response.headers.get("Retry-After"))
            except SessionExpired as exc:
                self.tokens.invalidate(token)
                self.token = None
                if attempt == 2:
                    raise Permanent(f"destination {self.name!r}: Salesforce refused a freshly issued token "
                                    f"({exc}). Fix: check that the connected/external client app's OAuth scopes "
                                    f"include 'api' and that the org's IP restrictions allow this server.",
                                    http_status=401) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def search(self, sosl: str) -> list[dict[str, Any]]:
        """GET .../search/?q=<SOSL>; the ``searchRecords`` (each with ``attributes.type``)."""
        response = self.request("GET", "search/", what="the phone search", bucket="search",
                                params={"q": sosl}, dry_run_response={"searchRecords": []})
        body = response.json()
        records = body.get("searchRecords", []) if isinstance(body, dict) else body
        return [r for r in records if isinstance(r, dict)]

    def get_by_external_id(self, sobject: str, field: str, value: str, fields: list[str]) -> dict | None:
        """The record whose External ID ``field`` is ``value``, or None (404)."""
        suffix = f"sobjects/{sobject}/{field}/{quote(value, safe='')}"
        response = self.request("GET", suffix, what=f"the {sobject} lookup by {field}", ok=(200, 300), allow=(404,),
                                params={"fields": ",".join(fields)})
        if response.status_code == 404 or self.ctx.dry_run:
            return None
        body = response.json()
        if response.status_code == 300:  # several records share the external id: a list of their URLs
            first = body[0] if isinstance(body, list) and body else None
            return {"Id": first.rstrip("/").rsplit("/", 1)[-1]} if isinstance(first, str) else None
        return body if isinstance(body, dict) and body.get("Id") else None

    def query(self, soql: str, *, what: str, dry_run_records: list[dict] | None = None) -> list[dict[str, Any]]:
        """GET .../query/?q=<SOQL>; the ``records`` of the first page (in a dry run: ``dry_run_records``)."""
        records = dry_run_records or []
        response = self.request("GET", "query/", what=what, params={"q": soql},
                                dry_run_response={"totalSize": len(records), "done": True, "records": records})
        body = response.json()
        return [r for r in body.get("records", []) if isinstance(r, dict)] if isinstance(body, dict) else []

    def get_record(self, sobject: str, record_id: str, fields: list[str], *, dry_run_response: dict) -> dict:
        """GET .../sobjects/<sobject>/<id>?fields=...; the record's fields."""
        response = self.request("GET", f"sobjects/{sobject}/{quote(record_id, safe='')}",
                                what=f"the {sobject} {record_id} lookup", params={"fields": ",".join(fields)},
                                dry_run_response=dry_run_response)
        body = response.json()
        return body if isinstance(body, dict) else {}

    def composite(self, subrequests: list[dict[str, Any]], *, what: str) -> dict[str, dict[str, Any]]:
        """POST .../composite with allOrNone: every record is created, or none is.

        Returns ``{referenceId: subresponse}``; a failed subrequest raises with its own
        error (not the ``PROCESSING_HALTED`` of the ones rolled back with it).
        """
        body = {"allOrNone": True, "compositeRequest": [
            {**sub, "url": self.path(sub["url"])} for sub in subrequests]}
        fake = {"compositeResponse": [
            {"referenceId": sub["referenceId"], "httpStatusCode": 201, "httpHeaders": {},
             "body": {"id": f"dry-run-{sub['referenceId']}", "success": True, "errors": [], "created": True}}
            for sub in subrequests]}
        response = self.request("POST", "composite", what=what, ok=(200,), json=body, dry_run_response=fake)
        results = {r.get("referenceId"): r for r in response.json().get("compositeResponse", [])}
        failed = [r for r in results.values() if not 200 <= int(r.get("httpStatusCode") or 0) < 300]
        if failed:
            real = [r for r in failed if not any(e.get("errorCode") == HALTED for e in _errors(r))] or failed
            first = real[0]
            try:
                raise_for_errors(int(first.get("httpStatusCode") or 400), _errors(first), self.destination,
                                 what=f"{what} ({first.get('referenceId')}; nothing was saved)")
            except SessionExpired as exc:
                if self.token is not None:
                    self.tokens.invalidate(self.token)
                raise Retryable(f"destination {self.name!r}: Salesforce ended the session during {what} "
                                f"({exc}); nothing was saved, retrying with a new token", retry_after=5) from None
        return results


def _errors(subresponse: dict[str, Any]) -> list[dict[str, Any]]:
    body = subresponse.get("body")
    if isinstance(body, list):
        return [e for e in body if isinstance(e, dict)]
    if isinstance(body, dict):
        return [body]
    return [{"errorCode": f"HTTP_{subresponse.get('httpStatusCode')}", "message": str(body), "fields": []}]
