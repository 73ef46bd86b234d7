"""What a caller said, made inert before it goes into a tracker that renders Markdown.

A summary is the model's retelling of the call, so a caller can steer it to contain
``[Reset your password](https://evil.example)`` or a bare ``https://evil.example``; in
Todoist, Trello or Linear that would become a clickable link in a task a colleague trusts.
Descriptions render the report's call text (summary, messages, analysis values) through
``escape_markdown``: link and emphasis syntax is backslash-escaped, as CommonMark allows for
any ASCII punctuation, and so are the ``:`` of a URL scheme and the dots inside a host name,
so autolinking finds nothing. The text reads the same once rendered. The operator's own
template text and the hub's links (report, recording) are left as they are.
"""
from __future__ import annotations

import re
from typing import Any, Callable

_MARKUP = re.compile(r"([\\`*_\[\]()<>!#|~:])|\.(?=\w)")


def escape_markdown(text: str) -> str:
    return _MARKUP.sub(lambda m: "\\" + m.group(0), text)


def escaped(value: Any, escape: Callable[[str], str]) -> Any:
    """``value`` with every string in it (lists and dicts too) through ``escape``."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, list):
        return [escaped(v, escape) for v in value]
    if isinstance(value, dict):
        return {k: escaped(v, escape) for k, v in value.items()}
    return value


def with_call_textescaped(data: dict[str, Any], escape: Callable[[str], str]) -> dict[str, Any]:
    """A copy of a report's JSON form whose caller-influenced text went through ``escape``."""
    copy = dict(data)
    for key in ("summary", "analysis", "analysis_errors"):
        copy[key] = escaped(data.get(key), escape)
    copy["messages"] = [{**m, "content": escaped(m.get("content"), escape)} if isinstance(m, dict) else m
                        for m in data.get("messages") or []]
    return copy
