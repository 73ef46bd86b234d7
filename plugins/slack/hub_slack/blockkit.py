"""Block Kit builders that keep to Slack's documented limits by construction.

Every builder cuts its text to the limit of the place it goes (never raising), so a long
summary or a chatty analysis yields a shorter message, not an ``invalid_blocks`` error.
Limits (api.slack.com/reference/block-kit): 50 blocks a message; section text 3000
characters, fields at most 10 of 2000 each; header plain_text 150; context at most 10
elements; actions at most 25 elements; button text 75, url 3000; action_id
and block_id 255. The top-level ``text`` is only the notification and fallback text when
blocks are present: Slack cuts it at 40,000 characters, we keep it to ``MESSAGE_TEXT``.
"""
from __future__ import annotations

import re
from typing import Any

MAX_BLOCKS = 50
SECTION_TEXT = 3000
FIELD_TEXT = 2000
MAX_FIELDS = 10
HEADER_TEXT = 150
CONTEXT_ELEMENTS = 10
TEXT_OBJECT = 3000
ACTIONS_ELEMENTS = 25
BUTTON_TEXT = 75
BUTTON_URL = 3000
ACTION_ID = 255
MESSAGE_TEXT = 3000
ELLIPSIS = "…"


def length(text: str) -> int:
    """Characters as Slack's JavaScript counts them (UTF-16 code units): an emoji counts 2."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: Any) -> str:
    """Text from a call (summary, error, analysis values) made safe for mrkdwn: & < > escaped."""
    if text is None:
        return ""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# An entity (&amp;), a link or mention (<...>) cut in half would show as garbage or be rejected.
_OPEN_ENTITY = re.compile(r"&[a-z#0-9]*$")
_OPEN_ANGLE = re.compile(r"<[^>]*$")


def truncate(text: str | None, limit: int, suffix: str = ELLIPSIS) -> str:
    """``text`` cut to at most ``limit`` UTF-16 units, ending in ``suffix`` when cut.

    The cut never splits a surrogate pair, an ``&amp;`` entity or a ``<link|label>``/``<!here>``,
    and prefers a word boundary when one is near the end.
    """
    text = text or ""
    if length(text) <= limit:
        return text
    budget = max(0, limit - length(suffix))
    cut = text[:budget]
    while length(cut) > budget:
        cut = cut[:-1]
    cut = _OPEN_ANGLE.sub("", _OPEN_ENTITY.sub("", cut))
    space = cut.rfind(" ")
    if space >= len(cut) - 40 and space > 0:
        cut = cut[:space]
    return cut.rstrip() + suffix


def plain(text: str, limit: int = TEXT_OBJECT) -> dict:
    return {"type": "plain_text", "text": truncate(text, limit) or " ", "emoji": True}


def mrkdwn(text: str, limit: int = TEXT_OBJECT) -> dict:
    return {"type": "mrkdwn", "text": truncate(text, limit) or " "}


def header(text: str) -> dict:
    return {"type": "header", "text": plain(text, HEADER_TEXT)}


def section(text: str) -> dict:
    return {"type": "section", "text": mrkdwn(text, SECTION_TEXT)}


def field_sections(pairs: list[tuple[str, str]]) -> list[dict]:
    """``[(label, mrkdwn value)]`` as two-column fields, 10 to a section block."""
    items = [mrkdwn(f"*{escape(label)}*\n{value}", FIELD_TEXT) for label, value in pairs]
    return [{"type": "section", "fields": items[i:i + MAX_FIELDS]} for i in range(0, len(items), MAX_FIELDS)]


def context(texts: list[str]) -> dict:
    """Small grey lines under a block; more than 10 are joined into the last element."""
    texts = [t for t in texts if t]
    if len(texts) > CONTEXT_ELEMENTS:
        texts = texts[:CONTEXT_ELEMENTS - 1] + ["  ·  ".join(texts[CONTEXT_ELEMENTS - 1:])]
    return {"type": "context", "elements": [mrkdwn(t, TEXT_OBJECT) for t in texts]}


def button(text: str, url: str, action_id: str, style: str | None = None) -> dict | None:
    """A link button, or None when the URL is too long or not http(s) (Slack would reject it)."""
    if not url or length(url) > BUTTON_URL or not url.startswith(("https://", "http://")):
        return None
    element = {"type": "button", "text": plain(text, BUTTON_TEXT), "url": url,
               "action_id": action_id[:ACTION_ID]}
    if style:
        element["style"] = style
    return element


def actions(elements: list[dict | None]) -> dict | None:
    present = [e for e in elements if e][:ACTIONS_ELEMENTS]
    return {"type": "actions", "elements": present} if present else None


def message(text: str, blocks: list[dict | None]) -> dict:
    """The message body: fallback ``text`` and at most 50 blocks (the last ones kept if cut:
    they hold the links)."""
    present = [b for b in blocks if b]
    if len(present) > MAX_BLOCKS:
        tail = [b for b in present[-2:] if b["type"] in ("actions", "context")]
        present = present[:MAX_BLOCKS - len(tail)] + tail
    return {"text": truncate(text, MESSAGE_TEXT), "blocks": present}
