"""The admin token both the API (bearer header) and the dashboard (login form) check."""
from __future__ import annotations

import hmac

from flask import current_app

from .errors import error_response

ADMIN_KEY_HINT = ('set [admin] token in the configuration, e.g. token = { env = "HUB_ADMIN_TOKEN" } '
                  '(16 characters or more)')


def admin_token() -> str | None:
    return current_app.hub.config.admin.token or None


def token_matches(given: str | None) -> bool:
    """Constant-time comparison of ``given`` with the configured admin token."""
    expected = admin_token()
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def admin_disabled():
    return error_response(503, "admin_disabled",
                          f"The admin API and dashboard are disabled: {ADMIN_KEY_HINT}.",
                          {"config_key": "admin.token"})
