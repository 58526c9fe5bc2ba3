"""The monitoring summary that the Monitor tab and `classifr monitor` show: the prediction log's
aggregates per version, each version's drift against its reference, and corrections.

Drift compares the top-1 confidence of recent traffic with a reference by the population stability
index (see classifr.monitoring.drift). The reference is the version's own eval split when training wrote
its confidences into metrics.json (`reference_scores`), else the version's first predictions in the
log (a baseline window, e.g. for the bootstrapped `v1`, whose ImageNet eval data is not here).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from classifr.monitoring.drift import DriftReport, drift_report
from classifr.monitoring.log import PredictionLog
from classifr.versions.folder import read_metrics
from classifr.versions.registry import ModelRegistry

logger = logging.getLogger(__name__)

# Time windows offered in the app and the CLI: name -> seconds (None: everything).
WINDOWS: dict[str, float | None] = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0, "all": None}
BASELINE_PREDICTIONS = 500  # the reference window when a version has no eval confidences
MIN_CURRENT = 50  # drift_report's default: fewer recent predictions give no value
RECENT_PREDICTIONS = 1000  # drift looks at this many of the newest predictions in the window
LOW_CONFIDENCE = 0.5


def window_start(window: str, *, now: float | None = None) -> float | None:
    """The unix time a window starts at; ValueError naming the window when it is unknown."""
    if window not in WINDOWS:
        raise ValueError(f"unknown time window {window!r}; choose one of {', '.join(WINDOWS)}")
    span = WINDOWS[window]
    return None if span is None else (now if now is not None else time.time()) - span


def reference_scores(log: PredictionLog, registry: ModelRegistry | None, version: str) -> tuple[np.ndarray, str, bool]:
    """(top-1 confidences, where they come from, whether they come from the log itself)."""
    scores = _eval_scores(registry, version)
    if scores is not None and len(scores):
        return scores, f"held-out test photos of {version} ({len(scores)} images)", False
    baseline = log.first_scores(version, BASELINE_PREDICTIONS)
    return baseline, f"first {len(baseline)} predictions of {version}", True


def version_drift(log: PredictionLog, registry: ModelRegistry | None, version: str, *, since: float | None) -> DriftReport:
    reference, name, from_log = reference_scores(log, registry, version)
    recent = log.scores(version=version, since=since, limit=RECENT_PREDICTIONS)
    if from_log:
        # The baseline rows are the version's oldest: compare only rows that came after them.
        total = log.count(version=version)
        recent = recent[: max(0, min(len(recent), total - len(reference)))]
        if len(reference) < BASELINE_PREDICTIONS:
            return DriftReport(
                statistic="PSI of top-1 confidence", value=None, threshold=0.2, alert=False, reference=name,
                n_reference=len(reference), n_current=len(recent),
                message=f"{BASELINE_PREDICTIONS + MIN_CURRENT - total} more predictions of {version} needed: its "
                        f"first {BASELINE_PREDICTIONS} are the reference ({len(reference)} so far), then {MIN_CURRENT} to compare",
            )
    return drift_report(reference, recent, reference_name=name)


def monitor_summary(
    log: PredictionLog,
    *,
    registry: ModelRegistry | None = None,
    since: float | None = None,
    until: float | None = None,
    serving: dict[str, str] | None = None,
    low_confidence: float = LOW_CONFIDENCE,
) -> dict[str, Any]:
    """`{"by_version": {"v1": {"predictions": ..., "drift": {...}}}, "serving": ..., "corrections": [...]}`."""
    summary = log.summary(since=since, until=until, low_confidence=low_confidence)
    for version, row in summary["by_version"].items():
        row["drift"] = version_drift(log, registry, version, since=since).to_json()
    summary["serving"] = dict(serving or {})
    summary["low_confidence_threshold"] = low_confidence
    summary["corrections"] = [row for row in log.feedback_confusion() if row["predicted"] != row["true"]]
    summary["log"] = {"dropped": log.dropped, "failed": log.failed}
    return summary


def _eval_scores(registry: ModelRegistry | None, version: str) -> np.ndarray | None:
    """The eval split's top-1 confidences saved in metrics.json at training time, if any."""
    if registry is None:
        return None
    try:
        scores = read_metrics(registry.local_path(version)).data.get("reference_scores")
        array = np.asarray(scores if scores else [], dtype=np.float64).ravel()
    except (OSError, KeyError, ValueError, TypeError) as err:  # a version unknown here, a hand-edited metrics.json
        logger.warning("no eval confidences for %s: %s", version, err)
        return None
    return array if array.size and np.isfinite(array).all() else None
