"""Prometheus metrics of the serving app, exposed in the text format at `/metrics`.

`prometheus_client` does the bookkeeping and the exposition format (escaping, histogram buckets,
`_created` samples) that we would otherwise hand-write. Each service owns its own
CollectorRegistry rather than the library's global one, so two services in one process (tests,
a notebook) never mix their counts.
"""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)

# Seconds; the served path takes 10-60 ms on 2 CPU cores, a queued request up to seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    """Counters and histograms of one ClassifrService; `render()` gives the `/metrics` body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "classifr_prediction_requests", "Images received for prediction, by origin and outcome.",
            ["source", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "classifr_prediction_latency_seconds", "Time from receiving an image to its ranked labels.",
            ["version"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.predictions = Counter(
            "classifr_predictions", "Top-1 predictions, by model version and label.",
            ["version", "label"], registry=self.registry,
        )
        self.feedback = Counter(
            "classifr_feedback", "Confirmations and corrections from contributors.", ["kind"], registry=self.registry,
        )
        self.serving = Gauge(
            "classifr_serving_version", "1 for each version that serves traffic now, by variant.",
            ["version", "variant"], registry=self.registry,
        )
        self.log_dropped = Gauge(
            "classifr_prediction_log_dropped", "Predictions the log could not keep (queue full or write failure).",
            registry=self.registry,
        )

    def observe_prediction(self, *, version: str, label: str, latency_s: float, source: str) -> None:
        self.requests.labels(source=source, status="ok").inc()
        self.latency.labels(version=version).observe(latency_s)
        self.predictions.labels(version=version, label=label).inc()

    def observe_error(self, *, source: str) -> None:
        self.requests.labels(source=source, status="error").inc()

    def observe_feedback(self, kind: str) -> None:
        self.feedback.labels(kind=kind).inc()

    def set_serving(self, versions: dict[str, str]) -> None:
        """`versions`: variant -> version, e.g. {"production": "v3", "candidate": "v4"}."""
        self.serving.clear()
        for variant, version in versions.items():
            self.serving.labels(version=version, variant=variant).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
