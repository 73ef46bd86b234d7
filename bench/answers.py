"""assistant-request answer latency (p50/p99) against a local CRM answering in 50 ms, and in 6 s.

Serves the real app (werkzeug's threaded server on a free 127.0.0.1 port, a SQLite store in a
temp folder) with ``[answers.assistant_request]`` over the test CRM type of
tests/fixtures/answers (a real HTTP server on 127.0.0.1 with a set delay), and POSTs signed
assistant-requests from ``--concurrency`` client threads. In the same run:

- baseline: status-update events on the same server (store and acknowledge, no lookup);
- fast CRM (``--fast-ms``, 50): every number a new one (each answer waits for its lookup);
- fast CRM again, the same numbers (answered from the cache);
- slow CRM (``--slow-ms``, 6000): every lookup is abandoned at ``--budget-ms`` and the fallback sent.

The latency is the client's: from sending the request to reading the whole answer. The goal is
p99 under the budget plus 50 ms in both CRM cases. Not a test: it always exits 0.
Usage: ``python bench/answers.py --requests 200 --concurrency 8``
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "fixtures" / "answers"))

from answers_crm import PLUGIN, LocalCrm  # noqa: E402

from hub.app import create_app  # noqa: E402
from hub.config import load_config  # noqa: E402
from hub.core import Hub  # noqa: E402
from hub.plugins import collect, make_manager  # noqa: E402
from hub.testing import TEST_SECRET, load_sample, migrated, signed_headers  # noqa: E402


def serve(folder: Path, crm_url: str, budget_ms: int):
    pm = make_manager(load_entry_points=False)
    pm.register(PLUGIN)
    registry = collect(pm)
    url = migrated(f"sqlite:///{folder / 'hub.db'}")
    config = load_config(None, registry, data={
        "store": {"url": url}, "sources": {"hms": {"secret": TEST_SECRET}}, "logging": {"level": "WARNING"},
        "destinations": {"crm": {"type": "localcrm", "base_url": crm_url}},
        "answers": {"assistant_request": {"crm": "crm", "first_message": "Hello {{ caller.name }}!",
                                          "unknown_first_message": "Hello!", "budget_ms": budget_ms}}})
    app = create_app(hub=Hub(config, pm, registry))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return app, server, f"http://127.0.0.1:{server.server_port}/webhooks/hms"


def event(kind: str, n: int, run: str) -> bytes:
    payload = load_sample("status-update")
    message = payload["message"]
    message.pop("error")
    message.update(type=kind)
    message["call"].update(id=f"bench-{run}-{n}", type="inbound_phone_call",
                           status="ringing" if kind == "assistant-request" else f"in-progress-{n}")
    message["customer"] = {"number": f"+3161{n:07d}"}
    return json.dumps(payload).encode()


def measure(url: str, kind: str, count: int, concurrency: int, run: str) -> list[float]:
    session_local = threading.local()

    def one(n: int) -> float:
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        body = event(kind, n, run)
        headers = signed_headers(body, event=kind)
        start = time.perf_counter()
        response = session.post(url, data=body, headers=headers, timeout=30)
        response.content
        took = (time.perf_counter() - start) * 1000
        assert response.status_code in (200, 202), response.text
        return took

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def line(label: str, values: list[float], goal: float | None) -> str:
    p50, p99 = statistics.median(values), percentile(values, 0.99)
    verdict = "" if goal is None else ("  goal met" if p99 < goal else f"  GOAL MISSED (p99 >= {goal:.0f} ms)")
    return f"{label:<44} n={len(values):<4} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   max {max(values):8.1f} ms{verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per fast run")
    parser.add_argument("--slow-requests", type=int, default=32, help="requests of the slow CRM's run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--budget-ms", type=int, default=2000)
    parser.add_argument("--fast-ms", type=int, default=50)
    parser.add_argument("--slow-ms", type=int, default=6000)
    args = parser.parse_args()
    goal = args.budget_ms + 50
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    print(f"budget_ms = {args.budget_ms}; goal: p99 < {goal} ms; {args.concurrency} clients at once")
    with tempfile.TemporaryDirectory() as tmp:
        for delay, runs in ((args.fast_ms, ("baseline", "cold", "warm")), (args.slow_ms, ("slow",))):
            callers = {f"+3161{n:07d}": {"id": str(n), "name": f"Caller {n}"} for n in range(args.requests)}
            with LocalCrm(callers, delay=delay / 1000) as crm:
                folder = Path(tmp) / f"crm-{delay}"
                folder.mkdir()
                app, server, url = serve(folder, crm.url, args.budget_ms)
                try:
                    for run in runs:
                        if run == "baseline":
                            values = measure(url, "status-update", args.requests, args.concurrency, run)
                            print(line("baseline: status-update (store, no lookup)", values, None))
                        elif run == "slow":
                            values = measure(url, "assistant-request", args.slow_requests, args.concurrency, run)
                            print(line(f"CRM answering in {delay} ms (fallback)", values, goal))
                        else:
                            values = measure(url, "assistant-request", args.requests, args.concurrency, run)
                            label = (f"CRM answering in {delay} ms, new numbers" if run == "cold"
                                     else f"CRM answering in {delay} ms, cached")
                            print(line(label, values, goal))
                finally:
                    server.shutdown()
                    app.hub.close()


if __name__ == "__main__":
    main()
