"""Bot mode posts each report once: the message an earlier attempt may have posted is looked up first.

A ``chat.postMessage`` whose answer never arrived (a read timeout, a lost worker) may have been
posted. Every bot-mode post carries message metadata naming the report and the delivery
(``event_type`` :data:`EVENT_TYPE`, ``event_payload`` ``{"report_id", "delivery_id"}``); before
posting again, the next attempt reads ``conversations.history`` of the channel over the time
the lost post could have landed (``include_all_metadata``) and takes that message instead.

Reading history needs ``channels:history`` (public channel) or ``groups:history`` (private one),
and the channel's ID; a channel configured by name is resolved once with ``conversations.list``
(``channels:read`` / ``groups:read``) unless an answer of ``chat.postMessage`` named its ID
already. Without those scopes the look-up is not available: the attempt posts again, as
before (a duplicate is possible), and says so once per destination in the log.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from .client import api_call

log = logging.getLogger(__name__)

#: ``metadata.event_type`` of every bot-mode post (Slack: letters, digits and underscores)
EVENT_TYPE = "sovereign_hub_call_report"
#: the hub's sent mark (``ctx.mark_sent``) of ``chat.postMessage``
POST = "message"
#: Slack's clock against ours, both ways (seconds)
CLOCK_MARGIN = 60.0
#: how long after the sent mark Slack may still accept the post: a wait for the channel's
#: rate-limit slot (at most 30 s) and the connect and read timeouts, with room to spare
ACCEPT_SPAN = 120.0
#: ``conversations.history`` page size (Slack: at most 999, 200 or fewer recommended) and pages read
PAGE_SIZE = 200
MAX_PAGES = 5
#: ``conversations.list`` page size (at most 1000) and pages read when resolving a channel name
LIST_PAGE_SIZE = 1000
MAX_LIST_PAGES = 10

CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
# a lookup failure that only means "not allowed to look": the post goes ahead as before
UNAVAILABLE = {"missing_scope", "not_in_channel", "channel_not_found"}
now = time.time  # the clock of sent marks and windows (tests replace it)


def message_metadata(report, ctx) -> dict[str, Any]:
    """The metadata that names this report's delivery in the channel."""
    return {"event_type": EVENT_TYPE, "event_payload": {"report_id": report.id, "delivery_id": ctx.delivery_id}}


def record_attempt(ctx) -> None:
    """Note this attempt in the state, so the next one can tell an attempt whose state was never
    saved (its worker died mid-post) from one that ended normally."""
    ctx.state["attempt"] = ctx.attempt
    ctx.state["attempt_at"] = now()


def earlier_post_window(report, ctx) -> tuple[float, float | None] | None:
    """``(oldest, latest)`` Unix seconds within which an earlier attempt's post would be, or None
    when no earlier attempt can have posted. ``latest`` None: up to now.

    Read before :func:`record_attempt`. Two cases: the sent mark is there (the post was sent,
    its answer not seen), or the last attempt that saved its state is not the previous one (an
    attempt in between died with its state, after the last saved one began).
    """
    state = ctx.state
    windows = []
    if ctx.was_sent(POST):
        last = _seconds(ctx.sent_at(POST))
        first = _seconds(state.get("first_sent_at")) or last
        if last is not None:
            windows.append((first - CLOCK_MARGIN, last + ACCEPT_SPAN + CLOCK_MARGIN))
    recorded = state.get("attempt") or 0
    if recorded != ctx.attempt - 1:
        since = _seconds(state.get("attempt_at")) or report.received_at.timestamp()
        windows.append((since - CLOCK_MARGIN, None))
    if not windows:
        return None
    latest = [w[1] for w in windows]
    return min(w[0] for w in windows), (None if None in latest else max(latest))


def _names_delivery(message: Any, report, ctx) -> bool:
    """Whether a message from ``conversations.history`` carries this delivery's metadata."""
    metadata = message.get("metadata") if isinstance(message, dict) else None
    if not isinstance(metadata, dict) or metadata.get("event_type") != EVENT_TYPE or not message.get("ts"):
        return False
    payload = metadata.get("event_payload") or {}
    return payload.get("report_id") == report.id and payload.get("delivery_id") == ctx.delivery_id


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class Unavailable(Exception):
    """Slack will not let this token look (a scope, or membership, is missing)."""
    code: str
    fix: str


class MessageLookup:
    """Finds the message of a delivery in its channel; one per destination (it caches the channel ID)."""

    def __init__(self, destination) -> None:
        self.dest = destination
        channel = destination.config["channel"].strip().lstrip("#")
        self.channel_id: str | None = channel if CHANNEL_ID.match(channel) else None
        self.channel_name = channel
        self._told: set[str] = set()

    def learn_channel_id(self, channel_id: str | None) -> None:
        """``chat.postMessage`` answered with the channel's ID: no need to resolve the name."""
        if channel_id and CHANNEL_ID.match(channel_id):
            self.channel_id = channel_id

    def find(self, report, ctx, window: tuple[float, float | None]) -> dict[str, str] | None:
        """``{"channel", "ts"}`` of the message an earlier attempt posted, or None (not found, or
        Slack does not let us look: then told once in the log). Raises Retryable/Permanent for
        Slack's other errors, so a retry looks again instead of posting blind."""
        try:
            channel = self.channel_id or self.resolve_channel(ctx)
            return self._search(report, ctx, channel, window)
        except Unavailable as exc:
            self._tell_once(exc)
            return None

    def probe(self, ctx) -> str:
        """``test_connection``'s words on the look-up: available, or what would make it so."""
        try:
            channel = self.channel_id or self.resolve_channel(ctx)
            self._history(ctx, {"channel": channel, "limit": 1})
        except Unavailable as exc:
            return (f"no-duplicate look-up NOT available ({exc.code}): {exc.fix}; until then a retry after a lost "
                    f"answer may post twice")
        return "no-duplicate look-up available (conversations.history with message metadata)"

    # --- Slack calls ---------------------------------------------------------------------

    def _search(self, report, ctx, channel: str, window: tuple[float, float | None]) -> dict[str, str] | None:
        oldest, latest = window
        params: dict[str, Any] = {"channel": channel, "oldest": f"{oldest:.6f}", "include_all_metadata": "true",
                                  "limit": PAGE_SIZE}
        if latest is not None:
            params["latest"] = f"{latest:.6f}"
        for _ in range(MAX_PAGES):
            page = self._history(ctx, params)
            for message in page.get("messages") or []:
                if _names_delivery(message, report, ctx):
                    return {"channel": channel, "ts": str(message["ts"])}
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not (page.get("has_more") and cursor):
                return None
            params["cursor"] = cursor
        log.warning("destination %r: the look-up for delivery %s read %d messages of %s without reaching the "
                    "first attempt's time; posting (the message may appear twice)", self.dest.name,
                    ctx.delivery_id, MAX_PAGES * PAGE_SIZE, channel)
        return None

    def resolve_channel(self, ctx) -> str:
        """The ID of the channel configured by name, from ``conversations.list`` (cached)."""
        params: dict[str, Any] = {"types": "public_channel,private_channel", "exclude_archived": "true",
                                  "limit": LIST_PAGE_SIZE}
        for _ in range(MAX_LIST_PAGES):
            page = self._call(ctx, "conversations.list", params, {
                "missing_scope": "add channels:read (groups:read for a private channel), or set `channel` to the "
                                 "channel ID"})
            for channel in page.get("channels") or []:
                if isinstance(channel, dict) and channel.get("name") == self.channel_name and channel.get("id"):
                    self.channel_id = str(channel["id"])
                    return self.channel_id
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
            params["cursor"] = cursor
        raise Unavailable("channel_not_found", f"no channel named {self.channel_name!r} is visible to the app: set "
                                               f"`channel` to the channel ID")

    def _history(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return self._call(ctx, "conversations.history", params, {
            "missing_scope": "add the channels:history scope (groups:history for a private channel) under OAuth & "
                             "Permissions and reinstall the app",
            "not_in_channel": "/invite @<app> in the channel (chat:write.public posts without joining, but "
                              "reading history needs membership)",
            "channel_not_found": "/invite @<app> in the channel, or check `channel`"})

    def _call(self, ctx, method: str, params: dict[str, Any], fixes: dict[str, str]) -> dict[str, Any]:
        data = api_call(ctx, self.dest.config["api_url"], self.dest.config["token"], method, params, self.dest.name,
                        tolerate=UNAVAILABLE & set(fixes))
        if not data.get("ok"):
            code = str(data.get("error"))
            needed = f" (Slack: needed {data['needed']})" if data.get("needed") else ""
            raise Unavailable(code, fixes[code] + needed)
        return data

    def _tell_once(self, exc: Unavailable) -> None:
        if exc.code in self._told:
            return
        self._told.add(exc.code)
        log.warning("destination %r: cannot look up a post whose answer was lost (Slack error %s): %s. Posting "
                    "again instead, so the message may appear twice. (Said once per process.)",
                    self.dest.name, exc.code, exc.fix)
