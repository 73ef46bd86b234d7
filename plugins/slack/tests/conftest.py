"""Checks the Slack tests share: Slack's Web API description and Block Kit's documented limits.

The checks are written apart from the plugin's own builders, so a builder that forgets a limit
is caught. Of hub.testing's fixtures only ``hub_plugins`` is overridden (the app loads this
plugin), and ``fresh_rate_limits`` is made autouse for this suite.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import pytest
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.metadata import Metadata

SPEC = Path(__file__).resolve().parents[4] / "shared" / "specs" / "slack" / "slack_web_openapi_v2.json"
if not SPEC.exists():  # the checkout may sit elsewhere; /work/shared is where the specs are kept
    SPEC = Path("/work/shared/specs/slack/slack_web_openapi_v2.json")

# Block Kit limits, from api.slack.com/reference/block-kit (blocks, block-elements, composition-objects).
LIMITS = {
    "blocks": 50, "section.text": 3000, "section.fields": 10, "field.text": 2000, "header.text": 150,
    "context.elements": 10, "actions.elements": 25, "button.text": 75, "button.url": 3000,
    "button.value": 2000, "action_id": 255, "block_id": 255, "text_object": 3000, "message.text": 40000,
}


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def block_kit_problems(message: dict) -> list[str]:
    """Every way ``message`` breaks Block Kit's documented limits, by hand and by Slack's own
    ``slack_sdk.models.blocks`` (parse + validate_json); an empty list: valid."""
    problems: list[str] = []

    def text_object(obj, where, limit, kinds=("plain_text", "mrkdwn")):
        if not isinstance(obj, dict) or obj.get("type") not in kinds:
            problems.append(f"{where}: not a {'/'.join(kinds)} text object")
            return
        text = obj.get("text")
        if not isinstance(text, str) or not text:
            problems.append(f"{where}: text must be a non-empty string")
        elif _units(text) > limit:
            problems.append(f"{where}: {_units(text)} characters > {limit}")
        extra = set(obj) - {"type", "text", "emoji", "verbatim"}
        if extra:
            problems.append(f"{where}: unknown keys {sorted(extra)}")

    text = message.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append("text: the top-level fallback text is missing (Slack wants it with blocks)")
    elif _units(text) > LIMITS["message.text"]:
        problems.append(f"text: {_units(text)} characters > {LIMITS['message.text']}")
    blocks = message.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        problems.append("blocks: must be a non-empty list")
        return problems
    if len(blocks) > LIMITS["blocks"]:
        problems.append(f"blocks: {len(blocks)} > {LIMITS['blocks']}")
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        kind = block.get("type")
        if "block_id" in block and _units(block["block_id"]) > LIMITS["block_id"]:
            problems.append(f"{where}.block_id too long")
        elements = block.get("elements") or []
        if kind in ("context", "actions") and not 1 <= len(elements) <= LIMITS[f"{kind}.elements"]:
            problems.append(f"{where}.elements: {len(elements)} not in 1..{LIMITS[f'{kind}.elements']}")
        if kind == "header":
            text_object(block.get("text"), f"{where}.text", LIMITS["header.text"], ("plain_text",))
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: a section needs text or fields")
            if "text" in block:
                text_object(block["text"], f"{where}.text", LIMITS["section.text"])
            fields = block.get("fields", [])
            if len(fields) > LIMITS["section.fields"]:
                problems.append(f"{where}.fields: {len(fields)} > {LIMITS['section.fields']}")
            for j, field in enumerate(fields):
                text_object(field, f"{where}.fields[{j}]", LIMITS["field.text"])
        elif kind == "context":
            for j, element in enumerate(elements):
                text_object(element, f"{where}.elements[{j}]", LIMITS["text_object"])
        elif kind == "actions":
            ids = [e.get("action_id") for e in elements if e.get("action_id")]
            if len(ids) != len(set(ids)):
                problems.append(f"{where}: action_id values must be unique")
            for j, element in enumerate(elements):
                at = f"{where}.elements[{j}]"
                if element.get("type") != "button":
                    problems.append(f"{at}: only buttons are expected here")
                    continue
                text_object(element.get("text"), f"{at}.text", LIMITS["button.text"], ("plain_text",))
                url = element.get("url", "")
                if url and (_units(url) > LIMITS["button.url"] or not url.startswith(("http://", "https://"))):
                    problems.append(f"{at}.url: not an http(s) URL of at most {LIMITS['button.url']} characters")
                if _units(element.get("value", "")) > LIMITS["button.value"]:
                    problems.append(f"{at}.value too long")
                if _units(element.get("action_id", "")) > LIMITS["action_id"]:
                    problems.append(f"{at}.action_id too long")
                if element.get("style") not in (None, "primary", "danger"):
                    problems.append(f"{at}.style: must be primary or danger")
        elif kind != "divider":
            problems.append(f"{where}: unexpected block type {kind!r}")
    return problems + slack_sdk_problems(blocks if isinstance(blocks, list) else [])


def slack_sdk_problems(blocks: list) -> list[str]:
    """The blocks as Slack's official SDK models them: parsed, validated, and unchanged by a round trip."""
    problems = []
    for i, raw in enumerate(blocks):
        try:
            block = Block.parse(raw) if isinstance(raw, dict) else None
            if block is None:
                problems.append(f"blocks[{i}]: slack_sdk knows no block {raw!r:.60}")
                continue
            block.validate_json()
            modelled = block.to_dict()
        except SlackObjectFormationError as exc:
            problems.append(f"blocks[{i}]: slack_sdk: {exc}")
            continue
        if modelled != raw:
            problems.append(f"blocks[{i}]: slack_sdk reads it differently: {modelled!r:.200}")
    return problems


# What Slack documents today that its 2020 spec lacks, added to a copy of the spec at test time
# (the file itself stays as published):
# - chat.postMessage `metadata`: "JSON object with event_type and event_payload fields, presented
#   as a URL-encoded string" (docs.slack.dev/reference/methods/chat.postMessage); in a JSON body,
#   the object itself. `event_type` "can contain letters, numbers, underscores, and hyphens, but
#   not periods or other punctuation" (docs.slack.dev/messaging/message-metadata).
# - conversations.history `include_all_metadata` (boolean, "Return all metadata associated with
#   this message"), `limit` "Maximum of 999", `channel` required
#   (docs.slack.dev/reference/methods/conversations.history).
# - a message's `metadata` in history answers, and `response_metadata.next_cursor` in
#   conversations.history answers (the spec's own example has it; its schema forbids it);
#   a range without messages answers `"messages": []` (the schema says at least one).
ADDED_ARGUMENTS = {
    "/chat.postMessage": {"metadata": {"name": "metadata", "in": "formData", "type": "metadata"}},
    "/conversations.history": {"include_all_metadata": {"name": "include_all_metadata", "in": "query",
                                                        "type": "boolean"}},
}
REQUIRED_QUERY = {"/conversations.history": {"channel"}}
MAX_LIMIT = {"/conversations.history": 999, "/conversations.list": 1000}
EVENT_TYPE = re.compile(r"^[A-Za-z0-9_-]+$")


def patched_spec(spec: dict) -> dict:
    patched = copy.deepcopy(spec)
    for path, added in ADDED_ARGUMENTS.items():
        for operation in patched["paths"][path].values():
            operation["parameters"].extend(added.values())
    patched["definitions"]["objs_message"]["properties"]["metadata"] = {
        "type": "object", "additionalProperties": False, "required": ["event_type", "event_payload"],
        "properties": {"event_type": {"type": "string", "pattern": EVENT_TYPE.pattern},
                       "event_payload": {"type": "object"}}}
    history = patched["paths"]["/conversations.history"]["get"]["responses"]["200"]["schema"]
    history["properties"]["messages"].pop("minItems")
    history["properties"]["response_metadata"] = {
        "type": "object", "additionalProperties": False, "properties": {"next_cursor": {"type": "string"}}}
    return patched


@pytest.fixture(scope="session")
def slack_spec() -> dict:
    return patched_spec(json.loads(SPEC.read_text()))


def metadata_problems(value) -> list[str]:
    """Message metadata as Slack documents it, and as slack_sdk's ``Metadata`` model writes it."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict) or set(value) != {"event_type", "event_payload"}:
        return [f"metadata: must be an object of exactly event_type and event_payload, got {value!r:.120}"]
    problems = []
    if not isinstance(value["event_type"], str) or not EVENT_TYPE.match(value["event_type"]):
        problems.append(f"metadata.event_type: letters, digits, _ and - only, got {value['event_type']!r}")
    payload = value["event_payload"]
    if not isinstance(payload, dict):
        problems.append("metadata.event_payload: must be an object")
    else:
        for key, item in payload.items():
            items = item if isinstance(item, list) else [item]
            if not all(isinstance(i, (str, int, float, bool, dict)) for i in items):
                problems.append(f"metadata.event_payload.{key}: string, number, boolean, object or array of those")
    if Metadata(event_type=value["event_type"], event_payload=payload).to_dict() != value:
        problems.append("metadata: slack_sdk's Metadata model writes it differently")
    return problems


def post_message_problems(spec: dict, request) -> list[str]:
    """Check a recorded ``chat.postMessage`` request against the operation in Slack's spec.

    The spec (Swagger 2.0) lists the arguments as ``formData`` and ``token`` as a header;
    Slack's Web API takes the same arguments as a JSON body with ``Authorization: Bearer``
    (the operation ``consumes`` application/json). So: the URL is host + basePath + path, the
    content type is one the operation consumes, every body key is a declared argument of the
    declared type (``blocks``/``attachments`` are "JSON-based arrays": a list in a JSON body,
    or its JSON text; ``metadata`` an object), every required argument is present, and the
    token is a Bearer header.
    """
    problems = []
    operation = spec["paths"]["/chat.postMessage"]["post"]
    expected_url = f"https://{spec['host']}{spec['basePath']}/chat.postMessage"
    if request.method != "POST":
        problems.append(f"method {request.method}, expected POST")
    if request.url != expected_url:
        problems.append(f"url {request.url}, expected {expected_url}")
    headers = {k.lower(): v for k, v in request.headers.items()}
    content_type = headers.get("content-type", "").split(";")[0].strip()
    if content_type not in operation["consumes"]:
        problems.append(f"content type {content_type!r} not in {operation['consumes']}")
    params = {p["name"]: p for p in operation["parameters"]}
    token = params["token"]
    if token.get("required") and not headers.get("authorization", "").startswith("Bearer "):
        problems.append("token: required; send it as Authorization: Bearer <token>")
    body = request.body
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            problems.append("body is not JSON")
            return problems
    if not isinstance(body, dict):
        problems.append("body must be a JSON object")
        return problems
    form = {name: p for name, p in params.items() if p["in"] == "formData"}
    for name, p in form.items():
        if p.get("required") and name not in body:
            problems.append(f"{name}: required by the spec, missing")
    for name, value in body.items():
        p = form.get(name)
        if p is None:
            problems.append(f"{name}: not an argument of chat.postMessage")
        elif p["type"] == "metadata":
            problems.extend(metadata_problems(value))
        elif p["type"] == "boolean" and not isinstance(value, bool):
            problems.append(f"{name}: must be a boolean, got {value!r}")
        elif p["type"] == "string" and "JSON-based array" in p.get("description", ""):
            parsed = value if isinstance(value, list) else json.loads(value) if isinstance(value, str) else None
            if not isinstance(parsed, list):
                problems.append(f"{name}: must be a JSON array")
        elif p["type"] == "string" and not isinstance(value, str):
            problems.append(f"{name}: must be a string, got {type(value).__name__}")
    return problems


def read_method_problems(spec: dict, request) -> list[str]:
    """Check a recorded GET of a Web API read method (conversations.history, .list, .info,
    auth.test) against its operation in the spec: the method and URL, every query argument
    declared and of its declared type (a boolean written true/false or 1/0), ``limit`` within
    Slack's maximum, the required arguments there, a Conversation ID as ``channel`` (the spec's
    ``defs_channel`` pattern), and the token in the Authorization header, never in the URL."""
    problems = []
    url = urlsplit(request.url)
    base = f"{spec['basePath']}/"
    path = "/" + url.path[len(base):] if url.path.startswith(base) else url.path
    if f"https://{url.netloc}" != f"https://{spec['host']}" or url.scheme != "https":
        problems.append(f"host {url.scheme}://{url.netloc}, expected https://{spec['host']}")
    operation = spec["paths"].get(path, {}).get("get")
    if operation is None:
        return problems + [f"{path}: not a GET operation of the Web API"]
    if request.method != "GET":
        problems.append(f"method {request.method}, expected GET")
    headers = {k.lower(): v for k, v in request.headers.items()}
    if not headers.get("authorization", "").startswith("Bearer "):
        problems.append("token: send it as Authorization: Bearer <token>")
    declared = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    if "token" in query:
        problems.append("token: in the URL (it ends up in logs); send it as a header")
    for name in REQUIRED_QUERY.get(path, set()) | {n for n, p in declared.items() if p.get("required")}:
        if name not in query:
            problems.append(f"{name}: required, missing")
    for name, value in query.items():
        p = declared.get(name)
        if p is None:
            problems.append(f"{name}: not an argument of {path[1:]}")
        elif p["type"] == "boolean" and value not in ("true", "false", "1", "0"):
            problems.append(f"{name}: must be a boolean, got {value!r}")
        elif p["type"] == "integer" and not value.isdigit():
            problems.append(f"{name}: must be an integer, got {value!r}")
        elif p["type"] == "number" and not re.fullmatch(r"\d+(\.\d+)?", value):
            problems.append(f"{name}: must be a Unix timestamp, got {value!r}")
    limit = query.get("limit", "")
    if limit.isdigit() and not 1 <= int(limit) <= MAX_LIMIT.get(path, 1000):
        problems.append(f"limit: {limit} not in 1..{MAX_LIMIT.get(path, 1000)}")
    channel = query.get("channel")
    if channel is not None and not re.fullmatch(spec["definitions"]["defs_channel"]["pattern"], channel):
        problems.append(f"channel: {channel!r} is not a conversation ID")
    return problems


def response_problems(spec: dict, status: str, payload: dict, method: str = "chat.postMessage") -> list[str]:
    """Check a mocked answer against the method's response schema (``200`` or ``default``).
    An error code the 2020 spec does not list yet (``ratelimited``, ``not_in_channel`` for
    history) cannot be checked: only its shape is, ``{"ok": false, "error": code}``."""
    (operation,) = spec["paths"][f"/{method}"].values()
    schema = copy.deepcopy(operation["responses"][status]["schema"])
    codes = schema.get("properties", {}).get("error", {})
    if status == "default" and payload.get("error") not in codes.get("enum", [payload.get("error")]):
        codes.pop("enum")
    validator = jsonschema.Draft4Validator({**schema, "definitions": spec["definitions"]})
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(payload)]


@pytest.fixture
def check_blocks():
    return block_kit_problems


@pytest.fixture
def check_post_message(slack_spec):
    return lambda request: post_message_problems(slack_spec, request)


@pytest.fixture
def check_metadata():
    return metadata_problems


@pytest.fixture
def check_read_method(slack_spec):
    return lambda request: read_method_problems(slack_spec, request)


@pytest.fixture
def check_response(slack_spec):
    return lambda status, payload, method="chat.postMessage": response_problems(slack_spec, status, payload, method)


@pytest.fixture(autouse=True)
def _full_rate_limits(fresh_rate_limits):
    """Every test starts with full rate-limit buckets (they are shared process-wide)."""


@pytest.fixture
def hub_plugins():
    """The app fixture loads this plugin (and the built-in ones)."""
    return ("slack",)
