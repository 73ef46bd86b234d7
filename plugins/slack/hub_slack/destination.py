"""The ``slack`` destination type: its configuration and one delivery attempt."""
from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, post_load, validates, validates_schema

from hub import Destination, MappingField, Permanent, Result, Retryable, TemplateField, credential_key

from . import lookup
from .client import (API_URL, TOKEN_FIX, WEBHOOK_FIX, Refused, check_channel, check_token, check_webhook, post_message,
                     post_webhook)
from .lookup import POST, MessageLookup, Unavailable, earlier_post_window, message_metadata, record_attempt
from .message import build_message

# <!here>, <!channel>, <!everyone>, <!subteam^S0123ABC>, <@U0123ABC>; "@here" is shorthand.
_MENTION = re.compile(r"^<(!here|!channel|!everyone|!subteam\^[A-Z0-9]+|@[UW][A-Z0-9]+)>$")
_SHORTHAND = {"@here": "<!here>", "@channel": "<!channel>", "@everyone": "<!everyone>"}


class SlackConfig(Schema):
    webhook_url = fields.Url(load_default=None, schemes={"https"},
                             metadata={"description": "incoming-webhook URL (secret); or token + channel"})
    token = fields.String(load_default=None, metadata={"description": "bot token xoxb-… with chat:write"})
    api_url = fields.Url(load_default=API_URL, schemes={"https", "http"}, require_tld=False, metadata={
        "description": "Web API base, with token: https://slack.com/api, GovSlack https://slack-gov.com/api"})
    channel = fields.String(load_default=None, validate=validate.Length(min=1),
                            metadata={"description": "channel ID (C0123ABCD) or name, with token"})
    mentions = fields.List(fields.String(), load_default=list,
                           metadata={"description": '["@here"], ["<!subteam^S0123ABC>"], ["<@U0123ABC>"]'})
    header = TemplateField(load_default=None)
    summary = TemplateField(load_default=None)
    text = TemplateField(load_default=None)
    analysis_fields = MappingField(load_default=None)
    sentiment_max = fields.Integer(load_default=10, validate=validate.Range(min=1))
    show_recording = fields.Boolean(load_default=True)

    @validates("token")
    def token_looks_like_slack(self, value, **kwargs):
        if value is not None and not value.startswith("xox"):
            raise ValidationError("must be a Slack token (a bot token starts with xoxb-); " + TOKEN_FIX)

    @validates("mentions")
    def mentions_are_slack_syntax(self, value, **kwargs):
        bad = [m for m in value if not _MENTION.match(_SHORTHAND.get(m, m))]
        if bad:
            raise ValidationError(f"not a Slack mention: {', '.join(bad)}; write \"@here\", \"@channel\", "
                                  "\"<!subteam^S0123ABC>\" (a user group) or \"<@U0123ABC>\" (a user)")

    @validates_schema
    def one_mode(self, data, **kwargs):
        webhook, token, channel = data.get("webhook_url"), data.get("token"), data.get("channel")
        if webhook and (token or channel):
            raise ValidationError("give either webhook_url, or token and channel, not both", "webhook_url")
        if not webhook and not token:
            raise ValidationError("required: an incoming-webhook URL, or set token and channel instead. "
                                  + WEBHOOK_FIX, "webhook_url")
        if token and not channel:
            raise ValidationError("required with token: the channel ID to post to (e.g. C0123ABCD)", "channel")

    @post_load
    def expand_shorthand(self, data, **kwargs):
        data["mentions"] = [_SHORTHAND.get(m, m) for m in data["mentions"]]
        return data


class SlackDestination(Destination):
    type = "slack"
    Config = SlackConfig
    description = "Post a Block Kit alert per call to a Slack channel (incoming webhook or bot token)"
    # Slack allows about one message a second per channel; one destination posts to one channel.
    # ``lookup``: conversations.history (Tier 3, 50+ a minute) and conversations.list (Tier 2,
    # 20+ a minute), read only when a lost post is looked up and by ``test_connection``.
    rate_limits = {"default": "1/1s", "lookup": "20/60s"}
    timeout = 10.0
    auth_hint = TOKEN_FIX
    secret_options = ("token", "webhook_url")

    def limiter_key(self) -> str:
        """Destinations posting to one channel share its one-message-a-second bucket.

        Bot mode: the channel (``#name`` and ``name`` are one channel). Webhook mode: the URL,
        which stands for one channel; only its digest is kept, the URL is a secret.
        """
        if self.config["token"]:
            return "channel:" + self.config["channel"].strip().lstrip("#")
        return "webhook:" + credential_key(self.config["webhook_url"])

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.message_lookup = MessageLookup(self) if self.config["token"] else None

    @property
    def where(self) -> str:
        return f"channel {self.config['channel']}" if self.config["token"] else "the webhook's channel"

    def post(self, message: dict[str, Any], ctx, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one message the configured way; returns the state to keep (posted, ts).
        ``metadata`` goes with a bot-mode post (an incoming webhook takes none)."""
        if self.config["token"]:
            return post_message(ctx, self.config["api_url"], self.config["token"], self.config["channel"], message,
                                self.name, metadata)
        return post_webhook(ctx, self.config["webhook_url"], message, self.name)

    def test_connection(self, ctx) -> str:
        """Bot token: ``auth.test``; a channel given by name resolved to its ID
        (``conversations.list``); ``conversations.info`` for the channel (it needs
        channels:read, which delivery does not: without it the channel is left unchecked); then
        whether a lost post can be looked up (``conversations.history``, channels:history).
        Webhook: an empty message, which Slack refuses without posting (``no_text``) when the
        webhook is live, and answers ``no_service``/``invalid_token`` when it is not."""
        if not self.config["token"]:
            return (check_webhook(ctx, self.config["webhook_url"], self.name)
                    + "; an incoming webhook cannot look up a post whose answer was lost (use a bot token for that)")
        api_url, token, finder = self.config["api_url"], self.config["token"], self.message_lookup
        who = check_token(ctx, api_url, token, self.name)
        channel = finder.channel_id
        if channel is None:
            try:
                channel = finder.resolve_channel(ctx)
            except Unavailable:  # the look-up's words below say what is missing
                channel = finder.channel_name
        return f"{who}; {check_channel(ctx, api_url, token, channel, self.name)}; {finder.probe(ctx)}"

    def deliver(self, report, ctx) -> Result:
        if ctx.state.get("posted"):
            return Result(f"already posted to {self.where} (ts {ctx.state.get('ts') or 'n/a'}); not posted again",
                          dict(ctx.state))
        if report.event == "status-update" and report.call.status != "ended-with-error" and not report.error:
            return Result(f"status-update {report.call.status!r} is not an error: nothing posted", {})
        message = build_message(report, self.config, self.settings, destination=self.name)
        if self.config["token"]:
            found = self._find_earlier_post(report, ctx)
            if found:
                return found
            self._post_once(message, ctx, message_metadata(report, ctx))
        else:
            ctx.state.update(self.post(message, ctx))
        verb = "would post" if ctx.dry_run else "posted"
        return Result(f"{verb} to {self.where}" + (f" (ts {ctx.state['ts']})" if ctx.state.get("ts") else ""),
                      dict(ctx.state))

    def _find_earlier_post(self, report, ctx) -> Result | None:
        """When an earlier attempt may have posted: its message, taken as this delivery's post.

        The attempt is recorded only once the look-up is over: one that fails (Slack rate-limits
        it) leaves the state as it found it, so the next attempt looks over the same window."""
        window = None if ctx.dry_run else earlier_post_window(report, ctx)
        found = None if window is None else self.message_lookup.find(report, ctx, window)
        record_attempt(ctx)
        if found is None:
            return None
        self._answered(ctx)
        ctx.state.update({"posted": True, "via": "chat.postMessage", **found, "found": True})
        return Result(f"found the message an earlier attempt posted to {self.where} (ts {found['ts']}, answer lost); "
                      f"not posted again", dict(ctx.state))

    def _post_once(self, message: dict[str, Any], ctx, metadata: dict[str, Any]) -> None:
        """``chat.postMessage``, marked as sent until Slack's answer says whether it was posted."""
        if not ctx.dry_run:
            ctx.state.setdefault("first_sent_at", lookup.now())
            ctx.mark_sent(POST, at=lookup.now())
        requests_before = len(ctx.sent)
        try:
            posted = self.post(message, ctx, metadata)
        except Permanent:
            self._answered(ctx)  # refused: nothing posted
            raise
        except Retryable as exc:
            if len(ctx.sent) == requests_before or isinstance(exc, Refused) or exc.http_status == 429:
                self._answered(ctx)  # never sent (no rate-limit slot), or refused by Slack's rate limit
            raise  # a timeout, a 5xx, internal_error: it may have been posted; the next attempt looks
        self._answered(ctx)
        ctx.state.update(posted)
        self.message_lookup.learn_channel_id(posted.get("channel"))

    @staticmethod
    def _answered(ctx) -> None:
        ctx.clear_sent(POST)
        ctx.state.pop("first_sent_at", None)
