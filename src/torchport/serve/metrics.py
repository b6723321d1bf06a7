"""Prometheus metrics of one server, in their own registry (so several apps can live in one process)."""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Queue(Protocol):
    @property
    def depth(self) -> int: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("torchport_requests", "HTTP requests by endpoint", ["endpoint"], registry=self.registry)
        self.errors = Counter(
            "torchport_errors", "HTTP error responses by status code", ["code"], registry=self.registry
        )
        self.latency = Histogram(
            "torchport_request_duration_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "torchport_batch_size",
            "Samples per ONNX Runtime call by model",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference_failures = Counter(
            "torchport_inference_failures",
            "Requests ONNX Runtime failed on after validation (answered 500) by model",
            ["model"],
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "torchport_connections_refused",
            "Connections answered 503 and closed because --limit-concurrency connections were open",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "torchport_queue_depth", "Requests waiting for the batcher by model", ["model"], registry=self.registry
        )
        self._series: dict[tuple[Any, str], Any] = {}  # labelled children, looked up once (labels() takes a lock)

    def _child(self, metric: Any, label: str) -> Any:
        child = self._series.get((metric, label))
        if child is None:
            child = self._series[(metric, label)] = metric.labels(label)
        return child

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self._child(self.requests, endpoint).inc()
        if status >= 400:
            self._child(self.errors, str(status)).inc()
        self._child(self.latency, endpoint).observe(seconds)

    def track_queue(self, model: str, queue: Queue) -> None:
        """The model's queue depth, read when /metrics is scraped (nothing to update per request)."""
        self.queue_depth.labels(model).set_function(lambda: queue.depth)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
