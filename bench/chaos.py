"""Chaos run: a real hub SIGKILLed again and again under load while its downstream fails at random.

One run starts ``python -m hub serve`` (its own process group: gunicorn workers, the dispatcher
or the Celery worker) on a loopback port, a downstream HTTP receiver in this process that
answers each delivery at random with 200, 500, 429 + ``Retry-After``, a timeout, a connection
reset or a slow 200, and a load thread posting signed end-of-call reports with distinct call
ids. Every ``--kill-every`` seconds the whole hub process group is SIGKILLed and started again,
``--kills`` times. Then the load stops and the run waits (the downstream still failing at
random) until every acknowledged (202) report has reached the receiver.

The receiver keys what it accepted by ``webhook-id`` (the delivery id, stable across retries)
and by call id. Printed: reports sent and acknowledged, kills, faults injected by kind, lost
(acknowledged, never accepted downstream), duplicated (one report accepted under two or more
webhook ids: a duplicate no receiver could fold), redelivered (the same webhook id accepted
again after a kill lost the hub's record of the first: what the stable id lets a receiver
fold), and the time to drain after the last kill.

    .venv/bin/python bench/chaos.py --backend embedded --kills 8
    .venv/bin/python bench/chaos.py --backend celery --kills 8     # PostgreSQL + Redis on 127.0.0.1

Loopback only; bounded by --kills, --kill-every and --drain-timeout. A benchmark: it prints
figures and exits 0 when nothing was lost or duplicated, 1 otherwise.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hub.samples import load_sample  # noqa: E402
from hub.sources.hms import sign  # noqa: E402

SECRET = "whsec_chaos_secret_0123456789"
DELIVERY_TIMEOUT = 2.0  # the webhook destination's timeout_seconds; a "timeout" fault outlasts it
FAULTS = {"500": 0.12, "429": 0.10, "timeout": 0.06, "reset": 0.08, "slow": 0.09}  # the rest: 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call_id_of(body: object) -> str | None:
    """The report's call id, wherever the webhook body nests it."""
    if isinstance(body, dict):
        call = body.get("call")
        if isinstance(call, dict) and isinstance(call.get("id"), str):
            return call["id"]
        for value in body.values():
            found = call_id_of(value)
            if found:
                return found
    return None


class FaultyDownstream:
    """The destination's receiver: fails at random, records what it accepted."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.lock = threading.Lock()
        self.faults: Counter = Counter()
        self.accepted: dict[str, list[str]] = defaultdict(list)  # call id -> webhook ids, one per 200
        downstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = downstream.pick()
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    return
                if fault == "timeout":
                    time.sleep(DELIVERY_TIMEOUT + 1)
                elif fault == "slow":
                    time.sleep(downstream.rng.uniform(0.3, 1.2))
                status = {"500": 500, "429": 429}.get(fault, 200)
                if status == 200:
                    downstream.accept(self.headers.get("webhook-id", ""), body)
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a hub killed mid-request leaves a broken pipe: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def pick(self) -> str:
        with self.lock:
            roll, edge = self.rng.random(), 0.0
            for fault, share in FAULTS.items():
                edge += share
                if roll < edge:
                    self.faults[fault] += 1
                    return fault
            return "ok"

    def accept(self, webhook_id: str, body: bytes) -> None:
        """A timed-out answer is accepted too: the receiver did the work, the hub never heard."""
        call_id = call_id_of(json.loads(body or b"null"))
        with self.lock:
            self.accepted[call_id or "?"].append(webhook_id)


def write_config(path: Path, *, port: int, store_url: str, hook_url: str, backend: str) -> Path:
    dispatch = ["[dispatch]", f'backend = "{backend}"', "workers = 4", "poll_interval = 0.05",
                "retry_delays = [0.2, 0.5, 1, 1, 2, 2, 3]", "max_attempts = 200", "jitter = 0.1",
                "lease_seconds = 6", "sweep_interval = 1"]
    if backend == "celery":
        dispatch.append('broker_url = "redis://127.0.0.1:6379/7"')
    lines = ["[server]", 'host = "127.0.0.1"', f"port = {port}", "workers = 2",
             "[store]", f"url = {json.dumps(store_url)}", *dispatch,
             "[sources.hms]", f"secret = {json.dumps(SECRET)}", "[logging]", 'level = "WARNING"',
             "[destinations.hook]", 'type = "webhook"', f"url = {json.dumps(hook_url)}",
             f"timeout_seconds = {DELIVERY_TIMEOUT}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Hub:
    """``python -m hub serve`` in its own process group; ``kill`` SIGKILLs the whole group."""

    def __init__(self, config: Path, workdir: Path, port: int):
        self.config, self.workdir, self.port, self.proc = config, workdir, port, None

    def start(self, timeout: float = 60) -> None:
        with open(self.workdir / "hub.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "-c", str(self.config)],
                                         cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = (self.workdir / "hub.log").read_text(errors="replace").splitlines()[-20:]
        raise SystemExit("the hub did not start:\n" + "\n".join(tail))

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


class Load(threading.Thread):
    """Signed reports with distinct call ids, one after another; remembers what was acknowledged."""

    def __init__(self, port: int, pause: float):
        super().__init__(daemon=True)
        self.url, self.pause = f"http://127.0.0.1:{port}/webhooks/hms", pause
        self.stop = threading.Event()
        self.sent = 0
        self.acknowledged: set[str] = set()
        self.refused: Counter = Counter()
        self.template = load_sample("end-of-call-report-full")

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            payload = copy.deepcopy(self.template)
            call_id = f"chaos-{uuid.uuid4()}"
            payload["message"]["call"]["id"] = call_id
            body = json.dumps(payload).encode()
            ts = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Webhook-Timestamp": ts,
                       "X-Webhook-Signature": sign(SECRET, ts, body)}
            self.sent += 1
            try:
                answer = session.post(self.url, data=body, headers=headers, timeout=5)
                if answer.status_code == 202:
                    self.acknowledged.add(call_id)
                else:
                    self.refused[answer.status_code] += 1
            except requests.RequestException:
                self.refused["connection"] += 1  # the hub is down: not acknowledged, the sender retries
                session = requests.Session()
            time.sleep(self.pause)


def _pg_admin(base: str, statement: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def new_pg_database(base: str) -> str:
    name = f"hub_chaos_{uuid.uuid4().hex[:8]}"
    _pg_admin(base, f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def run(args) -> int:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="hub-chaos-"))
    store_url = (f"sqlite:///{workdir / 'hub.db'}" if args.backend == "embedded"
                 else new_pg_database(args.pg))
    downstream = FaultyDownstream(rng)
    port = free_port()
    config = write_config(workdir / "hub.toml", port=port, store_url=store_url, hook_url=downstream.url,
                          backend=args.backend)
    env_note = f"{args.backend} ({'SQLite' if args.backend == 'embedded' else 'PostgreSQL + Celery/Redis'})"
    hub = Hub(config, workdir, port)
    hub.start()
    load = Load(port, args.pause)
    load.start()
    started = time.monotonic()
    for _ in range(args.kills):
        time.sleep(rng.uniform(0.5, 1.5) * args.kill_every)
        hub.kill()
        hub.start()
    time.sleep(args.kill_every)
    load.stop.set()
    load.join()
    last_kill = time.monotonic()

    def delivered() -> set[str]:
        with downstream.lock:
            return {call for call, ids in downstream.accepted.items() if ids}

    while time.monotonic() - last_kill < args.drain_timeout and not load.acknowledged <= delivered():
        time.sleep(0.2)
    drain = time.monotonic() - last_kill
    hub.kill()
    if args.backend == "celery":
        _pg_admin(args.pg, f'DROP DATABASE "{store_url.rsplit("/", 1)[1]}" WITH (FORCE)')

    with downstream.lock:
        accepted = {call: list(ids) for call, ids in downstream.accepted.items()}
    lost = sorted(load.acknowledged - set(accepted))
    duplicated = sorted(call for call, ids in accepted.items() if len(set(ids)) > 1)
    redelivered = sum(len(ids) - len(set(ids)) for ids in accepted.values())
    print(f"chaos run: backend {env_note}, seed {args.seed}, {args.kills} kills every ~{args.kill_every}s, "
          f"workdir {workdir}")
    print(f"  reports sent          {load.sent}  (load ran {last_kill - started:.0f}s)")
    print(f"  acknowledged (202)    {len(load.acknowledged)}")
    print(f"  not acknowledged      {sum(load.refused.values())}  {dict(load.refused)}")
    print(f"  kills (SIGKILL group) {args.kills}")
    print(f"  faults injected       {sum(downstream.faults.values())}  {dict(sorted(downstream.faults.items()))}")
    print(f"  lost                  {len(lost)}")
    print(f"  duplicated            {len(duplicated)}  (one report accepted under two webhook ids)")
    print(f"  redelivered, same id  {redelivered}  (folded by a receiver keyed on webhook-id)")
    print(f"  time to drain         {drain:.1f}s after the last kill"
          + ("" if not lost else f"  (gave up after {args.drain_timeout}s)"))
    return 0 if not lost and not duplicated else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["embedded", "celery"], default="embedded")
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--kill-every", type=float, default=3.0, help="mean seconds between kills")
    parser.add_argument("--pause", type=float, default=0.01, help="seconds between two reports of the load")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="PostgreSQL server for --backend celery (a new database is made on it)")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
