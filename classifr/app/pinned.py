"""Versions loaded for pinned calls: a small cache, least recently used first out, bounded in memory.

A program that pins `v2` (docs/api.md, "Pinned versions") must get exactly v2, whatever production
is now. Production and the canary's candidate are already loaded and are never counted here; any
other version is loaded on its first pinned call (after the same checks as a promotion) and kept
while the versions in the cache fit in `max_bytes`. A version's size is estimated from its weight
files (safetensors and ONNX): what the loaded model holds, give or take its activations.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from classifr.core.errors import VersionCheckError

if TYPE_CHECKING:
    from classifr.inference.classifier import Classifier

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".bin")


def weights_size(folder: Path) -> int:
    """Bytes of the weight files in a version folder: the estimate of what loading it takes."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())


class PinnedVersions:
    """version -> loaded Classifier, for calls that name a version that is neither production nor candidate.

    `load(version)` returns (classifier, folder): it is called outside the cache's lock, once per
    version even when many calls ask for it at the same moment. At least one version is always kept,
    even when it alone is larger than `max_bytes`: otherwise a pinned call could never be served.
    """

    def __init__(self, load: Callable[[str], tuple[Classifier, Path]], max_bytes: int) -> None:
        self._load = load
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, tuple[Classifier, int]] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        # A version that failed to load or its checks: raised again at once, not loaded on every call.
        self._refused: dict[str, Exception] = {}

    def get(self, version: str) -> Classifier:
        with self._lock:
            hit = self._hit(version)
            if hit is not None:
                return hit
            loading = self._loading.setdefault(version, threading.Lock())
        with loading:  # a second caller of the same version waits for the first load
            with self._lock:
                hit = self._hit(version)
                refused = self._refused.get(version)
            if hit is not None:
                return hit
            if refused is not None:
                raise refused
            try:
                classifier, folder = self._load(version)
            except VersionCheckError as err:  # damaged for good; a Hub outage, say, is tried again
                with self._lock:
                    self._refused[version] = err
                raise
            size = weights_size(folder)
            with self._lock:
                self._loaded[version] = (classifier, size)
                self._loading.pop(version, None)
                self._evict()
            logger.info("loaded %s for pinned calls (%.0f MB of weights; %d pinned versions kept)",
                        version, size / 1e6, len(self._loaded))
            return classifier

    def versions(self) -> list[str]:
        """Loaded versions, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._loaded.values())

    def take(self, version: str) -> Classifier | None:
        """Remove and return a loaded version (it is becoming production or candidate), or None."""
        with self._lock:
            entry = self._loaded.pop(version, None)
        return None if entry is None else entry[0]

    def _hit(self, version: str) -> Classifier | None:
        entry = self._loaded.get(version)
        if entry is None:
            return None
        self._loaded.move_to_end(version)
        return entry[0]

    def _evict(self) -> None:
        while len(self._loaded) > 1 and sum(size for _, size in self._loaded.values()) > self.max_bytes:
            version, _ = self._loaded.popitem(last=False)
            logger.info("unloaded %s: pinned versions are bounded to %.0f MB", version, self.max_bytes / 1e6)
