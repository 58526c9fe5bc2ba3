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

from classifr.config import Settings
from classifr.monitoring import PredictionLog
from classifr.registry import ModelRegistry

logger = logging.getLogger(__name__)

MAX_TRAFFIC_ANCHORS = 5000  # the newest; more adds training time, not much less churn


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
    images), and so are images the training set holds already.
    """
    path = settings.prediction_log_path
    if not settings.prediction_log or not path.is_file():
        return np.zeros((0, 0), np.float32)
    versions = same_backbone_versions(registry, parent)
    with PredictionLog(path) as log:
        _, features = log.embeddings(
            versions=versions, limit=limit, exclude_labels=exclude_labels, exclude_sha256=exclude_sha256
        )
    logger.info("%d traffic anchors from the prediction log of %s", len(features), ", ".join(versions))
    return features
