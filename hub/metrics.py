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


class QueueDepthCollector:
    def __init__(self, store):
        self.store = store

    def collect(self):
        gauge = GaugeMetricFamily("sovereign_hub_queue_depth", "Deliveries by destination and status",
                                  labels=["destination", "status"])
        for (destination, status), count in sorted(self.store.delivery_counts().items()):
            gauge.add_metric([destination, status], count)
        yield gauge


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
    return output + generate_latest(depth), CONTENT_TYPE_LATEST
