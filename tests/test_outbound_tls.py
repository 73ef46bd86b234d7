"""Outbound HTTPS to a vendor (or through a proxy) whose certificate comes from a company CA.

A local TLS endpoint on 127.0.0.1 presents a certificate of a CA made for the test (trustme);
a hand-written CONNECT proxy on 127.0.0.1 relays to it. Every request goes through ``ctx.send``,
the one path every destination uses.
"""
from __future__ import annotations

import http.server
import select
import socket
import socketserver
import ssl
import threading
import textwrap

import pytest
import trustme

from hub import Destination, Retryable
from hub.config import ConfigProblems, load_config
from hub.plugins import collect, make_manager
from hub.testing import answer_json


class Probe(Destination):
    type = "probe"

    def deliver(self, report, ctx):  # pragma: no cover - the tests call ctx.send directly
        raise NotImplementedError


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        answer_json(self, 200, {"ok": True})

    def log_message(self, *args):
        pass


class ConnectProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy that only tunnels (CONNECT), recording each target."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.targets: list[str] = []
        super().__init__(("127.0.0.1", 0), self.Tunnel)

    class Tunnel(socketserver.BaseRequestHandler):
        def handle(self):
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = self.request.recv(1024)
                if not chunk:
                    return
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.server.targets.append(target)
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as upstream:
                self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                ends = [self.request, upstream]
                while True:
                    ready, _, _ = select.select(ends, [], [], 5)
                    if not ready:
                        return
                    for end in ready:
                        data = end.recv(65536)
                        if not data:
                            return
                        (upstream if end is self.request else self.request).sendall(data)


@pytest.fixture(scope="module")
def company_ca():
    return trustme.CA(organization_name="Example Corp internal CA")


@pytest.fixture(scope="module")
def vendor(company_ca):
    """An HTTPS endpoint on 127.0.0.1 with a certificate of the company CA; its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    company_ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def proxy():
    server = ConnectProxy()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def bundle(company_ca, tmp_path):
    path = tmp_path / "company-ca.pem"
    company_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def other_bundle(tmp_path):
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                 "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def get(url, **config):
    ctx = Probe("probe", config).context()
    return ctx.send("GET", f"{url}/ping").json()


def test_a_company_ca_is_not_trusted_by_default(vendor):
    with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED"):
        get(vendor)


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_environments_ca_bundle_is_honoured(variable, vendor, bundle, monkeypatch):
    monkeypatch.setenv(variable, bundle)
    assert get(vendor) == {"ok": True}


def test_a_destinations_ca_bundle_wins_over_the_environment(vendor, bundle, other_bundle, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", other_bundle)
    with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED"):
        get(vendor)
    assert get(vendor, ca_bundle=bundle) == {"ok": True}


def test_https_proxy_tunnels_and_the_ca_bundle_still_applies(vendor, bundle, proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    assert get(vendor, ca_bundle=bundle) == {"ok": True}
    assert proxy.targets == [vendor.removeprefix("https://")]
    with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED"):
        get(vendor)  # through the proxy too, the vendor's certificate is checked
    assert len(proxy.targets) == 2


def test_no_proxy_bypasses_the_proxy(vendor, bundle, proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert get(vendor, ca_bundle=bundle) == {"ok": True}
    assert proxy.targets == []


# --- the options in the configuration ---------------------------------------------------------

@pytest.fixture(scope="module")
def registry():
    return collect(make_manager())


def configure(tmp_path, registry, table: str):
    path = tmp_path / "hub.toml"
    path.write_text('[sources.hms]\nsecret = "whsec_literal_secret"\n' + textwrap.dedent(table))
    return load_config(path, registry)


def test_ca_bundle_is_read_relative_to_the_config_for_every_type(tmp_path, registry, bundle):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text(open(bundle).read())
    config = configure(tmp_path, registry, """
        [destinations.calls]
        type = "jsonl"
        path = "calls.jsonl"
        ca_bundle = "certs/ca.pem"
    """)
    options = config.destinations["calls"].options
    assert options["ca_bundle"] == str((tmp_path / "certs" / "ca.pem").resolve())
    assert config.destinations["calls"].cls("calls", options).ca_bundle == options["ca_bundle"]


def test_bad_core_options_name_their_keys(tmp_path, registry):
    (tmp_path / "not-pem.txt").write_text("hello")
    with pytest.raises(ConfigProblems) as info:
        configure(tmp_path, registry, """
            [destinations.a]
            type = "jsonl"
            path = "a.jsonl"
            ca_bundle = "missing.pem"
            [destinations.b]
            type = "jsonl"
            path = "b.jsonl"
            ca_bundle = "not-pem.txt"
            [destinations.crm]
            type = "hubspot"
            token = "pat-eu1-literal"
            rate_limits = { search = "5 per second", deals = "1/1s" }
        """)
    problems = info.value.problems
    assert f"destinations.a.ca_bundle: no such file {(tmp_path / 'missing.pem').resolve()}" in problems
    assert any(p.startswith("destinations.b.ca_bundle:") and "not a readable PEM file" in p for p in problems)
    assert ("destinations.crm.rate_limits.search: '5 per second' is not a rate: write \"count/Ns\", "
            "e.g. \"150/60s\" (150 requests a minute)") in problems
    assert ("destinations.crm.rate_limits.deals: 'hubspot' has no such rate-limit bucket "
            "(its buckets: default, search)") in problems


def test_rate_limits_override_a_bucket_per_destination(tmp_path, registry):
    config = configure(tmp_path, registry, """
        [destinations.crm]
        type = "hubspot"
        token = "pat-eu1-literal"
        rate_limits = { default = "190/10s" }
    """)
    dest = config.destinations["crm"]
    crm = dest.cls("crm", dest.options)
    assert (crm.limiters["default"].rate, crm.limiters["search"].rate) == ("190/10s", "4/1s")
