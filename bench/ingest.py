"""Ingest benchmark: `sovereign-hub serve` against a bare Flask app, same load; each server model in one run.

One run starts ``bench/bare_app.py`` under gunicorn with 2 sync workers, then a real hub
(``python -m hub serve``: gunicorn + the dispatcher process, SQLite in a temp dir, a jsonl
destination so deliveries happen) once per server model of ``--servers`` (``CLASS:WORKERS``,
default ``sync:2 gevent:1 gevent:2``: the former server model first, as the baseline, then one
gevent worker and the default, two; every model's workers are forked from a master that
preloaded the app), and drives each with concurrent signed end-of-call reports (distinct call ids, a fresh
signature per request). It prints requests/s, p50 and p99 latency, errors, the hub/bare ratio and
each model's throughput against the baseline's; for each hub pass the total PSS of serve's
processes idle and at the peak under load; and a slow-client scenario: 8 connections sending
their headers one byte a second, the time until a signed report POSTed meanwhile is answered,
and when the server cut the slow connections. Loopback only; bounded by --duration and --requests.

Load generator: ``wrk`` (``apt-get install -y wrk``) with a Lua script that replays a pool of
requests signed in Python beforehand (wrk cannot compute HMACs fast enough itself); without wrk,
a Python generator (multiprocessing, one http.client connection per concurrent client).

    .venv/bin/python bench/ingest.py --duration 10 --concurrency 8 32

This is a benchmark, not a test: it prints figures and judges them against the targets of the
issues (hub >= half the bare throughput, hub p99 < 50 ms at c=8, a report behind slow clients
answered within 1 s, idle PSS < 200 MB); it exits 0 either way.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from footprint import PeakMemory, memory_mb, tree  # noqa: E402
from hub.samples import analysis_schema, load_sample  # noqa: E402
from hub.sources.hms import sign  # noqa: E402

SECRET = "whsec_bench_secret_0123456789"
PATH = "/webhooks/hms"
EVENT = "end-of-call-report"
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
TARGET_SLOW_ACK_S = 1.0
GOAL_PSS_MB = 200.0
SLOW_HEADER_TIMEOUT = 2  # [server] header_timeout_seconds of the hub passes

WRK_LUA = r"""
-- Replays pre-signed requests: thread i reads <prefix>.<i>, one request per record
-- ("<byte length>\n<raw HTTP request>"), each sent once; a thread that runs out stops.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1] .. "." .. tid, "rb"))
  reqs = {}
  while true do
    local line = f:read("*l")
    if not line then break end
    reqs[#reqs + 1] = f:read(tonumber(line))
  end
  f:close()
  idx = 0
  exhausted = 0
  statuses = {}
end

function request()
  idx = idx + 1
  if idx > #reqs then
    exhausted = 1
    wrk.thread:stop()
    idx = #reqs
  end
  return reqs[idx]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local agg, exhausted_threads = {}, 0
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do agg[tostring(code)] = (agg[tostring(code)] or 0) + n end
    exhausted_threads = exhausted_threads + t:get("exhausted")
  end
  local parts = {}
  for code, n in pairs(agg) do parts[#parts + 1] = string.format('"%s": %d', code, n) end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"socket_errors": %d, "timeouts": %d, "statuses": {%s}, "exhausted_threads": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write, e.timeout, table.concat(parts, ", "), exhausted_threads))
end
"""


# --- targets ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(value) -> str:
    return json.dumps(value)  # JSON strings, numbers, booleans and arrays are valid TOML


def write_hub_config(directory: Path, port: int, server: "Server", synchronous: str, log_level: str,
                     destination: str = "jsonl") -> Path:
    """The example configuration, trimmed: SQLite in ``directory``, one jsonl destination
    (or none: ``destination="none"`` measures the receiver alone, the dispatcher idle)."""
    schema = analysis_schema()
    lines = [
        "[server]", 'host = "127.0.0.1"', f"port = {port}", f"workers = {server.workers}",
        f"worker_class = {toml_value(server.worker_class)}", f"header_timeout_seconds = {SLOW_HEADER_TIMEOUT}", "",
        "[store]", f"url = {toml_value('sqlite:///' + str(directory / 'hub.db'))}",
        f"sqlite_synchronous = {toml_value(synchronous)}", "",
        "[dispatch]", "workers = 4", "poll_interval = 0.5", "shutdown_grace_seconds = 5", "",
        "[sources.hms]", 'secret = { env = "HMS_WEBHOOK_SECRET" }', "tolerance_seconds = 300", "",
        "[phone]", 'default_region = "NL"', "",
        "[logging]", f"level = {toml_value(log_level)}", "",
        "[analysis]", f"schema = {_inline_table(schema)}", "",
    ]
    if destination == "jsonl":
        lines += ["[destinations.calls_file]", 'type = "jsonl"',
                  f"path = {toml_value(str(directory / 'calls.jsonl'))}", ""]
    path = directory / "config.toml"
    path.write_text("\n".join(lines))
    return path


def _inline_table(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_inline_table(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_inline_table(v) for v in value) + "]"
    return json.dumps(value)


class Target:
    def __init__(self, name: str, cmd: list[str], port: int, log_path: Path, env: dict, cwd: Path | None = None):
        self.name, self.port, self.log_path = name, port, log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited (code {self.proc.returncode}):\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{self.name} not ready after {timeout} s:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        """CPU (user + system) used so far by the live processes of this target (Linux /proc; else 0)."""
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        total = 0.0
        for pid in tree([self.proc.pid]):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, ValueError, IndexError):
                continue
        return total

    def tail(self, lines: int = 30) -> str:
        if not self.log.closed:
            self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the process we started (serve forwards it to gunicorn and the dispatcher)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session only
                self.proc.wait()
        self.log.close()


class Server:
    """A hub pass's server model: ``CLASS:WORKERS`` as given to --servers, e.g. ``gevent:1``."""

    def __init__(self, text: str):
        worker_class, _, workers = text.partition(":")
        if worker_class not in ("sync", "gevent") or not workers.isdigit() or int(workers) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: use CLASS:WORKERS, CLASS sync or gevent, e.g. gevent:1")
        self.worker_class, self.workers = worker_class, int(workers)

    def __str__(self) -> str:
        return f"{self.worker_class}x{self.workers}"


def start_hub(directory: Path, server: Server, synchronous: str, log_level: str,
              destination: str) -> tuple[Target, Path]:
    port = free_port()
    cfg = write_hub_config(directory, port, server, synchronous, log_level, destination)
    env = {**os.environ, "HMS_WEBHOOK_SECRET": SECRET}
    target = Target(f"hub {server} ({synchronous})", [sys.executable, "-m", "hub", "serve", "-c", str(cfg)], port,
                    directory / "hub.log", env, cwd=ROOT)
    target.wait_ready()
    return target, directory / "hub.db"


def start_bare(directory: Path, workers: int) -> Target:
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
           "--worker-class", "sync", "--timeout", "30", "--log-level", "warning",
           "--chdir", str(BENCH_DIR), "bare_app:app"]
    target = Target("bare Flask", cmd, port, directory / "bare.log", dict(os.environ))
    target.wait_ready()
    return target


# --- load -------------------------------------------------------------------------------------

def signed_requests(count: int, run_id: str):
    """``count`` (body, headers) pairs: the full sample with a distinct call id, each signed now."""
    payload = load_sample("end-of-call-report-full")
    ts = str(int(time.time()))
    for i in range(count):
        payload["message"]["call"]["id"] = f"bench-{run_id}-{i:07d}"
        body = json.dumps(payload).encode()
        yield body, {"Content-Type": "application/json", "X-Webhook-Event": EVENT,
                     "X-Webhook-Timestamp": ts, "X-Webhook-Signature": sign(SECRET, ts, body)}


def raw_request(body: bytes, headers: dict) -> bytes:
    head = f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def run_wrk(port: int, concurrency: int, duration: float, count: int, run_id: str, workdir: Path) -> dict:
    threads = max(1, min(2, concurrency))
    prefix = workdir / f"pool-{run_id}"
    files = [open(f"{prefix}.{t}", "wb") for t in range(threads)]
    for i, (body, headers) in enumerate(signed_requests(count, run_id)):
        raw = raw_request(body, headers)
        files[i % threads].write(b"%d\n" % len(raw) + raw)
    for f in files:
        f.close()
    script = workdir / "replay.lua"
    script.write_text(WRK_LUA)
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(duration))}s", "--timeout", "10s",
           "-s", str(script), f"http://127.0.0.1:{port}{PATH}", "--", str(prefix)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    for t in range(threads):
        os.unlink(f"{prefix}.{t}")
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    data = json.loads(line[len("WRK_JSON "):])
    return {"requests": data["requests"], "seconds": data["duration_us"] / 1e6,
            "p50_ms": data["p50_us"] / 1000, "p99_ms": data["p99_us"] / 1000, "max_ms": data["max_us"] / 1000,
            "statuses": {int(k): v for k, v in data["statuses"].items()},
            "socket_errors": data["socket_errors"] + data["timeouts"],
            "exhausted": data["exhausted_threads"] > 0}


def _python_client(args) -> dict:
    """One load-generator process: ``clients`` sequential keep-alive clients' worth of requests."""
    port, items, deadline = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, statuses, errors = [], {}, 0
    for body, headers in items:
        if time.monotonic() >= deadline:
            break
        start = time.perf_counter()
        try:
            conn.request("POST", PATH, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - start)
            statuses[response.status] = statuses.get(response.status, 0) + 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
    conn.close()
    return {"latencies": latencies, "statuses": statuses, "errors": errors}


def run_python(port: int, concurrency: int, duration: float, count: int, run_id: str, workdir: Path) -> dict:
    """Fallback generator: one process per concurrent client (http.client reconnects as needed)."""
    pool = list(signed_requests(count, run_id))
    shares = [pool[i::concurrency] for i in range(concurrency)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(concurrency) as workers:
        start = time.monotonic()
        results = workers.map(_python_client, [(port, share, start + duration) for share in shares])
        seconds = time.monotonic() - start
    latencies = sorted(x for r in results for x in r["latencies"])
    statuses: dict[int, int] = {}
    for r in results:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n

    def pct(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000 if latencies else float("nan")

    return {"requests": len(latencies), "seconds": seconds, "p50_ms": pct(50), "p99_ms": pct(99),
            "max_ms": latencies[-1] * 1000 if latencies else float("nan"), "statuses": statuses,
            "socket_errors": sum(r["errors"] for r in results),
            "exhausted": len(latencies) >= count}


# --- the run ----------------------------------------------------------------------------------

def store_counts(db: Path, settle: float) -> dict:
    """Reports stored and deliveries by status, after giving the dispatcher ``settle`` seconds."""
    deadline = time.monotonic() + settle
    while True:
        with sqlite3.connect(db, timeout=10) as conn:
            reports = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
            statuses = dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
        if time.monotonic() >= deadline or set(statuses) <= {"succeeded"}:
            return {"reports": reports, "deliveries": statuses}
        time.sleep(0.5)


def measure(name: str, target: Target, expected: int, args, concurrency: int, workdir: Path, run) -> dict:
    run_id = f"{name.split()[0]}{concurrency}-{int(time.time() * 1000) % 10**9}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu_before = target.cpu_seconds()
    result = run(target.port, concurrency, args.duration, args.requests, run_id, workdir)
    cpu = target.cpu_seconds() - cpu_before
    result["cpu_ms"] = cpu * 1000 / result["requests"] if result["requests"] else float("nan")
    result["load_before"] = load
    result["rps"] = result["requests"] / result["seconds"] if result["seconds"] else 0.0
    result["errors"] = result["socket_errors"] + sum(n for code, n in result["statuses"].items() if code != expected)
    result["name"], result["concurrency"] = name, concurrency
    return result


def fmt(r: dict) -> str:
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(r["statuses"].items()))
    note = "  (request pool exhausted: raise --requests)" if r["exhausted"] else ""
    return (f"  {r['name']:<16} c={r['concurrency']:<3} {r['rps']:8.0f} req/s   p50 {r['p50_ms']:6.1f} ms   "
            f"p99 {r['p99_ms']:6.1f} ms   max {r['max_ms']:7.1f} ms   errors {r['errors']}   [{codes}]   "
            f"server CPU {r['cpu_ms']:.2f} ms/req   load before {r['load_before']:.1f}{note}")


def slow_client_ack(port: int, clients: int, limit: float) -> dict:
    """``clients`` connections send a request's headers one byte a second; a second later one
    signed report is POSTed. The seconds until its answer (None: none within ``limit``), and the
    seconds from connect until the server cut each slow connection."""
    head = b"POST /webhooks/hms HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 200 + b"\r\n"
    stop, cut, lock = threading.Event(), [], threading.Lock()

    def trickle():
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.settimeout(1.0)
        started = time.monotonic()
        try:
            for byte in head:
                if stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                try:
                    if not sock.recv(4096):
                        break
                except TimeoutError:
                    continue
            else:
                return
        except OSError:
            pass  # reset by the server
        finally:
            sock.close()
        with lock:
            cut.append(time.monotonic() - started)

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    time.sleep(1.0)
    body, headers = next(signed_requests(1, f"slow-{time.time_ns()}"))
    sent = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=limit)
        conn.request("POST", PATH, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        ack, status = time.monotonic() - sent, answer.status
    except (OSError, http.client.HTTPException):
        ack, status = None, None
    while len(cut) < clients and time.monotonic() - began < limit:
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(2)
    return {"ack_s": ack, "status": status, "cut": sorted(cut)}


def fmt_slow(name: str, clients: int, limit: float, r: dict) -> str:
    if r["ack_s"] is None:
        ack = f"no answer within {limit:g} s (the platform does not retry: a lost report)"
    else:
        verdict = "met" if r["status"] == 202 and r["ack_s"] < TARGET_SLOW_ACK_S else "NOT met"
        ack = f"answered {r['status']} in {r['ack_s'] * 1000:.0f} ms [goal < {TARGET_SLOW_ACK_S:g} s: {verdict}]"
    cut = (f"{len(r['cut'])}/{clients} slow connections cut, after {r['cut'][0]:.1f}-{r['cut'][-1]:.1f} s"
           if r["cut"] else f"0/{clients} slow connections cut within {limit:g} s")
    return f"  {name:<24} {clients} slow-header clients: report {ack}; {cut}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per target per concurrency (10)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32], help="levels (8 32)")
    parser.add_argument("--requests", type=int, default=60000,
                        help="cap on requests per target per level; the signed pool size (60000)")
    parser.add_argument("--destination", choices=["jsonl", "none"], default="jsonl",
                        help="jsonl: every report is also delivered (fsynced line) while the load runs; "
                             "none: the receiver alone (jsonl)")
    parser.add_argument("--synchronous", nargs="+", choices=["NORMAL", "FULL"], default=["NORMAL"],
                        help="[store] sqlite_synchronous for each hub pass (NORMAL); e.g. NORMAL FULL")
    parser.add_argument("--servers", type=Server, nargs="+",
                        default=[Server("sync:2"), Server("gevent:1"), Server("gevent:2")],
                        help="the hub's server model of each pass, CLASS:WORKERS ([server] worker_class and "
                             "workers); the first is the baseline (sync:2 gevent:1 gevent:2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers of the bare app (2)")
    parser.add_argument("--slow-clients", type=int, default=8,
                        help="slow-header connections of each hub pass's slow-client scenario; 0: none (8)")
    parser.add_argument("--slow-limit", type=float, default=45,
                        help="seconds the slow-client scenario waits for the report's answer (45)")
    parser.add_argument("--generator", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python",
                        help="load generator (wrk if installed)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="the hub's [logging] level (INFO, as config.example.toml); its log goes to a file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (databases, logs)")
    args = parser.parse_args(argv)
    run = run_wrk if args.generator == "wrk" else run_python

    workdir = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    print(f"sovereign-hub ingest benchmark  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; generator: {args.generator} on the same machine")
    print(f"load average now {os.getloadavg()[0]:.2f} (other work on the machine skews every figure; "
          f"'server CPU ms/req' is the steadiest one)")
    print(f"bare app: gunicorn, {args.workers} sync workers; hub passes: {' '.join(map(str, args.servers))} "
          f"(worker class x workers, header timeout {SLOW_HEADER_TIMEOUT} s); 127.0.0.1; {args.duration:g} s "
          f"per level, at most {args.requests} requests; payload: end-of-call-report-full, distinct call ids, "
          f"signed\n")
    results: dict[tuple, dict] = {}
    try:
        bare = start_bare(workdir, args.workers)
        try:
            for c in args.concurrency:
                results[("bare", c)] = r = measure("bare Flask", bare, 200, args, c, workdir, run)
                print(fmt(r), flush=True)
        finally:
            bare.stop()
        passes = [(sync, server) for sync in args.synchronous for server in args.servers]
        for sync, server in passes:
            name = f"hub {server} {sync}"
            directory = workdir / f"hub-{server}-{sync}"
            directory.mkdir()
            hub, db = start_hub(directory, server, sync, args.log_level, args.destination)
            try:
                time.sleep(2)
                idle_rss, idle_pss = memory_mb([hub.proc.pid])
                peak = PeakMemory([hub.proc.pid])
                accepted = 0
                for c in args.concurrency:
                    results[(sync, str(server), c)] = r = measure(name, hub, 202, args, c, workdir, run)
                    accepted += r["statuses"].get(202, 0)
                    print(fmt(r), flush=True)
                peak_rss, peak_pss = peak.stop()
                counts = store_counts(db, settle=20)
                if args.slow_clients:
                    slow = slow_client_ack(hub.port, args.slow_clients, args.slow_limit)
                    print(fmt_slow(name, args.slow_clients, args.slow_limit, slow), flush=True)
            finally:
                hub.stop()
            print(f"  {name}: [store] sqlite_synchronous = \"{sync}\"; {accepted} answered 202, "
                  f"{counts['reports']} reports stored, deliveries {counts['deliveries']}")
            print(f"  {name}: total PSS of serve's processes idle {idle_pss:.0f} MB (RSS {idle_rss:.0f}), "
                  f"peak under load {peak_pss:.0f} MB (RSS {peak_rss:.0f}) [goal idle < {GOAL_PSS_MB:g} MB: "
                  f"{'met' if idle_pss < GOAL_PSS_MB else 'NOT met'}]")
            if counts["reports"] < accepted:
                print(f"  !! fewer reports stored than acknowledged: {counts['reports']} < {accepted}")
        print("\nsummary (hub / bare, and against the first server model):")
        for sync, server in passes:
            for c in args.concurrency:
                h, b = results[(sync, str(server), c)], results[("bare", c)]
                base = results[(sync, str(args.servers[0]), c)]
                ratio = h["rps"] / b["rps"] if b["rps"] else 0.0
                cost = h["rps"] / base["rps"] if base["rps"] else 0.0
                verdict = []
                if ratio < TARGET_RATIO:
                    verdict.append(f"below {TARGET_RATIO:.0%} of bare")
                if c <= 8 and h["p99_ms"] >= TARGET_P99_MS:
                    verdict.append(f"p99 >= {TARGET_P99_MS:g} ms")
                print(f"  {str(server):<9} sqlite_synchronous={sync:<6} c={c:<3} throughput ratio {ratio:5.2f}  "
                      f"(hub {h['rps']:.0f} vs bare {b['rps']:.0f} req/s; p99 {h['p99_ms']:.1f} vs "
                      f"{b['p99_ms']:.1f} ms; server CPU {h['cpu_ms']:.2f} vs {b['cpu_ms']:.2f} ms/req)  "
                      f"{cost:4.2f}x {args.servers[0]}'s req/s  "
                      f"{'MISSES TARGET: ' + ', '.join(verdict) if verdict else 'meets target'}")
    finally:
        if args.keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
