"""OAuth 2.0 for server-to-server use: the client credentials flow and the JWT bearer flow.

Both post a form to ``<login_url>/services/oauth2/token`` and get back
``{"access_token", "instance_url", "token_type", "issued_at", ...}``; Salesforce sends no
``expires_in`` (the org's session timeout decides), so a token is kept for
``token_lifetime_seconds`` and dropped earlier when a call answers ``INVALID_SESSION_ID``.

One ``TokenCache`` belongs to one destination instance and is shared by the dispatcher's
worker threads: a lock makes sure that only one thread logs in when the token is missing
or dead, and the others reuse what it got.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from hub import Permanent, register_secret

from .config import jwt_audience
from .errors import raise_for_token_response

GRANT_JWT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Salesforce accepts a JWT whose ``exp`` is at most 3 minutes ahead
JWT_VALIDITY_SECONDS = 180
DRY_RUN_TOKEN = "dry-run-access-token"


@dataclass(frozen=True)
class Token:
    access_token: str
    instance_url: str
    expires_at: float


def token_form(config: dict[str, Any], *, now: float | None = None) -> dict[str, str]:
    """The form fields of the token request for the configured flow."""
    if config["auth"] == "jwt":
        issued = int(now if now is not None else time.time())
        claims = {"iss": config["client_id"], "sub": config["username"], "aud": jwt_audience(config),
                  "exp": issued + JWT_VALIDITY_SECONDS}
        assertion = jwt.encode(claims, config["private_key"], algorithm="RS256")
        return {"grant_type": GRANT_JWT, "assertion": assertion}
    return {"grant_type": "client_credentials", "client_id": config["client_id"],
            "client_secret": config["client_secret"]}


def masked_form(form: dict[str, str]) -> dict[str, str]:
    """What the delivery log may show of the token request."""
    return {k: ("[secret]" if k in ("client_secret", "assertion") else v) for k, v in form.items()}


class TokenCache:
    def __init__(self, destination):
        self.destination = destination
        self.config = destination.config
        self._token: Token | None = None
        self._lock = threading.Lock()

    @property
    def token_url(self) -> str:
        return self.config["login_url"].rstrip("/") + "/services/oauth2/token"

    def get(self, ctx) -> Token:
        """A live token: the cached one, or a new one (one login at a time per destination)."""
        if ctx.dry_run:  # show the login request, never touch the shared cache
            return self._login(ctx)
        token = self._token
        if token is not None and token.expires_at > time.monotonic():
            return token
        with self._lock:
            token = self._token
            if token is None or token.expires_at <= time.monotonic():
                token = self._login(ctx)
                self._token = token
            return token

    def invalidate(self, stale: Token) -> None:
        """Forget ``stale`` unless another thread already replaced it."""
        with self._lock:
            if self._token is stale or self._token == stale:
                self._token = None

    def _login(self, ctx) -> Token:
        form = token_form(self.config)
        fake = {"access_token": DRY_RUN_TOKEN, "token_type": "Bearer",
                "instance_url": self.config["instance_url"] or self.config["login_url"]}
        # the delivery log (and a dry run's output) shows the form without the secret or the signed assertion
        response = ctx.send("POST", self.token_url, bucket="auth", check=False, data=form,
                            headers={"Accept": "application/json"}, dry_run_response=fake,
                            record_body=masked_form(form))
        if response.status_code != 200:
            raise_for_token_response(response, self.destination)
        try:
            body = response.json()
            access_token = body["access_token"]
            register_secret(access_token)  # redacted from every log line and recorded error from now on
        except (ValueError, KeyError, TypeError):
            raise Permanent(f"destination {self.destination.name!r}: Salesforce login answered 200 without an "
                            f"access_token; check login_url ({self.config['login_url']})") from None
        instance_url = (self.config["instance_url"] or body.get("instance_url") or "").rstrip("/")
        if not instance_url:
            raise Permanent(f"destination {self.destination.name!r}: Salesforce login answered without an "
                            f"instance_url; set instance_url in the destination's settings")
        lifetime = self.config["token_lifetime_seconds"]
        if isinstance(body.get("expires_in"), (int, float)):
            lifetime = min(lifetime, max(30, int(body["expires_in"]) - 30))
        return Token(access_token, instance_url, time.monotonic() + lifetime)
