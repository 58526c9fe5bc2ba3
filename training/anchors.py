"""Anchors from served traffic: the prediction log's embeddings as unlabeled in-domain images.

When labels are added to a model whose old labels have no training data (the ImageNet `v1`),
the head strategy keeps the parent's outputs on *anchors* (Learning without Forgetting), and
churn falls as anchors grow (measured: 200 anchors 5.5%, 1,000 anchors 3.9%). Recent traffic is
the best such set there is: it is the domain the model serves, and its pooled features were
computed at prediction time, so nothing is embedded again.

Features are only comparable within one backbone. A version trained with the head strategy keeps
its parent's backbone, so the usable versions are the parent and its ancestors up to and
including the first one that was not made by the head strategy.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import numpy as np

from classifr.core.config import Settings
from classifr.monitoring.log import PredictionLog
from classifr.versions.registry import ModelRegistry

logger = logging.getLogger(__name__)

MAX_TRAFFIC_ANCHORS = 5000  # the newest; more adds training time, not much less churn
# Traffic is unlabeled, so it holds images of the new labels too (hats were served before "hat"
# existed); anchoring those to the old outputs costs recall. A traffic image is left out when it is
# at least as close (cosine) to a new label's mean as the least typical quarter of that label's own
# training images. Measured (benchmarks/add_labels.py, 1,000 served images, hat and shorts added to
# v1): without this filter 81.0% recall at 0.9% churn; with it 95.2% at 1.4%; the result is stable
# from 20% to 30%.
LOOK_ALIKE_QUANTILE = 0.25


def same_backbone_versions(registry: ModelRegistry, parent: str) -> list[str]:
    """`parent` and the ancestors it shares its backbone with, nearest first."""
    by_version = {info.version: info for info in registry.list_versions()}
    chain, current = [], by_version.get(parent)
    while current is not None:
        chain.append(current.version)
        if current.metadata.get("strategy") != "head" or current.parent is None:
            break
        current = by_version.get(current.parent)
    return chain


def look_alikes(anchors: np.ndarray, new_label_features: list[np.ndarray], *, quantile: float = LOOK_ALIKE_QUANTILE) -> np.ndarray:
    """A boolean mask of the anchors that look like one of the new labels (see LOOK_ALIKE_QUANTILE)."""
    mask = np.zeros(len(anchors), dtype=bool)
    if not len(anchors):
        return mask
    unit_anchors = _unit(anchors)
    for features in new_label_features:
        if not len(features):
            continue
        unit = _unit(features)
        mean = _unit(unit.mean(0, keepdims=True))[0]
        threshold = np.quantile(unit @ mean, quantile)
        mask |= unit_anchors @ mean >= threshold
    return mask


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def traffic_anchors(
    settings: Settings,
    registry: ModelRegistry,
    parent: str,
    *,
    exclude_labels: Collection[str] = (),
    exclude_sha256: Collection[str] = (),
    limit: int = MAX_TRAFFIC_ANCHORS,
) -> np.ndarray:
    """Pooled features of recent predictions by versions sharing `parent`'s backbone, as float32 [n, d].

    Predictions whose top-1 or corrected label is a new label are left out (they are not "other"
    images), and so are images the training set holds already: by hash, and every prediction a
    contributor answered (its photo joined the dataset, re-encoded without metadata, so under
    another hash; docs/privacy.md).
    """
    path = settings.prediction_log_path
    if not settings.prediction_log or not path.is_file():
        return np.zeros((0, 0), np.float32)
    versions = same_backbone_versions(registry, parent)
    with PredictionLog(path) as log:
        _, features = log.embeddings(
            versions=versions, limit=limit, exclude_labels=exclude_labels, exclude_sha256=exclude_sha256,
            exclude_feedback=True,
        )
    logger.info("%d traffic anchors from the prediction log of %s", len(features), ", ".join(versions))
    return features
