"""Drift of the top-1 confidence against a reference (an eval split, or the first predictions of a
version), measured with the population stability index; see `drift_report`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from classifr.monitoring.records import MonitoringValueError, _check_count

PSI_THRESHOLD = 0.2
PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class DriftReport:
    """How far the current top-1 confidences are from a reference; `value` None when too few."""

    statistic: str
    value: float | None
    threshold: float
    alert: bool
    reference: str
    n_reference: int
    n_current: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def population_stability_index(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> float:
    """PSI = sum((c - r) * ln(c / r)) over bins cut at the reference's quantiles.

    Quantile bins give every reference bin about the same weight; duplicate edges (many equal
    values) are merged, the outer edges are -inf/+inf, and proportions are floored at 1e-4 so an
    empty bin adds a large but finite term instead of log(0)."""
    ref = _finite_1d("reference", reference)
    cur = _finite_1d("current", current)
    if ref.size == 0 or cur.size == 0:
        raise MonitoringValueError(
            f"PSI needs values on both sides, got {ref.size} reference and {cur.size} current values"
        )
    bins = _check_count("bins", bins, low=2)
    inner = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    r = _proportions(ref, inner)
    c = _proportions(cur, inner)
    return float(np.sum((c - r) * np.log(c / r)))


def drift_report(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    reference_name: str,
    threshold: float = PSI_THRESHOLD,
    min_current: int = 50,
) -> DriftReport:
    """Compare the current top-1 confidences with a reference. The default threshold, 0.2, is the
    usual convention for a significant shift in PSI (below 0.1: none; 0.1 to 0.2: moderate)."""
    ref = _finite_1d("reference", reference)
    cur = _finite_1d("current", current)
    if ref.size == 0:
        raise MonitoringValueError(f"drift needs a non-empty reference, got 0 values from {reference_name!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 < threshold < math.inf:
        raise MonitoringValueError(f"threshold must be a positive number, got {threshold!r}")
    min_current = _check_count("min_current", min_current, low=1)
    base = dict(
        statistic="PSI of top-1 confidence", threshold=float(threshold), reference=reference_name,
        n_reference=int(ref.size), n_current=int(cur.size),
    )  # fmt: skip
    if cur.size < min_current:
        message = (
            f"{min_current - cur.size} more predictions needed before comparing with {reference_name} "
            f"({cur.size} of {min_current})"
        )
        return DriftReport(value=None, alert=False, message=message, **base)
    value = population_stability_index(ref, cur)
    alert = value >= threshold
    verdict = "top-1 confidence has shifted from" if alert else "no significant shift from"
    message = f"PSI {value:.3f} {'>=' if alert else '<'} {threshold:g}: {verdict} {reference_name}"
    return DriftReport(value=value, alert=alert, message=message, **base)


def _proportions(values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(inner_edges, values, side="right"), minlength=inner_edges.size + 1)
    return np.maximum(counts / values.size, PSI_FLOOR)


def _finite_1d(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        raise MonitoringValueError(f"{name} values must be finite, got {int((~np.isfinite(array)).sum())} NaN or inf")
    return array
