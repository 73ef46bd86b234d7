"""A pytest plugin for plugin authors (registered as ``sovereign_hub`` once sovereign-hub is installed).

Fixtures: ``sample_payload``, ``sample_report``, ``make_report``, ``mocked_http``,
``hub_config``, ``hub_plugins``, ``app``, ``client``, ``runner``, ``signed_post``,
``register_plugin``, ``fresh_rate_limits``. Helpers: ``make_destination``, ``deliver``,
``load_sample``, ``normalize_payload``, ``answer_json`` (a test server's JSON answer). Subclass ``DestinationContract`` to run the checks every
destination must pass.

It costs nothing to a project that does not use it: it imports only what the hub itself
depends on (``responses``, a test extra, only inside the fixtures and checks that mock HTTP),
it has no autouse fixture, and ``-p no:sovereign_hub`` switches it off.
"""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .config import load_config, load_destination_options
from .destinations import DeliveryContext, Destination, HubSettings, Result, reset_shared_limiters
from .errors import Permanent, Retryable
from .normalize import Normalizer
from .plugins import collect, make_manager
from .ratelimit import parse_rate
from .report import CallReport
from .samples import analysis_schema, load_sample
from .sources.hms import PayloadSchema, sign

TEST_SECRET = "whsec_test_secret_12345"
ANY_URL = re.compile(r".*")


def normalize_payload(payload: dict, *, default_region: str | None = "NL", report_id: str = "rep_test",
                      analysis: dict | None = None) -> CallReport:
    """A payload through the HMS schema and normalizer, as the receiver would."""
    from .sources.hms import HmsSource

    parsed = PayloadSchema().load(copy.deepcopy(payload))
    return HmsSource().normalize(parsed, raw=payload, report_id=report_id,
                                 received_at=datetime(2026, 3, 2, 9, 15, tzinfo=timezone.utc),
                                 normalizer=Normalizer(default_region, analysis))


def probe_connection(destination: Destination) -> str:
    """``destination.test_connection`` with a fresh context: its one line, or the error it raises."""
    return destination.test_connection(destination.context(delivery_id=f"test-{destination.name}"))


def make_destination(type_or_cls: str | type[Destination], options: dict[str, Any] | None = None, *,
                     name: str | None = None, settings: HubSettings | None = None) -> Destination:
    """A destination built as the hub builds it: options validated by its ``Config`` schema."""
    if isinstance(type_or_cls, str):
        registry = collect(make_manager())
        cls = registry.destinations[type_or_cls]
    else:
        cls = type_or_cls
    name = name or cls.type
    loaded = load_destination_options(cls, dict(options or {}), f"destinations.{name}")
    return cls(name, loaded, settings or HubSettings(public_url="https://hub.example.com", default_region="NL"))


def deliver(destination: Destination, report: CallReport, *, state: dict | None = None,
            dry_run: bool = False, attempt: int = 1) -> tuple[Result, DeliveryContext]:
    """One delivery attempt, as the dispatcher makes it; returns the result and the context."""
    ctx = destination.context(delivery_id="dlv_test", attempt=attempt, state=state, dry_run=dry_run)
    return destination.deliver(report, ctx), ctx


def signed_headers(body: bytes, secret: str = TEST_SECRET, timestamp: int | None = None,
                   event: str = "end-of-call-report") -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"Content-Type": "application/json", "X-Webhook-Event": event,
            "X-Webhook-Timestamp": ts, "X-Webhook-Signature": sign(secret, ts, body)}


def pytest_configure(config):
    config.addinivalue_line("markers", "hub_plugins(*plugins): the plugins the app fixture loads besides the "
                                       "built-in ones (entry-point names such as \"slack\", or plugin objects)")


@pytest.fixture
def fresh_rate_limits():
    """Destinations share rate-limit buckets process-wide: ask for this (or make it autouse in
    your own conftest) to start a test with full ones."""
    reset_shared_limiters()
    yield


@pytest.fixture
def sample_payload() -> dict:
    return load_sample("end-of-call-report-full")


@pytest.fixture
def sample_report() -> CallReport:
    """The full sample (outbound, complaint, follow-up needed), normalized."""
    return normalize_payload(load_sample("end-of-call-report-full"), analysis=analysis_schema())


@pytest.fixture
def make_report():
    """``make_report("end-of-call-report", analysis={...})``: a sample with message fields replaced."""

    def build(name: str = "end-of-call-report-full", **message_fields: Any) -> CallReport:
        payload = load_sample(name)
        payload["message"].update(message_fields)
        return normalize_payload(payload)

    return build


@pytest.fixture
def mocked_http():
    """``responses`` in strict mode: a request nobody mocked fails the test (needs ``responses``)."""
    with _responses().RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def _responses():
    """The ``responses`` library, imported only by what mocks HTTP (it is a test extra, not a
    dependency of the hub: an environment without it must still be able to run pytest)."""
    import responses

    return responses


@pytest.fixture
def hub_config(tmp_path: Path) -> dict:
    """A configuration dict for ``create_app``: a SQLite file in tmp_path, the test secret.

    Add destinations to ``hub_config["destinations"]`` before asking for ``app``.
    """
    return {
        "store": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
        "sources": {"hms": {"secret": TEST_SECRET}},
        "dispatch": {"workers": 1, "poll_interval": 0.05, "retry_delays": [0.1, 0.2]},
        "analysis": {"schema": analysis_schema()},
        "phone": {"default_region": "NL"},
        "admin": {"token": "test-admin-token-0123456789"},
        "destinations": {},
    }


def migrated(url: str) -> str:
    """``url`` with its schema upgraded to the newest revision, as ``serve`` would leave it."""
    from .schema import upgrade

    upgrade(url)
    return url


@pytest.fixture
def hub_plugins(request) -> tuple:
    """The plugins ``app`` loads besides the built-in ones: those named by the test's
    ``@pytest.mark.hub_plugins("slack", ...)`` marker (entry-point names of the ``sovereign_hub``
    group, or plugin objects), none without it. Override the fixture to choose otherwise."""
    marker = request.node.get_closest_marker("hub_plugins")
    return tuple(marker.args) if marker else ()


def _plugin_manager(plugins):
    """The built-in plugins plus ``plugins`` (entry-point names or plugin objects), nothing else."""
    pm = make_manager(load_entry_points=False)
    for plugin in plugins:
        if isinstance(plugin, str):
            pm.load_entry_point(plugin)
        else:
            pm.register(plugin)
    pm.check_pending()
    return pm


def _build_app(hub_config: dict, plugins) -> Any:
    """An app over ``hub_config`` whose plugin manager has the built-in plugins and ``plugins`` only."""
    from .app import create_app
    from .core import Hub

    pm = _plugin_manager(plugins)
    registry = collect(pm)
    migrated(hub_config["store"]["url"])  # as `serve` leaves it: a Hub refuses a store that is not
    application = create_app(hub=Hub(load_config(None, registry, data=hub_config), pm, registry))
    application.config["TESTING"] = True
    return application


@pytest.fixture
def app(hub_config, hub_plugins, fresh_rate_limits):
    """The Flask app over ``hub_config``, with the built-in plugins and ``hub_plugins`` only (not
    every installed one); the dispatcher is not started (call ``app.hub.dispatcher.run_due()``)."""
    application = _build_app(hub_config, hub_plugins)
    yield application
    application.hub.close()


@pytest.fixture
def register_plugin(hub_config, hub_plugins, fresh_rate_limits):
    """``app = register_plugin(plugin, ...)``: an app over ``hub_config`` whose plugin manager
    also has ``plugin`` registered (a module or object with ``@hub.hookimpl`` functions), so a
    plugin can be tested before it is installed. Its destination types can be used in
    ``hub_config["destinations"]``; set those before calling. Dispatcher not started."""
    made = []

    def build(*plugins: Any):
        made.append(_build_app(hub_config, [*hub_plugins, *plugins]))
        return made[-1]

    yield build
    for application in made:
        application.hub.close()


@pytest.fixture
def client(app):
    return app.test_client()


def toml_text(data: dict) -> str:
    """``data`` as a TOML document (inline tables; None values left out), for the CLI's ``-c``."""

    def value(item: Any) -> str:
        if isinstance(item, dict):
            return "{ " + ", ".join(f"{json.dumps(str(k))} = {value(v)}" for k, v in item.items()
                                    if v is not None) + " }"
        if isinstance(item, (list, tuple)):
            return "[" + ", ".join(value(v) for v in item) + "]"
        if isinstance(item, bool):
            return "true" if item else "false"
        return json.dumps(item)  # numbers, and strings in TOML's basic-string escapes

    return "".join(f"{json.dumps(str(k))} = {value(v)}\n" for k, v in data.items() if v is not None)


@pytest.fixture
def runner(hub_config, hub_plugins, tmp_path):
    """``runner.invoke(["reports", "list"])``: the real ``sovereign-hub`` command group, with the
    commands of ``hub_plugins`` added, over ``hub_config`` (written to a TOML file, as the test
    left it, and passed as SOVEREIGN_HUB_CONFIG). Returns click's ``Result``. The commands load
    the hub as the CLI does (every installed plugin)."""
    from click.testing import CliRunner

    from .cli import HubGroup, cli

    group = HubGroup(name="sovereign-hub", commands=dict(cli.commands), callback=cli.callback, params=cli.params)
    _plugin_manager(hub_plugins).hook.register_commands(cli=group)
    path = tmp_path / "hub-config.toml"

    class HubCliRunner(CliRunner):
        def invoke(self, args=None, **kwargs):
            path.write_text(toml_text(hub_config))
            return super().invoke(group, args, **kwargs)

    return HubCliRunner(env={"SOVEREIGN_HUB_CONFIG": str(path)})


@pytest.fixture
def signed_post(client):
    """``signed_post(payload_or_bytes)``: POST /webhooks/hms with a valid signature; the answer is
    read whole and closed, as a real server does (what the hub does once an answer is sent runs)."""

    def post(payload: dict | bytes, *, secret: str = TEST_SECRET, timestamp: int | None = None,
             headers: dict | None = None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        event = payload.get("message", {}).get("type") if isinstance(payload, dict) else None
        all_headers = signed_headers(body, secret, timestamp, event or "end-of-call-report")
        all_headers.update(headers or {})
        return client.post("/webhooks/hms", data=body, headers=all_headers, buffered=True)

    return post


def answer_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    """Answer a request to a test server (a ``BaseHTTPRequestHandler``) with ``body`` as JSON."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound for a moment, then let go): one to start a server
    on, or, left alone, one where a connection is refused (``closed_port``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


closed_port = free_port


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def start_hub_process(command: str, config: Path, cwd: Path, log_name: str) -> subprocess.Popen:
    """``sovereign-hub <command> -c config`` in its own process group, output appended to cwd/log_name."""
    with open(cwd / log_name, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "hub", command, "-c", str(config)], cwd=cwd,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a hub process's log, for an assertion's message."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def wait_for_health(proc: subprocess.Popen, base_url: str, log: Path, timeout: float = 60.0) -> None:
    """Wait until a hub started by ``start_hub_process`` answers ``GET /healthz``; fail with the
    tail of its log if it exits first or is not up in ``timeout`` seconds (generous: a loaded
    machine has taken 30-60 s to start ``serve``)."""
    import requests  # noqa: PLC0415 - only the tests that start processes need it

    def healthy() -> bool:
        assert proc.poll() is None, f"the hub exited ({proc.returncode}):\n{log_tail(log)}"
        try:
            return requests.get(f"{base_url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    assert wait_until(healthy, timeout=timeout, interval=0.1), f"the hub did not come up:\n{log_tail(log)}"


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started by ``start_hub_process`` with all its children, as a crash would."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records every POST a webhook destination makes.

    ``url`` is its address. ``started`` lists the ``webhook-id`` of every request as it
    arrives (``arrived_at`` when), ``answers`` every (webhook-id, status) answered, ``records`` the (webhook-id, JSON
    body) of every request answered 200. ``delay()`` is each request's pause before it answers;
    ``fail_first`` answers 503 to the first attempt of each webhook-id; with ``hold`` (an Event),
    requests wait until it is set (30 s at most) and are then answered ``held_status``.
    Use it as a context manager.
    """

    def __init__(self, *, delay=lambda: 0.0, hold: threading.Event | None = None, held_status: int = 200,
                 fail_first: bool = False):
        self.delay, self.hold, self.held_status, self.fail_first = delay, hold, held_status, fail_first
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.arrived_at: list[float] = []  # time.monotonic() of each request's arrival
        self.answers: list[tuple[str, int]] = []
        self.records: list[tuple[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                webhook_id = self.headers.get("webhook-id", "")
                with receiver.lock:
                    first = webhook_id not in receiver.started
                    receiver.started.append(webhook_id)
                    receiver.arrived_at.append(time.monotonic())
                status = 503 if receiver.fail_first and first else 200
                if receiver.hold is not None and not receiver.hold.is_set():
                    receiver.hold.wait(30)
                    status = receiver.held_status
                time.sleep(receiver.delay())
                with receiver.lock:
                    receiver.answers.append((webhook_id, status))
                    if status == 200:
                        receiver.records.append((webhook_id, json.loads(body or b"null")))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a sender killed mid-request leaves a broken pipe: expected in crash tests

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def snapshot(self) -> tuple[list[str], list[tuple[str, Any]]]:
        with self.lock:
            return list(self.started), list(self.records)

    def succeeded(self) -> Counter:
        """How many times each webhook-id was answered 200."""
        with self.lock:
            return Counter(webhook_id for webhook_id, status in self.answers if status == 200)


class DestinationContract:
    """Checks every destination type must pass. Subclass it in a test module::

        class TestMyDestination(DestinationContract):
            destination_type = "mytype"
            options = {"token": "t0ken-for-tests"}

            def mock_success(self, rsps):
                rsps.add(responses.POST, "https://api.example.com/things", json={"id": "1"})

    ``is_create(request)`` says which recorded requests create something (default: POST);
    after a successful delivery, delivering again with the same state must create nothing.
    """

    destination_type: str | type[Destination] = ""
    options: dict[str, Any] = {}
    sample: str = "end-of-call-report-full"

    def mock_success(self, rsps) -> None:
        raise NotImplementedError("register the responses of a successful delivery")

    def is_create(self, request) -> bool:
        return request.method == "POST"

    def build(self) -> Destination:
        return make_destination(self.destination_type, self.options)

    def report(self) -> CallReport:
        return normalize_payload(load_sample(self.sample), analysis=analysis_schema())

    def test_unknown_option_is_rejected(self):
        from .config import ConfigProblems

        with pytest.raises(ConfigProblems) as info:
            make_destination(self.destination_type, {**self.options, "no_such_option": 1})
        assert "no_such_option" in str(info.value)

    def test_delivers_and_redelivery_creates_nothing(self):
        destination = self.build()
        with _responses().RequestsMock(assert_all_requests_are_fired=False) as rsps:
            self.mock_success(rsps)
            result, ctx = deliver(destination, self.report())
            assert isinstance(result, Result)
            assert ctx.sent, "a successful delivery sends at least one request"
            again, ctx2 = deliver(destination, self.report(), state=ctx.state, attempt=2)
            created = [r for r in ctx2.sent if self.is_create(r)]
            assert created == [], f"redelivery with saved state created again: {created}"

    def test_dry_run_sends_nothing(self):
        destination = self.build()
        with _responses().RequestsMock(assert_all_requests_are_fired=False) as rsps:
            _, ctx = deliver(destination, self.report(), dry_run=True)
            assert rsps.calls == [] or len(rsps.calls) == 0
        assert ctx.sent, "a dry run lists the requests it would send"

    def test_server_error_is_retryable(self):
        destination = self.build()
        with _responses().RequestsMock(assert_all_requests_are_fired=False) as rsps:
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                rsps.add(method, ANY_URL, status=503, body="upstream unavailable")
            with pytest.raises(Retryable):
                deliver(destination, self.report())

    def test_unauthorized_is_permanent_and_names_destination(self):
        destination = self.build()
        with _responses().RequestsMock(assert_all_requests_are_fired=False) as rsps:
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                rsps.add(method, ANY_URL, status=401, json={"message": "authentication failed"})
            with pytest.raises(Permanent) as info:
                deliver(destination, self.report())
        assert destination.name in str(info.value)


class FakeClock:
    """A clock for rate limiters in tests: ``sleep`` moves it on instead of waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def drive(self, destination: Destination) -> "FakeClock":
        """Put every rate limiter of ``destination`` on this clock."""
        for limiter in destination.limiters.values():
            limiter.clock, limiter.sleep = self, self.sleep
        return self


def assert_no_window_exceeded(times: list[float], rate: str, *, jitter: float = 0.0) -> None:
    """A moving window: never more than ``count`` of ``times`` in any ``seconds``-long window.

    ``jitter``: seconds of slack for times taken on arrival at a receiver, which differ by a few
    milliseconds from when the hub counted each request (when it sent it)."""
    count, seconds = parse_rate(rate)
    times = sorted(times)
    for first, later in zip(times, times[count:]):
        assert later - first >= seconds - jitter - 1e-9, \
            f"more than {rate}: a request at {first} and {count} more by {later}"
