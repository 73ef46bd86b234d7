"""``[server] trusted_proxies``: the client's address, scheme and host from the proxies in front,
over Flask's test client; then docs/deployment.md's nginx and Caddy blocks, run as written (with
a certificate made here and free ports) in front of the hub, and its systemd unit verified."""
from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from flask import Blueprint, request, url_for
from werkzeug.serving import make_server

from hub import hookimpl
from hub.testing import free_port, wait_until

DEPLOYMENT = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"
TOKEN = "test-admin-token-0123456789"


class WhoAmI:
    """A plugin route that answers what the hub believes about the request."""

    @hookimpl
    def register_routes(self, register):
        bp = Blueprint("whoami", __name__)

        @bp.get("/whoami")
        def whoami():
            return {"client": request.remote_addr, "scheme": request.scheme, "host": request.host,
                    "link": url_for("whoami.whoami", _external=True)}

        register(bp)


def proxied_app(register_plugin, hub_config, proxies: int):
    hub_config["server"] = {"trusted_proxies": proxies}
    return register_plugin(WhoAmI())


FORWARDED = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9", "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "hub.example.com"}


def login_cookie(client, **kwargs) -> str:
    form = client.get("/login", **kwargs).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    answer = client.post("/login", data={"csrf_token": csrf, "token": TOKEN}, **kwargs)
    assert answer.status_code == 303
    return answer.headers["Set-Cookie"]


def test_one_trusted_proxy_gives_the_last_forwarded_address_the_scheme_and_the_host(register_plugin, hub_config):
    client = proxied_app(register_plugin, hub_config, 1).test_client()
    seen = client.get("/whoami", headers=FORWARDED, environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_json()
    assert seen == {"client": "203.0.113.9", "scheme": "https", "host": "hub.example.com",
                    "link": "https://hub.example.com/whoami"}
    assert "; Secure" in login_cookie(client, headers=FORWARDED)


def test_two_trusted_proxies_take_the_second_to_last_address(register_plugin, hub_config):
    client = proxied_app(register_plugin, hub_config, 2).test_client()
    seen = client.get("/whoami", headers=FORWARDED).get_json()
    assert seen["client"] == "198.51.100.7"


def test_without_trusted_proxies_forwarded_headers_are_ignored(register_plugin, hub_config):
    client = proxied_app(register_plugin, hub_config, 0).test_client()
    seen = client.get("/whoami", headers=FORWARDED, environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_json()
    assert seen == {"client": "127.0.0.1", "scheme": "http", "host": "localhost", "link": "http://localhost/whoami"}
    assert "Secure" not in login_cookie(client, headers=FORWARDED)


def test_trusted_proxies_out_of_range_is_a_config_error(tmp_path):
    from hub.cli import cli
    from click.testing import CliRunner

    path = tmp_path / "hub.toml"
    path.write_text('[server]\ntrusted_proxies = -1\n[sources.hms]\nallow_unsigned = true\n')
    result = CliRunner().invoke(cli, ["check-config", "-c", str(path)])
    assert result.exit_code == 1
    assert "server.trusted_proxies: Must be greater than or equal to 0 and less than or equal to 5" in result.output


# --- the documented proxies, for real ------------------------------------------------------------

def doc_block(language: str) -> str:
    text = DEPLOYMENT.read_text()
    return re.search(rf"```{language}\n(.*?)```", text, re.S).group(1)


@pytest.fixture
def certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=hub.example.com",
                    "-addext", "subjectAltName=DNS:hub.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def hub_behind(register_plugin, hub_config):
    """The hub (trusted_proxies as the docs set it) served by werkzeug on a free port."""
    server_table = re.search(r"```toml\n\[server\]\n(.*?)```", DEPLOYMENT.read_text(), re.S).group(1)
    assert "trusted_proxies = 1" in server_table
    app = proxied_app(register_plugin, hub_config, 1)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join(5)


def documented(block: str, *, cert: Path, key: Path, listen: int, upstream: int) -> str:
    return (block.replace("/etc/ssl/hub.example.com/fullchain.pem", str(cert))
            .replace("/etc/ssl/hub.example.com/privkey.pem", str(key))
            .replace("127.0.0.1:8080", f"127.0.0.1:{upstream}")
            .replace("listen 443 ssl", f"listen 127.0.0.1:{listen} ssl")
            .replace("hub.example.com {", f"https://hub.example.com:{listen} {{"))


def ask_through(port: int, cert: Path, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    """An https request to the proxy on 127.0.0.1:port for hub.example.com, from 127.0.0.3."""
    context = ssl.create_default_context(cafile=str(cert))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.3", 0))
    connection.sock = context.wrap_socket(sock, server_hostname="hub.example.com")
    connection.request("GET", path, headers={"Host": f"hub.example.com:{port}", **(headers or {})})
    return connection.getresponse()


def check_the_hub_sees_the_client(port: int, cert: Path) -> None:
    forged = ask_through(port, cert, "/whoami", {"X-Forwarded-For": "6.6.6.6"})
    assert forged.status == 200
    seen = json.loads(forged.read())
    assert seen["client"] == "127.0.0.3"  # the proxy's word, not the client's forged one
    assert seen["scheme"] == "https"
    assert seen["link"].startswith("https://hub.example.com")
    form = ask_through(port, cert, "/login")
    cookie = form.getheader("Set-Cookie")
    assert form.status == 200 and "; Secure" in cookie, cookie


def run_proxy(command: list[str], port: int, log: Path, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def listening():
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    if not wait_until(listening, timeout=15, interval=0.1):
        stop(proc)
        pytest.fail(f"{command[0]} did not listen on {port}:\n{log.read_text()}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx)")
def test_the_documented_nginx_block_in_front_of_the_hub(tmp_path, certificate, hub_behind):
    cert, key = certificate
    port = free_port()
    server = documented(doc_block("nginx"), cert=cert, key=key, listen=port, upstream=hub_behind)
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\n"
        f"events {{}}\nhttp {{\naccess_log off;\nclient_body_temp_path {tmp_path};\nproxy_temp_path {tmp_path};\n"
        f"{server}}}\n")
    proc = run_proxy(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], port, tmp_path / "nginx.log")
    try:
        check_the_hub_sees_the_client(port, cert)
    finally:
        stop(proc)


@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed (apt-get install caddy)")
def test_the_documented_caddy_block_in_front_of_the_hub(tmp_path, certificate, hub_behind):
    cert, key = certificate
    port = free_port()
    site = documented(doc_block("caddyfile"), cert=cert, key=key, listen=port, upstream=hub_behind)
    (tmp_path / "Caddyfile").write_text("{\n\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system "
                                        f"{tmp_path / 'caddy'}\n}}\n{site}")
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path),
           "PATH": "/usr/bin:/bin"}
    proc = run_proxy(["caddy", "run", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"], port,
                     tmp_path / "caddy.log", env)
    try:
        check_the_hub_sees_the_client(port, cert)
    finally:
        stop(proc)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_documented_systemd_unit_parses_and_keeps_files_private(tmp_path):
    unit = doc_block("ini")
    assert "UMask=0077" in unit.splitlines()
    path = tmp_path / "sovereign-hub.service"
    path.write_text(unit.replace("/srv/sovereign-hub/.venv/bin/sovereign-hub", shutil.which("true"))
                    .replace("User=sovereign-hub\nGroup=sovereign-hub\n", "")
                    .replace("/etc/sovereign-hub/env", str(tmp_path / "env")))
    (tmp_path / "env").write_text("HMS_WEBHOOK_SECRET=x\n")
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True,
                          timeout=60)
    problems = [line for line in done.stderr.splitlines() if str(path) in line]
    assert problems == [], done.stderr
