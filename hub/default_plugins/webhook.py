"""``webhook``: the normalized report POSTed to any URL, signed the Standard Webhooks way."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate, validates

from ..destinations import Destination, Result
from ..errors import Permanent
from ..http import raise_for_response
from ..hookspecs import hookimpl


def standard_webhooks_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>``, key = base64 after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookConfig(Schema):
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    secret = fields.String(load_default=None, allow_none=True)
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    timeout_seconds = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=120))

    @validates("secret")
    def secret_is_whsec(self, value, **kwargs):
        if value is None:
            return
        if not value.startswith("whsec_"):
            raise ValidationError('must look like "whsec_<base64>" (the Standard Webhooks secret form)')
        try:
            base64.b64decode(value.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise ValidationError('the part after "whsec_" is not valid base64') from None


class WebhookDestination(Destination):
    type = "webhook"
    Config = WebhookConfig
    description = "POST the normalized report as JSON to a URL (Zapier, n8n, Make, your own service)"
    secret_options = ("url", "secret")  # a catch-hook URL is as good as a password

    def deliver(self, report, ctx):
        body = report.to_json().encode()
        timestamp = int(time.time())
        headers = {**self.config["headers"], "Content-Type": "application/json",
                   "webhook-id": ctx.delivery_id, "webhook-timestamp": str(timestamp)}
        if self.config["secret"]:
            headers["webhook-signature"] = standard_webhooks_signature(
                self.config["secret"], ctx.delivery_id, timestamp, body)
        response = ctx.send("POST", self.config["url"], data=body, headers=headers,
                            timeout=self.config["timeout_seconds"])
        return Result(f"POST {self.config['url']} -> {response.status_code}")

    def test_connection(self, ctx):
        """A HEAD to the URL (no report, nothing for the far side to act on): reachable, TLS
        trusted, and not refusing our headers. Most receivers answer a HEAD with 405: that is
        fine; 401/403, 404/410 and 5xx are not."""
        response = ctx.send("HEAD", self.config["url"], headers=self.config["headers"], check=False,
                            timeout=self.config["timeout_seconds"])
        host = urlsplit(self.config["url"]).netloc  # the path may hold the hook's secret
        if response.status_code in (404, 410):
            raise Permanent(f"destination {self.name!r}: {host} has no such endpoint (HTTP "
                            f"{response.status_code}); check the url", http_status=response.status_code)
        if response.status_code not in (405, 501):
            raise_for_response(response, self.name, auth_hint="Check the headers configured for it.")
        return f"{host} answered HEAD with HTTP {response.status_code}"


@hookimpl
def register_destinations(register):
    register(WebhookDestination)
