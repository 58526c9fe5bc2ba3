"""Frozen-backbone embeddings of project images, cached on disk by backbone fingerprint and image hash.

The head strategy trains only the classifier layer, so each image's pooled backbone features are
computed once and reused by every later run on the same backbone: a rerun embeds only new images.
The cache key is a fingerprint of everything that shapes the features (architecture, the resolved
preprocessing and every backbone weight) plus the image's SHA-256, so a changed backbone or
preprocessing can never serve stale features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from classifr.core.images import ImageLimits, read_image
from classifr.inference.classifier import Classifier, classifier_head  # noqa: F401  (training imports it from here)

logger = logging.getLogger(__name__)

BATCH_SIZE = 32


def backbone_fingerprint(classifier: Classifier) -> str:
    """SHA-256 over the architecture, the preprocessing and every weight except the head's."""
    model = classifier.model
    head_params = {id(p) for p in classifier_head(model).parameters()}
    digest = hashlib.sha256(type(model).__name__.encode())
    digest.update(repr(classifier.preprocess).encode())
    digest.update(json.dumps(getattr(model.config, "architecture", None) or model.config.model_type).encode())
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if id(tensor) in head_params:
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """Features per image hash for one backbone, in append-only .npz shards under `root/<fingerprint>`."""

    def __init__(self, root: Path, fingerprint: str) -> None:
        self.folder = Path(root) / fingerprint[:32]
        self.folder.mkdir(parents=True, exist_ok=True)
        self._features: dict[str, np.ndarray] = {}
        for shard in sorted(self.folder.glob("*.npz")):
            with np.load(shard) as data:
                for sha, row in zip(data["sha256"].tolist(), data["features"]):
                    self._features[sha] = row

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._features

    def __len__(self) -> int:
        return len(self._features)

    def get(self, sha256s: Sequence[str]) -> np.ndarray:
        return np.stack([self._features[sha] for sha in sha256s]).astype(np.float32)

    def add(self, sha256s: Sequence[str], features: np.ndarray) -> None:
        """Store new rows as one shard, written to a temp file and renamed (a crash leaves no half shard)."""
        if not sha256s:
            return
        name = hashlib.sha256("".join(sha256s).encode()).hexdigest()[:16]
        temporary = self.folder / f".{name}.{os.getpid()}.tmp.npz"
        np.savez(temporary, sha256=np.array(sha256s), features=features.astype(np.float16))
        os.replace(temporary, self.folder / f"{name}.npz")
        for sha, row in zip(sha256s, features.astype(np.float16)):
            self._features[sha] = row


def embed_files(
    classifier: Classifier,
    files: dict[str, Path],
    cache: EmbeddingCache,
    *,
    limits: ImageLimits = ImageLimits(),
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Features for `files` (sha256 -> path), embedding only those not cached; rows in `files` order."""
    missing = [sha for sha in files if sha not in cache]
    logger.info("embeddings: %d cached, %d to compute", len(files) - len(missing), len(missing))
    with tqdm(total=len(missing), desc="embedding", unit="img", disable=not progress or not missing) as bar:
        for start in range(0, len(missing), BATCH_SIZE):
            batch = missing[start : start + BATCH_SIZE]
            images = [read_image(files[sha], limits=limits, min_side=classifier.min_side).image for sha in batch]
            features, _ = classifier.features_and_logits(images)
            cache.add(batch, features.numpy())
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(start + len(batch), len(missing))
    return cache.get(list(files))
