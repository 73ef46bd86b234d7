"""Plain text to Atlassian Document Format (ADF), the only form Jira Cloud v3 takes for a description.

Blank lines separate paragraphs, single line breaks become ``hardBreak`` nodes, and
the hub's own URLs (``links``: the report, the recording) become text with a ``link`` mark so
they are clickable in Jira. Any other URL, such as one a caller steered into the summary,
stays plain text: a caller cannot plant a clickable link in an issue.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

_URL = re.compile(r"https?://[^\s<>\"]+[^\s<>\".,;:!?)\]]")


def _inline(line: str, links: frozenset[str]) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    position = 0
    for match in _URL.finditer(line):
        if match.group(0) not in links:
            continue
        if match.start() > position:
            nodes.append({"type": "text", "text": line[position:match.start()]})
        url = match.group(0)
        nodes.append({"type": "text", "text": url, "marks": [{"type": "link", "attrs": {"href": url}}]})
        position = match.end()
    if position < len(line):
        nodes.append({"type": "text", "text": line[position:]})
    return nodes


def to_adf(text: str, links: Iterable[str | None] = ()) -> dict[str, Any]:
    """``{"type": "doc", "version": 1, "content": [paragraphs]}``; empty text gives an empty doc."""
    allowed = frozenset(link for link in links if link)
    content = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.rstrip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        paragraph: list[dict[str, Any]] = []
        for index, line in enumerate(lines):
            if index:
                paragraph.append({"type": "hardBreak"})
            paragraph.extend(_inline(line, allowed))
        content.append({"type": "paragraph", "content": paragraph})
    return {"type": "doc", "version": 1, "content": content}
