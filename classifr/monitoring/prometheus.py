"""Prometheus metrics of the serving app, exposed in the text format at `/metrics`.

`prometheus_client` does the bookkeeping and the exposition format (escaping, histogram buckets,
`_created` samples) that we would otherwise hand-write. Each service owns its own
CollectorRegistry rather than the library's global one, so two services in one process (tests,
a notebook) never mix their counts. The process, platform and garbage-collector collectors are
registered on it too, with the free disk of the project home and the log writer's queue depth,
both read at scrape time (docs/monitoring.md, "Process health").
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

logger = logging.getLogger(__name__)

# Seconds; the served path takes 10-60 ms on 2 CPU cores, a queued request up to seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECENT = 1000  # latencies kept for the Monitor's percentiles: the last 1,000 of each kind


class RecentTimes:
    """The last `size` durations of one kind, for percentiles on the Monitor (Prometheus keeps buckets only)."""

    def __init__(self, size: int = RECENT) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def percentiles(self, *quantiles: float) -> list[float | None]:
        """Nearest-rank percentiles in seconds (e.g. 0.5, 0.95); None for each while nothing was measured."""
        with self._lock:
            ordered = sorted(self._values)
        if not ordered:
            return [None] * len(quantiles)
        return [ordered[max(0, math.ceil(q * len(ordered)) - 1)] for q in quantiles]

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)


class ServingMetrics:
    """Counters and histograms of one ClassifrService; `render()` gives the `/metrics` body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        *,
        disk_free: Callable[[], float] | None = None,
        log_queue_depth: Callable[[], float] | None = None,
    ) -> None:
        """`disk_free` and `log_queue_depth` are read at each scrape (bytes free in the project home,
        records waiting for the log writer); without them those gauges are absent."""
        self.registry = CollectorRegistry()
        # The same collectors prometheus_client puts on its global registry, here on ours:
        # process_cpu_seconds_total, process_resident_memory_bytes, ..., python_info, python_gc_*.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
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
        if disk_free is not None:
            Gauge(
                "classifr_home_disk_free_bytes", "Free bytes on the filesystem of the project home (CLASSIFR_HOME).",
                registry=self.registry,
            ).set_function(disk_free)
        if log_queue_depth is not None:
            Gauge(
                "classifr_prediction_log_queue_depth", "Predictions and feedback waiting for the log's writer thread.",
                registry=self.registry,
            ).set_function(log_queue_depth)
        self.request_time = Histogram(
            "classifr_request_seconds",
            "A predict event as its caller sees it: stage=wait from the request reaching the app to the handler "
            "starting (Gradio's queue), stage=work the handler itself.",
            ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.recent_server = RecentTimes()  # predict_batch's own time per image batch (decode + model)
        self.recent_caller = RecentTimes()  # wait + work of predict events

    def observe_request(self, *, wait_s: float | None, work_s: float) -> None:
        """One predict event: `wait_s` (None when the arrival time is unknown) and `work_s`."""
        if wait_s is not None:
            self.request_time.labels(stage="wait").observe(wait_s)
        self.request_time.labels(stage="work").observe(work_s)
        self.recent_caller.add((wait_s or 0.0) + work_s)

    def observe_prediction(self, *, version: str, label: str, latency_s: float, source: str) -> None:
        self.requests.labels(source=source, status="ok").inc()
        self.latency.labels(version=version).observe(latency_s)
        self.recent_server.add(latency_s)
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
