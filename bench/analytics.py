"""How long the analytics figures take over a month of calls, against reading the same reports.

Fills a SQLite store in a temp folder with ``--calls-per-day`` end-of-call reports (and one jsonl
delivery each, succeeded) for each of ``--days`` days, then times, in the same run:

- baseline: ``Store.list_reports`` of the window (what any page over the window reads), and
- ``operations.analytics`` (the /analytics page, /api/stats's analytics and the CSV), which reads
  the same reports, their deliveries, and computes every figure.

Prints the median of ``--repeat`` runs of each and their ratio. Not a test: it always exits 0.
Usage: ``python bench/analytics.py --calls-per-day 100 --days 30``
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from hub.app import create_app
from hub.store import utcnow
from hub.testing import TEST_SECRET, load_sample, migrated


def fill(app, days: int, per_day: int) -> int:
    source = app.hub.sources["hms"]
    now = utcnow()
    n = 0
    for back in range(days):
        for k in range(per_day):
            payload = load_sample("end-of-call-report-full")
            payload["message"]["call"]["id"] = f"bench-{back}-{k}"
            payload["message"]["analysis"]["sentiment"] = 1 + n % 10
            app.hub.ingest("hms", source.schema.load(payload), payload,
                           received_at=now - timedelta(days=back, seconds=k * 60 % 86_000))
            n += 1
    while app.hub.dispatcher.run_due():
        pass
    return n


def timed(action, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--calls-per-day", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from hub import operations as ops

    with tempfile.TemporaryDirectory() as folder:
        url = migrated(f"sqlite:///{Path(folder) / 'hub.db'}")
        app = create_app(config_data={
            "store": {"url": url}, "sources": {"hms": {"secret": TEST_SECRET}},
            "analysis": {"schema": __import__("hub.samples", fromlist=["analysis_schema"]).analysis_schema()},
            "destinations": {"file": {"type": "jsonl", "path": str(Path(folder) / "calls.jsonl")}}})
        try:
            calls = fill(app, args.days, args.calls_per_day)
            since = utcnow() - timedelta(days=args.days)
            baseline = timed(lambda: app.hub.store.list_reports(since=since, limit=None), args.repeat)
            figures = timed(lambda: ops.analytics(app.hub, args.days), args.repeat)
        finally:
            app.hub.close()
    print(f"{calls} calls over {args.days} days (SQLite), median of {args.repeat}:")
    print(f"  baseline, reading the window's reports: {baseline * 1000:8.1f} ms")
    print(f"  analytics, every figure:                {figures * 1000:8.1f} ms  ({figures / baseline:.2f}x the baseline)")


if __name__ == "__main__":
    main()
