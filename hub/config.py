"""Loading and validating the TOML configuration.

Every problem is collected and reported at once, each line naming its dotted key and
the fix, so ``sovereign-hub check-config`` shows the whole list in one run.
"""
from __future__ import annotations

import difflib
import json
import os
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from .destinations import Destination, HubSettings
from .fields import TemplateField
from .plugins import Registry
from .ratelimit import parse_rate
from .rules import Rule
from .redaction import redact, register_secret
from .templates import Template

DEFAULT_RETRY_DELAYS = [5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200, 86400]
COMMON_DESTINATION_KEYS = {"type", "enabled", "when", "events", "ordering", "max_in_flight"}
ORDERINGS = ("customer", "none")
CORE_DESTINATION_KEYS = ("ca_bundle", "rate_limits")  # checked by the hub for every type


class ConfigProblems(Exception):
    """All the problems of one configuration file, one line each."""

    def __init__(self, problems: list[str], path: str | None = None):
        self.problems = problems
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__("\n".join(f"{where}{p}" for p in problems))


# --- secrets -------------------------------------------------------------------------

def _is_secret_ref(value: Any) -> bool:
    return (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("env", "file")
            and isinstance(next(iter(value.values())), str))


#: stands for a secret that could not be read, so that the schemas judge the rest of the file as
#: if it were there (a configuration with a problem is never used)
UNREAD_SECRET = "<secret not read>"


def resolve_secrets(node: Any, base_dir: Path, problems: list[str], key: str = "") -> Any:
    """Replace every ``{ env = "NAME" }`` / ``{ file = "path" }`` with the secret it names."""
    if _is_secret_ref(node):
        (kind, ref), = node.items()
        if kind == "env":
            value = os.environ.get(str(ref))
            if value is None or value == "":
                problems.append(f"{key}: environment variable {ref} is not set")
                return UNREAD_SECRET
        else:
            path = (base_dir / str(ref)).expanduser()
            try:
                value = path.read_text().strip()
            except OSError as exc:
                problems.append(f"{key}: cannot read secret file {path} ({exc.strerror or exc})")
                return UNREAD_SECRET
        register_secret(value)
        return value
    if isinstance(node, dict):
        return {k: resolve_secrets(v, base_dir, problems, f"{key}.{k}" if key else k) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_secrets(v, base_dir, problems, f"{key}[{i}]") for i, v in enumerate(node)]
    return node


#: marshmallow's type messages, and what such a key expects instead
EXPECTED = {
    "Not a valid URL.": "an absolute http(s) URL such as https://example.com/path",
    "Not a valid integer.": "a whole number such as 30",
    "Not a valid number.": "a number such as 2.5",
    "Not a valid boolean.": "true or false",
    "Not a valid string.": 'a string in quotes, "like this"',
    "Not a valid list.": 'a list, ["like", "this"]',
    "Not a valid mapping type.": "a table",
    "Not a valid email address.": "an email address",
}
_ABSENT = object()


def flatten_errors(messages: Any, prefix: str, data: Any = None, known: tuple[str, ...] = (),
                   secret: tuple[str, ...] = ()) -> list[str]:
    """marshmallow's nested error dict -> ``a.b.c: message`` lines, in the hub's words: a value of
    the wrong kind is quoted (unless it is one of the ``secret`` keys) with what is expected, and an
    unknown key gets the nearest of the ``known`` ones."""
    if isinstance(messages, dict):
        lines = []
        misspelled = {_nearest(str(k), known) for k, v in messages.items() if v == ["Unknown field."]}
        for k, v in messages.items():
            if k in misspelled and v == ["Missing data for required field."]:
                continue  # said once, as the misspelling's "did you mean"
            if k == "_schema":
                lines.extend(flatten_errors(v, prefix, data))
                continue
            key = f"{prefix}.{k}" if prefix else str(k)
            value = data.get(k, _ABSENT) if isinstance(data, dict) else _ABSENT
            if isinstance(v, list) and v and all(isinstance(m, str) for m in v):
                lines.append(f"{key}: {'; '.join(_explained(m, str(k), value, known, k in secret) for m in v)}")
            else:
                child = data[k] if isinstance(data, list) and isinstance(k, int) and k < len(data) else value
                lines.extend(flatten_errors(v, key, None if child is _ABSENT else child))
        return lines
    if isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        return [f"{prefix}: {'; '.join(messages)}"]
    if isinstance(messages, list):
        return [line for m in messages for line in flatten_errors(m, prefix, data)]
    return [f"{prefix}: {messages}"]


def _explained(message: str, name: str, value: Any, known: tuple[str, ...], secret: bool) -> str:
    if message == "Unknown field.":
        hint = did_you_mean(name, known) or (f" (known: {', '.join(sorted(known))})" if known else "")
        return f"unknown key{hint or ' (check the spelling)'}"
    expected = EXPECTED.get(message)
    if message == "Missing data for required field.":
        return "missing: this key is required"
    if expected is None or value is _ABSENT:
        return message
    shown = "the value given" if secret else redact(json.dumps(value, ensure_ascii=False, default=str))
    return f"{shown} is not {expected}"


def did_you_mean(name: str, known) -> str:
    """``; did you mean 'path'?`` when one of ``known`` is close to ``name``, else ``""``."""
    close = _nearest(name, known)
    return f"; did you mean {close!r}?" if close else ""


def _nearest(name: str, known) -> str | None:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def schema_keys(schema: Schema) -> tuple[str, ...]:
    """The keys a schema accepts, as they are written in the file."""
    return tuple(f.data_key or name for name, f in schema.fields.items() if not f.dump_only)


# --- the core sections ------------------------------------------------------------------
# Each section's schema loads into a frozen dataclass: ``config.dispatch.retry_delays``, typed
# and read-only, instead of string keys into a dict.

@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    max_body_bytes: int
    public_url: str | None
    workers: int
    worker_class: str
    header_timeout_seconds: int
    metrics_token: str | None
    trusted_proxies: int


@dataclass(frozen=True)
class StoreConfig:
    url: str
    sqlite_synchronous: str
    auto_migrate: bool
    schema_wait_seconds: float


@dataclass(frozen=True)
class DispatchConfig:
    backend: str
    workers: int
    retry_delays: list[float]
    max_attempts: int | None
    jitter: float
    lease_seconds: float
    poll_interval: float
    shutdown_grace_seconds: float
    broker_url: str | None
    queue: str
    sweep_interval: float
    sweep_limit: int


@dataclass(frozen=True)
class AdminConfig:
    token: str | None


@dataclass(frozen=True)
class AnalysisConfig:
    schema: dict | None
    messages: list[dict] | None
    min_messages_threshold: int


@dataclass(frozen=True)
class PhoneConfig:
    default_region: str | None


@dataclass(frozen=True)
class LoggingConfig:
    level: str


@dataclass(frozen=True)
class PrivacyConfig:
    retention_days: int | None
    store_messages: bool
    store_raw: bool

    @property
    def not_kept(self) -> tuple[str, ...]:
        """The parts of a report removed once its deliveries have ended."""
        return tuple(part for part, kept in (("messages", self.store_messages), ("raw", self.store_raw)) if not kept)


@dataclass(frozen=True)
class AssistantRequestConfig:
    """``[answers.assistant_request]``: how the hub answers an assistant-request (docs/answers.md)."""

    crm: str
    first_message: Template
    unknown_first_message: Template | None
    system_message: Template | None
    llm_config: dict | None
    max_duration_seconds: int | None
    budget_ms: int
    cache_seconds: int


@dataclass(frozen=True)
class ToolsConfig:
    """``[answers.tools]``: tool-calls are answered; ``followup`` is where ``create_followup`` goes."""

    followup: str | None
    timeout_seconds: float
    crm: str | None


@dataclass(frozen=True)
class AnswersConfig:
    assistant_request: AssistantRequestConfig | None
    tools: ToolsConfig | None
    #: threads that run CRM lookups (per process); a lookup beyond them waits its turn, within the budget
    lookup_workers: int

    @property
    def crm(self) -> str | None:
        """The destination callers are looked up in: the assistant-request's, else the tools' own."""
        if self.assistant_request is not None:
            return self.assistant_request.crm
        return self.tools.crm if self.tools is not None else None


@dataclass(frozen=True)
class RateLimitConfig:
    storage: str  # "memory://" (this process only) or a Redis URL (shared by every process and node)


class _Section(Schema):
    """A core section's schema: loads into its frozen dataclass ``into``."""

    into: type

    @post_load
    def _typed(self, data: dict, **_: Any):
        return self.into(**data)


class ServerSchema(_Section):
    into = ServerConfig
    host = fields.String(load_default="127.0.0.1")
    port = fields.Integer(load_default=8080, validate=validate.Range(1, 65535))
    max_body_bytes = fields.Integer(load_default=1_048_576, validate=validate.Range(min=1024))
    public_url = fields.String(load_default=None, allow_none=True)
    workers = fields.Integer(load_default=2, validate=validate.Range(1, 64))
    # gevent: one worker reads many connections, a slow client holds a greenlet, never the worker;
    # sync: one request per worker at a time, only behind a proxy that buffers whole requests
    worker_class = fields.String(load_default="gevent", validate=validate.OneOf(["gevent", "sync"]))
    # a connection whose request line and headers take longer is closed (gunicorn's keep-alive,
    # which the gevent worker applies to every request's headers, the first one included)
    header_timeout_seconds = fields.Integer(load_default=10, strict=True, validate=validate.Range(1, 300))
    metrics_token = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=16))
    # how many proxies in front set X-Forwarded-For/-Proto/-Host (0: none, the headers are ignored)
    trusted_proxies = fields.Integer(load_default=0, validate=validate.Range(0, 5))


class StoreSchema(_Section):
    into = StoreConfig
    url = fields.String(load_default="sqlite:///hub.db")
    sqlite_synchronous = fields.String(load_default="NORMAL", validate=validate.OneOf(["NORMAL", "FULL"]))
    # serve applies pending migrations before it starts anything; false: `sovereign-hub db upgrade` does
    auto_migrate = fields.Boolean(load_default=True)
    # how long a worker or web process waits for a schema that is behind (an upgrade under way)
    schema_wait_seconds = fields.Float(load_default=60, validate=validate.Range(0, 3600))


BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")


def _broker_url(value: str) -> None:
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme not in BROKER_SCHEMES:
        raise ValidationError(f"not a broker URL: use redis://host:6379/0 or amqp://user:password@host:5672// "
                              f"(schemes: {', '.join(BROKER_SCHEMES)})")


def _password_of(url: str | None) -> str | None:
    try:
        return urlsplit(url).password if url else None
    except ValueError:
        return None


class DispatchSchema(_Section):
    into = DispatchConfig
    backend = fields.String(load_default="embedded", validate=validate.OneOf(
        ["embedded", "celery"],
        error='must be "embedded" (delivery threads beside the receiver) or "celery" (workers fed by a '
              'Redis or RabbitMQ broker_url; pip install "sovereign-hub[celery]"); see docs/deployment.md'))
    workers = fields.Integer(load_default=4, validate=validate.Range(1, 256))
    retry_delays = fields.List(fields.Float(validate=validate.Range(min=0)), load_default=DEFAULT_RETRY_DELAYS)
    max_attempts = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    jitter = fields.Float(load_default=0.1, validate=validate.Range(0, 1))
    lease_seconds = fields.Float(load_default=300, validate=validate.Range(min=1))
    poll_interval = fields.Float(load_default=0.5, validate=validate.Range(min=0.01, max=60))
    shutdown_grace_seconds = fields.Float(load_default=25, validate=validate.Range(min=0))
    # backend = "celery" only
    broker_url = fields.String(load_default=None, allow_none=True, validate=_broker_url)
    queue = fields.String(load_default="sovereign-hub", validate=validate.Regexp(
        r"^[A-Za-z0-9_.:-]{1,200}$", error="letters, digits and _ . : - only"))
    sweep_interval = fields.Float(load_default=5, validate=validate.Range(min=0.1, max=3600))
    sweep_limit = fields.Integer(load_default=500, validate=validate.Range(1, 100_000))

    @validates_schema
    def _celery_needs_a_broker(self, data, **_):
        if data.get("backend") == "celery" and not data.get("broker_url"):
            raise ValidationError('required when backend = "celery": set broker_url = "redis://127.0.0.1:6379/0" '
                                  'or "amqp://guest:guest@127.0.0.1:5672//" (or { env = "HUB_BROKER_URL" })',
                                  "broker_url")


class AdminSchema(_Section):
    into = AdminConfig
    token = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=16))


class AnalysisSchema(_Section):
    into = AnalysisConfig
    schema = fields.Dict(load_default=None, allow_none=True)
    messages = fields.List(fields.Dict(), load_default=None, allow_none=True)
    min_messages_threshold = fields.Integer(load_default=2, validate=validate.Range(min=0))


class PhoneSchema(_Section):
    into = PhoneConfig
    default_region = fields.String(load_default=None, allow_none=True, validate=validate.Length(equal=2))


class LoggingSchema(_Section):
    into = LoggingConfig
    level = fields.String(load_default="INFO", validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"]))


class PrivacySchema(_Section):
    into = PrivacyConfig
    retention_days = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    store_messages = fields.Boolean(load_default=True)
    store_raw = fields.Boolean(load_default=True)


def _limit_storage(value: str) -> None:
    if value != "memory://" and value.split("://", 1)[0] not in ("redis", "rediss"):
        raise ValidationError('must be "memory://" (each process counts alone) or a Redis URL such as '
                              '"redis://127.0.0.1:6379/0" (every process and node shares each bucket)')


class RateLimitSchema(_Section):
    into = RateLimitConfig
    storage = fields.String(load_default="memory://", validate=_limit_storage)


#: the platform waits 5 s for an assistant-request's answer: the hub answers well before
MAX_BUDGET_MS = 4500
#: synchronous tools are answered within 10 s
MAX_TOOLS_SECONDS = 9.5


class AssistantRequestSchema(_Section):
    into = AssistantRequestConfig
    crm = fields.String(required=True, validate=validate.Length(min=1))
    first_message = TemplateField(required=True)
    unknown_first_message = TemplateField(load_default=None, allow_none=True)
    system_message = TemplateField(load_default=None, allow_none=True)
    llm_config = fields.Dict(load_default=None, allow_none=True)
    max_duration_seconds = fields.Integer(load_default=None, allow_none=True, strict=True,
                                          validate=validate.Range(min=10, max=86400))
    budget_ms = fields.Integer(load_default=2000, strict=True, validate=validate.Range(
        100, MAX_BUDGET_MS, error=f"must be between 100 and {MAX_BUDGET_MS} (the platform waits 5000 ms)"))
    cache_seconds = fields.Integer(load_default=300, strict=True, validate=validate.Range(0, 86400))

    @validates_schema
    def _system_message_needs_a_model(self, data, **_):
        llm = data.get("llm_config")
        if data.get("system_message") is not None and not (isinstance(llm, dict) and llm.get("provider")
                                                           and llm.get("model")):
            raise ValidationError('needs llm_config with provider and model, e.g. llm_config = '
                                  '{ provider = "openai", model = "gpt-4o" }', "system_message")
        if isinstance(llm, dict) and "messages" in llm:
            raise ValidationError("leave messages out: the hub writes them from system_message", "llm_config")


class ToolsSchema(_Section):
    into = ToolsConfig
    followup = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    timeout_seconds = fields.Float(load_default=8.0, validate=validate.Range(
        0.5, MAX_TOOLS_SECONDS, error=f"must be between 0.5 and {MAX_TOOLS_SECONDS} (the platform waits 10 s)"))
    crm = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))


class AnswersSchema(_Section):
    into = AnswersConfig
    assistant_request = fields.Nested(AssistantRequestSchema, load_default=None, allow_none=True)
    tools = fields.Nested(ToolsSchema, load_default=None, allow_none=True)
    lookup_workers = fields.Integer(load_default=16, strict=True, validate=validate.Range(1, 256))


#: the keys that hold secrets: redacted everywhere, and a warning when written literally
SECTION_SECRETS = {"admin": ("token",), "server": ("metrics_token",)}
SOURCE_SECRETS = ("secret", "api_key")
URLS_WITH_PASSWORDS = (("store", "url"), ("dispatch", "broker_url"), ("ratelimit", "storage"))

SECTIONS: dict[str, type[Schema]] = {
    "server": ServerSchema, "store": StoreSchema, "dispatch": DispatchSchema, "admin": AdminSchema,
    "analysis": AnalysisSchema, "phone": PhoneSchema, "logging": LoggingSchema, "privacy": PrivacySchema,
    "ratelimit": RateLimitSchema, "answers": AnswersSchema,
}


@dataclass
class DestinationConfig:
    name: str
    type: str
    enabled: bool
    when: Rule | None
    events: tuple[str, ...]
    options: dict[str, Any]
    cls: type[Destination]
    #: "customer": deliveries for one customer number run one at a time, in call order; "none"
    ordering: str = "customer"
    #: worker threads of one dispatcher it may hold at once; None: its fair share
    max_in_flight: int | None = None


@dataclass
class HubConfig:
    path: str | None
    server: ServerConfig
    store: StoreConfig
    dispatch: DispatchConfig
    admin: AdminConfig
    analysis: AnalysisConfig
    phone: PhoneConfig
    logging: LoggingConfig
    privacy: PrivacyConfig
    ratelimit: RateLimitConfig
    answers: AnswersConfig
    sources: dict[str, dict[str, Any]]
    destinations: dict[str, DestinationConfig] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def settings(self) -> HubSettings:
        public = self.server.public_url or f"http://{self.server.host}:{self.server.port}"
        return HubSettings(public_url=public, default_region=self.phone.default_region,
                           rate_limit_storage=self.ratelimit.storage)

    @property
    def max_attempts(self) -> int:
        return self.dispatch.max_attempts or len(self.dispatch.retry_delays) + 1

    def enabled_destinations(self) -> list[DestinationConfig]:
        return [d for d in self.destinations.values() if d.enabled]


def load_destination_options(cls: type[Destination], options: dict[str, Any], key: str) -> dict[str, Any]:
    """Validate one destination's own keys with its type's ``Config`` schema."""
    schema = cls.Config()
    try:
        loaded = schema.load(options)
    except ValidationError as exc:
        known = schema_keys(schema) + tuple(COMMON_DESTINATION_KEYS) + CORE_DESTINATION_KEYS
        raise ConfigProblems(flatten_errors(exc.messages, key, options, known, tuple(cls.secret_options))) from None
    for option in cls.secret_options:
        if isinstance(loaded.get(option), str):
            register_secret(loaded[option])
    return loaded


def _ca_bundle(value: Any, base_dir: Path, key: str, problems: list[str]) -> str | None:
    """The CA bundle as an absolute path, checked to hold at least one PEM certificate."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{key}: must be the path of a PEM file of CA certificates")
        return None
    path = (base_dir / value).expanduser().resolve()
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        problems.append(f"{key}: no such file {path}")
        return None
    except (OSError, ssl.SSLError) as exc:
        problems.append(f"{key}: {path} is not a readable PEM file of CA certificates ({exc})")
        return None
    return str(path)


def _rate_limits(value: Any, cls: type[Destination], key: str, problems: list[str]) -> dict[str, str]:
    """Per-destination overrides of the type's buckets, each ``"count/Ns"``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f'{key}: must be a table of bucket = "count/Ns", e.g. {{ default = "1500/60s" }}')
        return {}
    buckets = {"default", *cls.rate_limits}  # every type has a default bucket (unlimited unless set)
    known = ", ".join(sorted(buckets))
    rates = {}
    for bucket, rate in value.items():
        if bucket not in buckets:
            problems.append(f"{key}.{bucket}: {cls.type!r} has no such rate-limit bucket (its buckets: {known})")
            continue
        try:
            parse_rate(rate)
        except ValueError as exc:
            problems.append(f"{key}.{bucket}: {exc}")
            continue
        rates[bucket] = rate
    return rates


def _load_destination(name: str, table: Any, registry: Registry, known_events: set[str],
                      problems: list[str], base_dir: Path) -> DestinationConfig | None:
    key = f"destinations.{name}"
    if not isinstance(table, dict):
        problems.append(f"{key}: must be a table ([{key}])")
        return None
    type_name = table.get("type", name)
    cls = registry.destinations.get(type_name)
    if cls is None:
        known = ", ".join(sorted(registry.destinations)) or "none"
        problems.append(f"{key}.type: unknown destination type {type_name!r}"
                        f"{did_you_mean(str(type_name), registry.destinations)} (installed: {known}); "
                        f"install the plugin that provides it")
        return None
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"{key}.enabled: must be true or false")
    when_text = table.get("when", cls.default_when)
    when = None
    if when_text is not None:
        try:
            when = Rule(when_text) if isinstance(when_text, str) else None
            if when is None:
                problems.append(f"{key}.when: must be a JMESPath expression string")
        except ValueError as exc:
            problems.append(f"{key}.when: {exc}")
    events = table.get("events", ["end-of-call-report"])
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        problems.append(f"{key}.events: must be a list of event type names")
        events = []
    unknown = [e for e in events if e not in known_events]
    if unknown:
        problems.append(f"{key}.events: unknown event type(s) {', '.join(unknown)} "
                        f"(known: {', '.join(sorted(known_events))})")
    ordering = table.get("ordering", "customer")
    if ordering not in ORDERINGS:
        problems.append(f'{key}.ordering: must be "customer" (one delivery at a time per customer number, '
                        f'in call order) or "none", not {ordering!r}')
    max_in_flight = table.get("max_in_flight")
    if max_in_flight is not None and (isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int)
                                      or max_in_flight < 1):
        problems.append(f"{key}.max_in_flight: must be a whole number of at least 1 (the dispatcher threads "
                        f"this destination may hold at once), not {max_in_flight!r}")
        max_in_flight = None
    # options of every destination type, checked here once and handed to the instance in its config
    core = {"ca_bundle": _ca_bundle(table.get("ca_bundle"), base_dir, f"{key}.ca_bundle", problems),
            "rate_limits": _rate_limits(table.get("rate_limits"), cls, f"{key}.rate_limits", problems)}
    options = {k: v for k, v in table.items() if k not in COMMON_DESTINATION_KEYS and k not in core}
    try:
        options = load_destination_options(cls, options, key)
    except ConfigProblems as exc:
        problems.extend(exc.problems)
        return None
    options.update(core)
    return DestinationConfig(name, type_name, bool(enabled), when, tuple(events), options, cls, ordering,
                             max_in_flight)


def load_config(path: str | os.PathLike | None, registry: Registry, *, data: dict | None = None) -> HubConfig:
    """Read, resolve secrets, validate. Raises ``ConfigProblems`` listing every problem.

    Each step adds what it finds to ``problems`` and goes on, so one run names them all.
    """
    label = str(path) if path else None
    problems: list[str] = []
    data = _read_toml(path, label) if data is None else data
    base_dir = Path(path).parent if path else Path.cwd()
    literal = _literal_secrets(data, registry)
    data = resolve_secrets(data, base_dir, problems)
    unresolved = {problem.split(": ", 1)[0] for problem in problems}
    _check_sections_known(data, problems)
    sections = _load_sections(data, problems)
    sources_table = data.get("sources", {}) or {}
    sources = _load_sources(sources_table, registry, problems)
    warnings = _backend_warnings(sections) + _check_signing(sources_table, registry, problems) + literal
    _check_analysis_schema(sections["analysis"].schema, problems)
    destinations = _load_destinations(data.get("destinations", {}) or {}, registry, problems, base_dir)
    _check_answers(sections["answers"], destinations, problems)
    _register_literal_secrets(sections, sources)
    if problems:
        raise ConfigProblems(_once_per_secret(problems, unresolved), label)
    return HubConfig(path=label, sources=sources, destinations=destinations, warnings=warnings, **sections)


def _read_toml(path: str | os.PathLike | None, label: str | None) -> dict:
    if path is None:
        raise ConfigProblems(["no configuration file given (use -c/--config or SOVEREIGN_HUB_CONFIG)"])
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigProblems([f"configuration file not found: {path}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigProblems([f"not valid TOML: {exc}"], label) from None
    except OSError as exc:
        raise ConfigProblems([f"cannot read configuration file: {exc.strerror}"], label) from None


def _once_per_secret(problems: list[str], unresolved: set[str]) -> list[str]:
    """A secret that could not be read is one problem: not also the schema's word on the stand-in
    it left."""
    seen: set[str] = set()
    kept = []
    for problem in problems:
        key = problem.split(": ", 1)[0]
        if key in unresolved and key in seen:
            continue
        seen.add(key)
        kept.append(problem)
    return kept


def _literal_secrets(data: dict, registry: Registry) -> list[str]:
    """A warning for each secret written in the file itself rather than as { env } / { file }."""
    found = [(f"{section}.{key}", (data.get(section) or {}).get(key))
             for section, keys in SECTION_SECRETS.items() for key in keys]
    found += [(f"sources.{name}.{key}", (table or {}).get(key))
              for name, table in (data.get("sources") or {}).items() if isinstance(table, dict)
              for key in SOURCE_SECRETS]
    for name, table in (data.get("destinations") or {}).items():
        type_name = table.get("type", name) if isinstance(table, dict) else None
        cls = registry.destinations.get(type_name) if isinstance(type_name, str) else None
        found += [(f"destinations.{name}.{key}", table.get(key)) for key in (cls.secret_options if cls else ())]
    warnings = [f'{key}: a secret written in the configuration file; keep it out of the file: '
                f'{key.rsplit(".", 1)[1]} = {{ env = "{_env_name(key)}" }} (or {{ file = "path" }})'
                for key, value in found if isinstance(value, str) and value]
    for section, key in URLS_WITH_PASSWORDS:
        value = (data.get(section) or {}).get(key)
        if isinstance(value, str) and _password_of(value):
            warnings.append(f'{section}.{key}: a password written in the configuration file; write '
                            f'{key} = {{ env = "{_env_name(f"{section}.{key}")}" }} (or {{ file = "path" }}) instead')
    return warnings


def _env_name(key: str) -> str:
    """``destinations.crm.token`` -> ``CRM_TOKEN``: a name to suggest for the variable."""
    return "_".join(key.split(".")[-2:]).upper().replace("-", "_")


def _check_sections_known(data: dict, problems: list[str]) -> None:
    for section in sorted(set(data) - set(SECTIONS) - {"sources", "destinations"}):
        problems.append(f"{section}: unknown section{did_you_mean(section, [*SECTIONS, 'sources', 'destinations'])} "
                        f"(known: {', '.join(sorted(SECTIONS))}, sources, destinations)")


def _load_sections(data: dict, problems: list[str]) -> dict[str, Any]:
    """The core sections through their schemas; a broken one counts as its defaults (and a problem)."""
    loaded: dict[str, Any] = {}
    for section, schema in SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"{section}: must be a table")
            table = {}
        try:
            loaded[section] = schema().load(table)
        except ValidationError as exc:
            problems.extend(flatten_errors(exc.messages, section, table, schema_keys(schema()),
                                           SECTION_SECRETS.get(section, ())))
            loaded[section] = schema().load({})
    return loaded


def _load_sources(sources_table: dict, registry: Registry, problems: list[str]) -> dict[str, dict]:
    sources: dict[str, dict] = {}
    for name in sorted(set(sources_table) | {"hms"}):
        if name not in registry.sources:
            problems.append(f"sources.{name}: unknown source{did_you_mean(name, registry.sources)} "
                            f"(installed: {', '.join(sorted(registry.sources))})")
            continue
        schema = registry.sources[name].Config()
        table = sources_table.get(name, {})
        try:
            sources[name] = schema.load(table)
        except ValidationError as exc:
            problems.extend(flatten_errors(exc.messages, f"sources.{name}", table, schema_keys(schema),
                                           SOURCE_SECRETS))
    return sources


def _backend_warnings(sections: dict[str, Any]) -> list[str]:
    if sections["dispatch"].backend == "celery" and sections["store"].url.startswith("sqlite"):
        return ['dispatch.backend = "celery" with a SQLite store: every worker must run on this '
                'machine; for workers elsewhere set [store] url to PostgreSQL (docs/deployment.md)']
    return []


MIN_WEBHOOK_SECRET = 16


def _check_signing(sources_table: dict, registry: Registry, problems: list[str]) -> list[str]:
    """Every source needs a secret, unless ``allow_unsigned = true`` (a warning at every start)."""
    warnings = []
    for name in sorted(set(sources_table) | {"hms"}):
        table = sources_table.get(name) or {}
        key = f"sources.{name}.secret"
        secret = table.get("secret")
        if any(p.startswith(key) for p in problems):
            continue
        if isinstance(secret, str) and secret and len(secret.strip()) < MIN_WEBHOOK_SECRET:
            problems.append(f"{key}: the webhook secret is too weak ({len(secret.strip())} characters without "
                            f"surrounding spaces); use {MIN_WEBHOOK_SECRET} or more, e.g. the assistant's "
                            f"whsec_... webhook_secret")
            continue
        if secret:
            continue
        if table.get("allow_unsigned") is True:
            warnings.append(f"sources.{name}: allow_unsigned = true: webhooks are accepted WITHOUT a "
                            f"signature check; anyone who can reach the hub can inject calls")
        else:
            source = registry.sources.get(name)
            env, origin = (source.secret_env, source.secret_origin) if source else ("WEBHOOK_SECRET", "the signing secret")
            problems.append(f"{key}: no webhook secret is set; set secret = "
                            f'{{ env = "{env}" }} to {origin} '
                            f"(or allow_unsigned = true, for local testing only)")
    return warnings


def _check_analysis_schema(schema: dict | None, problems: list[str]) -> None:
    if schema is None:
        return
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        problems.append(f"analysis.schema: not a valid JSON Schema: {exc.message}")


def _load_destinations(dest_table: Any, registry: Registry, problems: list[str],
                       base_dir: Path) -> dict[str, DestinationConfig]:
    if not isinstance(dest_table, dict):
        problems.append("destinations: must be a table of [destinations.<name>] tables")
        return {}
    known_events = {e for src in registry.sources.values() for e in src.events}
    destinations = {}
    for name, table in dest_table.items():
        dest = _load_destination(name, table, registry, known_events, problems, base_dir)
        if dest is not None:
            destinations[name] = dest
    return destinations


def _check_answers(answers: AnswersConfig, destinations: dict[str, DestinationConfig], problems: list[str]) -> None:
    """The destinations ``[answers]`` names exist, are enabled and can do what is asked of them."""
    wanted = []
    if answers.assistant_request is not None:
        wanted.append(("answers.assistant_request.crm", answers.assistant_request.crm, "look callers up",
                       lambda cls: cls.can_look_up()))
    if answers.tools is not None and answers.tools.crm is not None:
        wanted.append(("answers.tools.crm", answers.tools.crm, "look callers up", lambda cls: cls.can_look_up()))
    if answers.tools is not None and answers.tools.followup is not None:
        wanted.append(("answers.tools.followup", answers.tools.followup, "take follow-up tasks",
                       lambda cls: cls.accepts_followups))
    for key, name, ability, able in wanted:
        dest = destinations.get(name)
        if dest is None or not dest.enabled:
            problems.append(f"{key}: no enabled destination named {name!r}"
                            f"{did_you_mean(name, destinations)} (configured: {', '.join(sorted(destinations)) or 'none'})")
        elif not able(dest.cls):
            fitting = sorted(n for n, d in destinations.items() if d.enabled and able(d.cls))
            problems.append(f"{key}: destination {name!r} (type {dest.type!r}) cannot {ability}; "
                            f"destinations that can: {', '.join(fitting) or 'none configured'}")


def _register_literal_secrets(sections: dict[str, Any], sources: dict[str, dict]) -> None:
    """A secret written literally (not as { env } / { file }) is redacted all the same."""
    for value in [sections["admin"].token, sections["server"].metrics_token,
                  *(table.get(key) for table in sources.values() for key in SOURCE_SECRETS),
                  _password_of(sections["dispatch"].broker_url), _password_of(sections["store"].url),
                  _password_of(sections["ratelimit"].storage)]:
        register_secret(value)
