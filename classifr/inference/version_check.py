"""The checks a version passes before it may serve as production (docs/retraining.md, "Promotion checks").

Every path that makes a version production goes through `load_promotable` (the service's promote,
rollback and production follower) or `check_promotable` (the CLI, training): a version is refused,
with a one-line `VersionCheckError`, when

1. a file differs from its checksum or is missing (classifr.versions.folder),
2. it does not load (a truncated or malformed weights file, a broken config),
3. it gives non-finite scores on a probe image (scrambled weights), or
4. its verified ONNX graph disagrees with its weights on the probe images (logits beyond the
   export's own tolerance: classifr.inference.onnx_export).

The probe images are synthetic (gradients and a checkerboard, made here): an installed app has no
photos to hand, and finite, consistent outputs are all that is checked, not accuracy.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError, VersionCheckError
from classifr.inference.classifier import Classifier
from classifr.inference.onnx_backend import OnnxClassifier, create_session, on_backend, verified_export
from classifr.inference.onnx_export import graph_disagreement
from classifr.versions.folder import verify_version_files

logger = logging.getLogger(__name__)

PROBE_SIDE = 256


def probe_images(side: int = PROBE_SIDE) -> list[Image.Image]:
    """Four deterministic RGB images: horizontal and vertical colour gradients, a diagonal one, a checkerboard."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    across, down = np.meshgrid(ramp, ramp)
    checker = ((np.indices((side, side)).sum(axis=0) // 32) % 2 * 255).astype(np.float32)
    channels = [
        (across, down, 255 - across),
        (down, 255 - down, across),
        ((across + down) / 2, 255 - (across + down) / 2, down),
        (checker, 255 - checker, checker),
    ]
    return [Image.fromarray(np.stack(rgb, axis=-1).astype(np.uint8), "RGB") for rgb in channels]


def load_promotable(folder: Path, *, version: str, settings: Settings) -> Classifier:
    """Load `version` from `folder` on the configured backend, refusing it (VersionCheckError) if it fails a check."""
    started = time.perf_counter()
    try:
        verify_version_files(Path(folder), name=version)  # its message names the version already
    except ClassifrError as err:
        raise VersionCheckError(str(err)) from err
    try:
        reference = Classifier.load(folder, version=version)
        served = on_backend(reference, folder, backend=settings.backend, num_threads=settings.num_threads)
    except ClassifrError as err:
        raise VersionCheckError(f"{version} does not load: {err}") from err
    probes = probe_images()
    _require_finite(reference, probes)
    _require_matching_graph(reference, served, folder, probes, settings.num_threads)
    logger.info("%s passed its checks in %.2f s", version, time.perf_counter() - started)
    return served


def check_promotable(folder: Path, *, version: str, settings: Settings) -> None:
    """`load_promotable` for callers that only need the verdict (the CLI, training)."""
    load_promotable(folder, version=version, settings=settings)


def _require_finite(reference: Classifier, probes: list[Image.Image]) -> None:
    logits = reference.logits(probes)
    if not bool(torch.isfinite(logits).all()):
        raise VersionCheckError(f"{reference.version} gives non-finite scores on a probe image: its weights are damaged")


def _require_matching_graph(
    reference: Classifier, served: Classifier, folder: Path, probes: list[Image.Image], num_threads: int
) -> None:
    """The version's verified ONNX graph, served or not, must agree with its PyTorch weights."""
    graph, _, _ = verified_export(folder)
    if graph is None:
        return
    version = reference.version
    try:
        session = served.session if isinstance(served, OnnxClassifier) else create_session(graph, num_threads=num_threads)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for a corrupt graph
        raise VersionCheckError(f"the ONNX graph of {version} does not load: {type(err).__name__}") from err
    disagreement = graph_disagreement(reference, session, probes)
    if disagreement is not None:
        raise VersionCheckError(f"the ONNX graph of {version} disagrees with its weights: {disagreement}")
