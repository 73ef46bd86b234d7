"""Retention's cost to the ack path, and scrubbing's cost per recorded error. Prints figures.

1. A SQLite store (WAL, synchronous=NORMAL, the default) gets ``--reports`` expired reports, each
   with a delivery and an attempt. Then the ack path's insert (``Store.insert_report``, one report
   and one delivery) is timed ``--inserts`` times alone (the baseline), and again while
   ``operations.prune`` deletes every expired report in its batches (``ERASE_BATCH``) in another
   thread. Printed: insert p50/p99/max for both, the prune's total time and rows per second.
2. ``scrub`` of a typical delivery error inside ``in_play`` (the dispatcher's, once per failed
   attempt) against ``redact`` (what was done before), per call.

    .venv/bin/python bench/prune.py [--reports 20000] [--inserts 400]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from hub import operations
from hub.redaction import in_play, redact, register_secret, scrub
from hub.schema import upgrade
from hub.store import SUCCEEDED, Attempt, Store, utcnow
from hub.testing import load_sample, normalize_payload


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):6.2f} ms  p99 {p99:6.2f} ms  max {ordered[-1]:6.2f} ms"


def fill(store: Store, template, count: int) -> None:
    old = utcnow() - timedelta(days=400)
    for n in range(count):
        report = dataclasses.replace(template, id=str(uuid.uuid4()), occurred_at=old, received_at=old,
                                     call=dataclasses.replace(template.call, id=f"old-{n}"))
        store.insert_report(report, ["archive"])
        delivery = store.claim("bench", 60)
        store.finish(delivery, "bench", status=SUCCEEDED, state={},
                     attempt=Attempt(utcnow(), 1.0, "succeeded", 200))


def time_inserts(store: Store, template, count: int, tag: str) -> list[float]:
    samples = []
    for n in range(count):
        report = dataclasses.replace(template, id=str(uuid.uuid4()), received_at=utcnow(),
                                     call=dataclasses.replace(template.call, id=f"{tag}-{n}"))
        start = time.perf_counter()
        store.insert_report(report, ["archive"])
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=20000)
    parser.add_argument("--inserts", type=int, default=400)
    args = parser.parse_args()
    template = normalize_payload(load_sample("end-of-call-report-full"))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'hub.db'}"
        upgrade(url)
        store = Store(url)
        started = time.perf_counter()
        fill(store, template, args.reports)
        print(f"filled {args.reports} expired reports (1 delivery, 1 attempt each) in "
              f"{time.perf_counter() - started:.1f} s")
        baseline = time_inserts(store, template, args.inserts, "alone")
        hub = SimpleNamespace(store=store, config=SimpleNamespace(privacy=SimpleNamespace(retention_days=30)))
        outcome = {}

        def prune() -> None:
            begin = time.perf_counter()
            outcome["counts"] = operations.prune(hub).counts
            outcome["seconds"] = time.perf_counter() - begin

        pruner = threading.Thread(target=prune)
        pruner.start()
        during = time_inserts(store, template, args.inserts, "during")
        pruner.join()
        store.close()
    rows = sum(outcome["counts"].values())
    print(f"ack-path insert alone        : {percentiles(baseline)}  (n={len(baseline)})")
    print(f"ack-path insert during prune : {percentiles(during)}  (n={len(during)})")
    print(f"prune: {outcome['counts']} in {outcome['seconds']:.1f} s ({rows / outcome['seconds']:,.0f} rows/s, "
          f"batches of {operations.ERASE_BATCH} reports)")

    register_secret("https://hooks.slack.com/services/T0BENCH01/B0BENCH01/benchsecretbenchsecret")
    error = ("destination 'crm': HTTP 400 from api.hubapi.com: Property values were not valid: phone "
             "0031623456789 / 623456789 / +31 (0)6 2345 6789; HTTPSConnectionPool(host='hooks.slack.com', "
             "port=443): Max retries exceeded with url: /services/T0BENCH01/B0BENCH01/benchsecretbenchsecret")
    rounds = 20000
    start = time.perf_counter()
    for _ in range(rounds):
        redact(error)
    before = (time.perf_counter() - start) / rounds * 1e6
    start = time.perf_counter()
    for _ in range(rounds):
        with in_play(["+31623456789"]):
            scrub(error)
    after = (time.perf_counter() - start) / rounds * 1e6
    print(f"per failed attempt: redact {before:.1f} us (before), in_play + scrub {after:.1f} us (now)")


if __name__ == "__main__":
    main()
