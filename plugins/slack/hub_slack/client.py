"""Thin Slack HTTP: an incoming webhook or ``chat.postMessage``, the Web API's read methods
(``api_call``: the look-up and ``test_connection``), and their error shapes.

Incoming webhooks answer ``200 ok`` or an HTTP error with a plain-text code in the body
(400 invalid_payload, 403 action_prohibited, 404 channel_not_found, 410 channel_is_archived,
500 rollup_error). The Web API answers 200 with ``{"ok": false, "error": code}`` for most
failures and 429 with ``Retry-After`` when rate limited. Both are mapped here to
``Retryable``/``Permanent`` with a message that names the destination and the fix.
"""
from __future__ import annotations

from typing import Any, NoReturn

import requests

from hub import Permanent, Retryable, raise_for_response, retry_after_seconds

API_URL = "https://slack.com/api"  # GovSlack: https://slack-gov.com/api

TOKEN_FIX = ("check `token`: a bot token (xoxb-…) from the Slack app's OAuth & Permissions page, "
             "with the chat:write scope, app installed in the workspace")
WEBHOOK_FIX = ("check `webhook_url`: create a new one under the Slack app's Incoming Webhooks page "
               "and put it in the secret the configuration names")
MESSAGE_FIX = ("Slack rejected the message itself: check the `header`, `summary` and `text` templates "
               "(mrkdwn must escape &, < and >; mentions look like <!here> or <!subteam^S0123>)")


class Refused(Retryable):
    """Slack refused the call without acting on it (rate limited): retry, nothing was done."""


# Web API error code -> (retry?, fix). Codes not listed are permanent with Slack's own code.
API_ERRORS: dict[str, tuple[bool, str]] = {
    "ratelimited": (True, "Slack rate limit; retrying after the wait Slack asked for"),
    "rate_limited": (True, "Slack rate limit; retrying after the wait Slack asked for"),
    "internal_error": (True, "Slack had an internal error"),
    "fatal_error": (True, "Slack had an internal error"),
    "service_unavailable": (True, "Slack is unavailable"),
    "request_timeout": (True, "Slack timed out"),
    "channel_not_found": (False, "check `channel`: use the channel ID (C0123ABCD, from the channel's "
                                 "details) and, for a private channel, /invite the app to it"),
    "not_in_channel": (False, "the app is not a member of `channel`: /invite @<app> in the channel, "
                              "or add the chat:write.public scope for public channels"),
    "is_archived": (False, "`channel` is archived: unarchive it or configure another channel"),
    "invalid_auth": (False, TOKEN_FIX),
    "not_authed": (False, TOKEN_FIX),
    "account_inactive": (False, TOKEN_FIX),
    "token_revoked": (False, TOKEN_FIX),
    "token_expired": (False, TOKEN_FIX + " (the token expired: reinstall the app or turn off token rotation)"),
    "no_permission": (False, TOKEN_FIX),
    "missing_scope": (False, "the token lacks a scope: add chat:write under OAuth & Permissions and "
                             "reinstall the app"),
    "restricted_action": (False, "a workspace setting forbids posting to `channel`: ask a Slack admin"),
    "ekm_access_denied": (False, "a Slack admin suspended posting (EKM): ask a Slack admin"),
    "invalid_blocks": (False, MESSAGE_FIX),
    "invalid_blocks_format": (False, MESSAGE_FIX),
    "msg_too_long": (False, MESSAGE_FIX),
    "msg_blocks_too_long": (False, MESSAGE_FIX),
    "no_text": (False, MESSAGE_FIX),
    "invalid_arguments": (False, MESSAGE_FIX),
}

# Incoming-webhook body code -> fix (all permanent; 429 and 5xx retry before we get here).
WEBHOOK_ERRORS: dict[str, str] = {
    "invalid_payload": MESSAGE_FIX,
    "invalid_blocks": MESSAGE_FIX,
    "invalid_blocks_format": MESSAGE_FIX,
    "no_text": MESSAGE_FIX,
    "missing_text_or_fallback_or_attachments": MESSAGE_FIX,
    "user_not_found": "a mention names a user that does not exist: check `mentions`",
    "action_prohibited": "the workspace restricts this webhook from posting here: ask a Slack admin, "
                         "or " + WEBHOOK_FIX,
    "invalid_token": "the webhook's token is no longer valid: " + WEBHOOK_FIX,
    "channel_not_found": "the webhook's channel no longer exists: " + WEBHOOK_FIX,
    "channel_is_archived": "the webhook's channel is archived: unarchive it or " + WEBHOOK_FIX,
    "no_service": "the webhook was removed or disabled: " + WEBHOOK_FIX,
    "no_team": "the workspace of the webhook is gone: " + WEBHOOK_FIX,
    "no_active_hooks": "the webhook was removed or disabled: " + WEBHOOK_FIX,
    "posting_to_general_channel_denied": "only admins may post to this channel: make the webhook for "
                                         "another channel, or ask a Slack admin",
}


def post_webhook(ctx, url: str, message: dict[str, Any], destination: str) -> dict[str, Any]:
    """POST the message to an incoming webhook; return what to keep in ``ctx.state``."""
    response = ctx.send("POST", url, json=message, check=False, dry_run_response="ok")
    status = response.status_code
    if 200 <= status < 300:
        return {"posted": True, "via": "webhook"}
    words = (response.text or "").split()
    post_webhook_failed(response, words[0] if words else "", destination)


def post_message(ctx, api_url: str, token: str, channel: str, message: dict[str, Any], destination: str,
                 metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """``chat.postMessage`` at ``api_url`` with a bot token (JSON body, Bearer header); return state to keep.

    ``metadata`` (``event_type`` + ``event_payload``) is attached to the message, invisible to
    readers; ``conversations.history`` with ``include_all_metadata`` returns it."""
    body = {"channel": channel, **message, "unfurl_links": False, "unfurl_media": False}
    if metadata is not None:
        body["metadata"] = metadata
    fake = {"ok": True, "channel": channel, "ts": "0000000000.000000",
            "message": {"type": "message", "text": message["text"], "ts": "0000000000.000000"}}
    response = ctx.send("POST", f"{api_url.rstrip('/')}/chat.postMessage", json=body, check=False, dry_run_response=fake,
                        headers={"Authorization": f"Bearer {token}",
                                 "Content-Type": "application/json; charset=utf-8"})
    data = api_result(response, destination)
    return {"posted": True, "via": "chat.postMessage", "channel": data.get("channel", channel),
            "ts": data.get("ts")}


def api_call(ctx, api_url: str, token: str, method: str, params: dict[str, Any], destination: str, *,
             bucket: str = "lookup", tolerate: set[str] = frozenset()) -> dict[str, Any]:
    """A read method of the Web API (GET, query arguments, Bearer header): its JSON answer. An
    ``ok: false`` answer whose code is in ``tolerate`` is returned for the caller to handle;
    any other error is raised as ``api_result`` maps it."""
    response = ctx.send("GET", f"{api_url.rstrip('/')}/{method}", params=params, bucket=bucket, check=False,
                        headers={"Authorization": f"Bearer {token}"})
    if response.status_code == 200:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if isinstance(data, dict) and data.get("ok") is False and data.get("error") in tolerate:
            return data
    return api_result(response, destination)


def check_token(ctx, api_url: str, token: str, destination: str) -> str:
    """``auth.test``: who the token is (it needs no scope)."""
    me = api_call(ctx, api_url, token, "auth.test", {}, destination, bucket="default")
    return f"authenticated as {me.get('user')} in {me.get('team')}"


def check_channel(ctx, api_url: str, token: str, channel: str, destination: str) -> str:
    """``conversations.info``: whether ``channel`` (an ID) exists; it needs channels:read, which
    delivery does not, so without that scope the channel is left unchecked."""
    found = api_call(ctx, api_url, token, "conversations.info", {"channel": channel}, destination, bucket="default",
                     tolerate={"missing_scope"})
    if found.get("error") == "missing_scope":
        return f"channel {channel} not checked (that needs the channels:read scope, delivery does not)"
    return f"channel #{(found.get('channel') or {}).get('name', channel)}"


def check_webhook(ctx, url: str, destination: str) -> str:
    """An empty message to the webhook: a live one refuses it (no_text, invalid_payload) and posts nothing."""
    response = ctx.send("POST", url, json={}, check=False)
    words = (response.text or "").split()
    code = words[0] if words else ""
    if response.status_code == 400 and code in ("no_text", "invalid_payload", "missing_text_or_fallback_or_attachments"):
        return "the webhook is live (Slack refused an empty message, as it should; nothing was posted)"
    if 200 <= response.status_code < 300:
        raise Permanent(f"destination {destination!r}: the webhook accepted an empty message; is webhook_url "
                        f"a Slack incoming webhook?")
    post_webhook_failed(response, code, destination)


def post_webhook_failed(response: requests.Response, code: str, destination: str) -> NoReturn:
    """Raise the mapped error of a webhook's non-2xx answer."""
    status = response.status_code
    if code not in WEBHOOK_ERRORS or status == 429 or status >= 500:
        raise_for_response(response, destination, auth_hint=WEBHOOK_FIX)  # raises for every non-2xx
    raise Permanent(f"destination {destination!r}: Slack webhook answered {status} {code}: "
                    f"{WEBHOOK_ERRORS[code]}", http_status=status)


def api_result(response: requests.Response, destination: str) -> dict[str, Any]:
    """The JSON of a Web API answer with ``ok: true``, or the matching error raised."""
    if response.status_code != 200:
        raise_for_response(response, destination, auth_hint=TOKEN_FIX)
    try:
        data = response.json()
    except ValueError:
        raise Retryable(f"destination {destination!r}: Slack answered 200 without JSON") from None
    if data.get("ok"):
        return data
    code = str(data.get("error") or "unknown_error")
    details = "; ".join((data.get("response_metadata") or {}).get("messages") or [])
    retry, fix = API_ERRORS.get(code, (False, "see https://api.slack.com/methods/chat.postMessage#errors"))
    reason = f"destination {destination!r}: Slack error {code}: {fix}" + (f" ({details})" if details else "")
    if retry:
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        limited = "rate" in code
        raise (Refused if limited else Retryable)(
            reason, retry_after=wait if wait is not None else (1.0 if limited else None), http_status=200)
    raise Permanent(reason, http_status=200)
