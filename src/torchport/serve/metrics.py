"""Prometheus metrics of one server, in their own registry (so several apps can live in one process).

Requests, their latency and the error answers are labelled by ``protocol`` (``rest`` or ``grpc``) and ``model``:
``name:version`` of the model the request named (as on the batch and queue series), empty for server-wide routes
and for names the server does not serve, so a client cannot add series at will. Error ``code`` is the HTTP status
over REST and the gRPC status name (``INVALID_ARGUMENT``, ``UNAVAILABLE``, ...) over gRPC."""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
REQUEST_LABELS = ["protocol", "endpoint", "model"]


class Queue(Protocol):
    @property
    def depth(self) -> int: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "torchport_requests", "Requests by protocol, endpoint and model", REQUEST_LABELS, registry=self.registry
        )
        self.errors = Counter(
            "torchport_errors",
            "Error answers by protocol, code (HTTP status or gRPC status name) and model",
            ["protocol", "code", "model"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "torchport_request_duration_seconds",
            "Request latency by protocol, endpoint and model",
            REQUEST_LABELS,
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
        # labelled children, looked up once (labels() takes a lock): (requests, latency) and errors by labels
        self._series: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._errors: dict[tuple[str, str, str], Any] = {}

    def observe(self, protocol: str, endpoint: str, model: str, seconds: float, error: str | None = None) -> None:
        """Count one answered request; ``error`` is its code when it failed (HTTP status, or gRPC status name)."""
        key = (protocol, endpoint, model)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (self.requests.labels(*key), self.latency.labels(*key))
        series[0].inc()
        series[1].observe(seconds)
        if error is not None:
            error_key = (protocol, error, model)
            errors = self._errors.get(error_key)
            if errors is None:
                errors = self._errors[error_key] = self.errors.labels(*error_key)
            errors.inc()

    def track_queue(self, model: str, queue: Queue) -> None:
        """The model's queue depth, read when /metrics is scraped (nothing to update per request)."""
        self.queue_depth.labels(model).set_function(lambda: queue.depth)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
