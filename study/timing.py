"""Inference latency of every benchmark run, measured together so the ratios hold on a noisy machine.

All runs are timed in the same rounds, one after the other inside each round, and each number is
the median over rounds: a burst of load from elsewhere slows one round of every run instead of
every round of one run. The input is already decoded (the decode cost is the same for all models
and would hide their differences); each run's own resizing, feature extraction and forward pass
are inside the timing.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

ROUNDS = 3
CALLS_PER_ROUND = 5  # batch-1 calls per round: one call of a few ms is at the mercy of the scheduler
BATCH = 32


def measure_latency(
    predictors: Mapping[str, Callable[[Sequence[Image.Image]], np.ndarray]],
    images: Sequence[Image.Image],
    *,
    rounds: int = ROUNDS,
    batch: int = BATCH,
) -> dict[str, dict[str, float]]:
    """`{name: {"batch1_ms": ms per image, "batch32_ms": ms per image}}`, medians over `rounds`
    (batch 1: over `CALLS_PER_ROUND` calls in each round)."""
    if not images:
        raise ValueError("latency needs at least one image")
    one = [images[0]]
    many = [images[i % len(images)] for i in range(batch)]
    for predict in predictors.values():  # warm-up: first calls allocate and pick kernels
        predict(one)
        predict(many)
    samples: dict[str, dict[str, list[float]]] = {name: {"batch1_ms": [], "batch32_ms": []} for name in predictors}
    names = list(predictors)
    for round_ in range(rounds):
        # Each round starts with another run, so no run is always timed right after the same one.
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            predict = predictors[name]
            samples[name]["batch1_ms"] += [_seconds(predict, one) * 1000 for _ in range(CALLS_PER_ROUND)]
            samples[name]["batch32_ms"].append(_seconds(predict, many) * 1000 / batch)
    result = {name: {key: round(statistics.median(values), 3) for key, values in timing.items()}
              for name, timing in samples.items()}
    logger.info("latency over %d rounds: %s", rounds, result)
    return result


def _seconds(predict: Callable[[Sequence[Image.Image]], np.ndarray], images: Sequence[Image.Image]) -> float:
    started = time.perf_counter()
    predict(images)
    return time.perf_counter() - started
