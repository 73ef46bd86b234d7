"""``trello``: a Trello card, ``POST /1/cards`` with an API key and token.

Key and token travel as the ``key`` and ``token`` query parameters, the form Atlassian's Trello
REST reference documents for every call (``/1/cards?idList=...&key=APIKey&token=APIToken``).
Both are secret options, and the recorded request (``ctx.sent``, ``send-test --dry-run``) and
any error carry ``[secret]`` in their place. The card fields go in a JSON body, which the
reference allows in place of query parameters (descriptions are too long for a URL).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from marshmallow import fields, validate

import hub

from .base import CreatedTask, TrackerDestination, json_or_none
from .call_text import escape_markdown
from .followup import FollowUp, FollowUpConfig, level_table

TRELLO_ID = validate.Regexp(r"^[0-9a-fA-F]{24}$", error="must be a Trello id (24 hex digits)")


class TrelloConfig(FollowUpConfig):
    base_url = fields.Url(load_default="https://api.trello.com", schemes={"http", "https"}, require_tld=False)
    key = fields.String(required=True, validate=validate.Length(min=1))
    token = fields.String(required=True, validate=validate.Length(min=1))
    list_id = fields.String(required=True, validate=TRELLO_ID)
    members = fields.List(fields.String(validate=TRELLO_ID), load_default=list)
    priority_labels = level_table({}, fields.String(validate=TRELLO_ID))
    due_time = fields.String(load_default="17:00", validate=validate.Regexp(
        r"^([01]\d|2[0-3]):[0-5]\d$", error="must be HH:MM (UTC), e.g. 17:00"))
    position = fields.String(load_default="top", validate=validate.OneOf(["top", "bottom"]))


def card_payload(follow_up: FollowUp, config: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /1/cards``: the assignee and ``members`` are member ids, labels label ids."""
    card: dict[str, Any] = {
        "idList": config["list_id"],
        "name": follow_up.title,
        "desc": follow_up.description,
        "due": f"{follow_up.due_iso}T{config['due_time']}:00.000Z",
        "pos": config["position"],
    }
    members = ([follow_up.assignee] if follow_up.assignee else []) + list(config["members"])
    if members:
        card["idMembers"] = list(dict.fromkeys(members))
    labels = list(follow_up.labels)
    if config["priority_labels"].get(follow_up.priority):
        labels.append(config["priority_labels"][follow_up.priority])
    if labels:
        card["idLabels"] = list(dict.fromkeys(labels))
    return card


#: ``key=...``/``token=...`` in a URL or an error text (what ``mask_credentials`` hides)
CREDENTIAL_PARAM = re.compile(r"\b(key|token)=[^&\s'\"]+")


def mask_credentials(text: str) -> str:
    """``...?key=abc&token=xyz`` -> ``...?key=[secret]&token=[secret]``, whether or not redaction knows them."""
    return CREDENTIAL_PARAM.sub(lambda m: f"{m.group(1)}=[secret]", text)


def rate_limit_wait(response) -> float | None:
    """Trello sends no Retry-After; its windows are ``x-rate-limit-api-*-interval-ms`` long (10 s)."""
    waits = []
    for name in ("x-rate-limit-api-token-interval-ms", "x-rate-limit-api-key-interval-ms"):
        try:
            waits.append(float(response.headers[name]) / 1000)
        except (KeyError, ValueError):
            continue
    return max(waits) if waits else hub.retry_after_seconds(response.headers.get("Retry-After")) or 10.0


class TrelloDestination(TrackerDestination):
    type = "trello"
    vendor = "Trello"
    escape_call_text = staticmethod(escape_markdown)
    Config = TrelloConfig
    description = "Add a Trello card for each call that needs a follow-up"
    rate_limits = {"default": "100/10s"}  # 100 requests per 10 s per token
    limit_options = ("token",)
    secret_options = ("key", "token")
    auth_hint = ("Check 'key' (the Power-Up's API key) and 'token' (a user token authorized for that key with "
                 "write scope); the user must be a member of the board of 'list_id'.")

    def create(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask:
        with credentials_masked():
            response = self.send_trello(ctx, "POST", "/1/cards", json=card_payload(follow_up, self.config),
                                        dry_run_response={"id": "5abbe4b7ddc1b351ef961414", "idShort": 1,
                                                          "shortUrl": "https://trello.com/c/DRYRUN01"})
            problem = None
            if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 429):
                body = json_or_none(response)
                problem = (body.get("message") or body.get("error")) if isinstance(body, dict) else response.text
                problem = str(problem or "").strip()[:300] or None
            self.check(response, problem, fix="Check 'list_id', 'members', 'labels' and 'priority_labels' "
                                              "(ids from the same board)")
        card = json_or_none(response)
        return CreatedTask(id=self.answer_id(response, card), url=card.get("shortUrl") or card.get("url"))

    def find_existing(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask | None:
        """The card an earlier attempt created before its answer was lost: same name and text in the list.

        ``GET /1/lists/{list_id}/cards`` ("Get Cards in a List") lists the open cards; a retry
        renders the same report with the same options, so its card name and description are the
        same as the lost one's.
        """
        with credentials_masked():
            response = self.send_trello(ctx, "GET", f"/1/lists/{self.config['list_id']}/cards", dry_run_response=[])
            self.check(response, f"cannot list the cards of 'list_id': {response.text[:200]}", fix="Check 'list_id'")
        cards = json_or_none(response)
        for card in cards if isinstance(cards, list) else []:
            if (isinstance(card, dict) and card.get("id") and card.get("name") == follow_up.title
                    and str(card.get("desc") or "").strip() == follow_up.description.strip()):
                return CreatedTask(id=str(card["id"]), url=card.get("shortUrl"))
        return None

    def test_connection(self, ctx: hub.DeliveryContext) -> str:
        """``GET /1/members/me`` (key and token), then the configured list."""
        with credentials_masked():
            checks = []
            for path, missing in (("/1/members/me", "no such API (check base_url)"),
                                  (f"/1/lists/{self.config['list_id']}", f"no list {self.config['list_id']!r} "
                                                                         f"that this token can see (check 'list_id')")):
                response = self.send_trello(ctx, "GET", path)
                if response.status_code == 404:
                    raise hub.Permanent(f"destination {self.name!r}: Trello: {missing} (HTTP 404)", http_status=404)
                self.check(response, None, fix="")
                checks.append(json_or_none(response) or {})
        member, board_list = checks
        return f"authenticated as {member.get('username') or member.get('id')}; list {board_list.get('name')!r}"

    def check(self, response, problem: str | None, *, fix: str) -> None:
        """``fail`` with Trello's rate-limit window as the wait of a 429."""
        self.fail(response, problem, fix=fix,
                  retry_after=rate_limit_wait(response) if response.status_code == 429 else None)

    def send_trello(self, ctx: hub.DeliveryContext, method: str, path: str, **kwargs: Any):
        """One call with ``key`` and ``token`` as query parameters; the recorded URL shows them masked."""
        query = {"key": self.config["key"], "token": self.config["token"]}
        recorded = len(ctx.sent)
        try:
            return self.send(ctx, method, self.endpoint(path) + "?" + urlencode(query),
                             headers={"Accept": "application/json"}, **kwargs)
        finally:
            for record in ctx.sent[recorded:]:
                record.url = mask_credentials(record.url)


@contextmanager
def credentials_masked():
    """Re-raise a delivery error with ``key=``/``token=`` values masked (a network error quotes the URL)."""
    try:
        yield
    except hub.Retryable as exc:  # its own kind kept: a Deferred send (no attempt counted) stays one
        raise type(exc)(mask_credentials(exc.reason), retry_after=exc.retry_after,
                        http_status=exc.http_status) from None
    except hub.Permanent as exc:
        raise hub.Permanent(mask_credentials(exc.reason), http_status=exc.http_status) from None
