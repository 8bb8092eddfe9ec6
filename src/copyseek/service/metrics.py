"""Prometheus metrics of one service: requests, latency histograms, errors, index size.

Each app has its own registry, so several apps in one process (tests) do not share counters.
Routes are labelled by their template (`/v1/references/{reference_id}`), never by the raw path, so a
client cannot grow the number of series.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # the `_created` timestamp series only double what a scrape shows

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self, references: Callable[[], int]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "copyseek_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.errors = Counter(
            "copyseek_errors", "requests answered with a 4xx or 5xx status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "copyseek_request_seconds", "time to answer a request", ["route"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        gauge = Gauge("copyseek_references", "references in the served index", registry=self.registry)
        gauge.set_function(references)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
