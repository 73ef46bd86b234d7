"""Prometheus metrics. Under ``serve`` several processes count, so counters go through
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``);
the queue depth is read from the store at scrape time, so every process agrees on it.
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

REPORTS = Counter("sovereign_hub_reports_received_total", "Webhook requests by source and outcome",
                  ["source", "status"])
DELIVERIES = Counter("sovereign_hub_deliveries_total", "Delivery attempts by destination and outcome",
                     ["destination", "outcome"])
ATTEMPT_SECONDS = Histogram("sovereign_hub_delivery_attempt_seconds", "Time one delivery attempt took",
                            ["destination"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

ANSWERS = Counter("sovereign_hub_answers_total",
                  "Answers to assistant-request and tool-calls events by event type and outcome "
                  "(answered, fallback, error)", ["event", "outcome"])
ANSWER_SECONDS = Histogram("sovereign_hub_answer_seconds", "Time from a request's arrival to its answer",
                           ["event"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 4.5, 5, 8, 10))


class QueueDepthCollector:
    def __init__(self, store):
        self.store = store

    def collect(self):
        gauge = GaugeMetricFamily("sovereign_hub_queue_depth", "Deliveries by destination and status",
                                  labels=["destination", "status"])
        for (destination, status), count in sorted(self.store.delivery_counts().items()):
            gauge.add_metric([destination, status], count)
        yield gauge


class ReconcileCollector:
    """The last scheduled reconcile (``hub.jobs``), from the store: one answer for every process."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        from .jobs import last_run
        from .reconcile import JOB

        run = last_run(self.store, JOB)
        if run is None or run.finished_at is None:
            return
        yield GaugeMetricFamily("sovereign_hub_reconcile_last_run_timestamp_seconds",
                                "When the last scheduled reconcile finished (Unix time)",
                                value=run.finished_at.timestamp())
        result = run.result or {}
        yield GaugeMetricFamily("sovereign_hub_reconcile_last_run_failed",
                                "1 when the last scheduled reconcile stopped on an error", value=int("error" in result))
        calls = GaugeMetricFamily("sovereign_hub_reconcile_last_run_calls",
                                  "Calls of the last scheduled reconcile by outcome", labels=["outcome"])
        for outcome in ("seen", "already_received", "ingested", "skipped"):
            calls.add_metric([outcome], result.get(outcome, 0))
        yield calls


def render(store) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
        output = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY
        output = generate_latest(REGISTRY)
    depth = CollectorRegistry()
    depth.register(QueueDepthCollector(store))
    depth.register(ReconcileCollector(store))
    return output + generate_latest(depth), CONTENT_TYPE_LATEST
