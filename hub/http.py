"""HTTP for destinations: one session per destination, error mapping, dry-run recording."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from .errors import Permanent, Retryable
from .redaction import redact

USER_AGENT = "sovereign-hub/0.1"
SENSITIVE_HEADERS = {"authorization", "x-api-key", "api-key", "cookie", "x-auth-token"}


def make_session(*, pool_size: int = 8) -> requests.Session:
    """A session with the hub's user agent and pooled connections; timeouts go per request."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse ``Retry-After``: delta seconds or an HTTP date; None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or datetime.now(timezone.utc)
    return max(0.0, (moment - now).total_seconds())


def body_excerpt(response: requests.Response, limit: int = 300) -> str:
    text = (response.text or "").strip().replace("\n", " ")
    return redact(text[:limit] + ("…" if len(text) > limit else ""))


def raise_for_response(response: requests.Response, destination: str, *, auth_hint: str = "",
                       retry_after: float | None = None, detail: str | None = None) -> None:
    """Map a non-2xx response to ``Retryable`` or ``Permanent``; return quietly on 2xx.

    429, 408, 425 and 5xx retry (honouring ``Retry-After``); 401/403 are permanent and
    name the destination and ``auth_hint`` (the token or scopes to fix); other 4xx are
    permanent with the far side's own words: ``detail`` when the caller read them from the
    body (a vendor's message and request id), else the body's start.
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    host = urlsplit(response.url or "").netloc or "the API"
    detail = redact(detail) if detail is not None else body_excerpt(response)
    where = f"destination {destination!r}: HTTP {status} from {host}"
    if status in (408, 425, 429) or status >= 500:
        wait = retry_after if retry_after is not None else retry_after_seconds(response.headers.get("Retry-After"))
        raise Retryable(f"{where}: {detail}".rstrip(": "), retry_after=wait, http_status=status)
    if status in (401, 403):
        hint = f" {auth_hint}" if auth_hint else " Check the credentials configured for it."
        raise Permanent(f"{where} ({'unauthorized' if status == 401 else 'forbidden'}): {detail}.{hint}",
                        http_status=status)
    raise Permanent(f"{where}: {detail}".rstrip(": "), http_status=status)


def raise_for_exception(exc: requests.RequestException, destination: str) -> None:
    """Timeouts and connection failures retry; a malformed URL or request does not."""
    kind = type(exc).__name__
    if isinstance(exc, (requests.Timeout, requests.ConnectionError)):
        raise Retryable(f"destination {destination!r}: {kind}: {redact(str(exc))[:300]}") from None
    raise Permanent(f"destination {destination!r}: {kind}: {redact(str(exc))[:300]}") from None


@dataclass
class RecordedRequest:
    """A request as it was (or, in a dry run, would have been) sent; secrets masked."""

    method: str
    url: str
    headers: dict[str, str]
    body: Any = None
    status: int | None = None

    @classmethod
    def from_prepared(cls, prepared: requests.PreparedRequest) -> "RecordedRequest":
        headers = {k: ("[secret]" if k.lower() in SENSITIVE_HEADERS else redact(v))
                   for k, v in prepared.headers.items()}
        body: Any = prepared.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        if isinstance(body, str) and "json" in (prepared.headers.get("Content-Type") or ""):
            try:
                body = json.loads(body)
            except ValueError:
                pass
        if isinstance(body, str):
            body = redact(body)
        return cls(prepared.method or "GET", redact(prepared.url or ""), headers, body)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, "headers": self.headers, "body": self.body}


@dataclass
class DryRunResponse:
    """What a dry run answers in place of the far side: 200 with the JSON a destination asked for."""

    payload: Any = field(default_factory=dict)

    def build(self, prepared: requests.PreparedRequest) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response.url = prepared.url or ""
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(self.payload).encode()
        response.request = prepared
        return response
