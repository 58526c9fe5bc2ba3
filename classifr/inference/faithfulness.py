"""How far to trust an explanation's map: deletion and insertion curves, and the randomisation check.

Deletion: replace the pixels the map ranks highest by a baseline, 0%, 10%, ..., 100% of them, and
watch the target's probability; a map that shows what the model used makes it fall fast (a low
area under the curve). Insertion is the reverse: start from the baseline and reveal the top pixels
first; a faithful map makes the probability rise fast (a high area). The model-randomisation check
(Adebayo et al. 2018, "Sanity checks for saliency maps") re-initialises the top layers: a map that
barely changes was not reading the model. What the numbers mean and their limits: docs/features.md,
"Faithfulness".
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from classifr.inference.classifier import classifier_head
from classifr.inference.explain import Explainer, ExplainError

logger = logging.getLogger(__name__)

FRACTIONS = tuple(step / 10 for step in range(11))  # 0.0, 0.1, ..., 1.0 of the pixels
REMOVED = 0.1  # the share of the image the plain-words sentence removes
# A drop of less than a tenth of the intact probability counts as small, and the sentence warns that
# the map may not show what the model used: on real clothing photos with the default model, removing
# the top 10% of an inverted Grad-CAM map (1 - map) mostly cost less than that, Grad-CAM's own more.
SMALL_DROP = 0.1
BLUR_SIGMA_PER_SIDE = 1 / 20  # the baseline's blur: sigma of 1/20 of the input's shorter side (11 px at 224)
RANDOMIZATION_SEED = 0
INFIDELITY_SAMPLES = 16  # Captum infidelity: noisy copies of the input per image
INFIDELITY_NOISE = 0.1  # their Gaussian noise's standard deviation, in normalised model-input units


@dataclass(frozen=True)
class Faithfulness:
    target: str
    score: float  # the target's probability on the intact image
    after_removal: float  # ... once the 10% of pixels the map ranks highest are replaced by the baseline
    deletion: tuple[float, ...]  # the target's probability with FRACTIONS of the top pixels removed
    insertion: tuple[float, ...]  # ... with FRACTIONS of the top pixels revealed on the baseline
    deletion_auc: float  # lower is more faithful
    insertion_auc: float  # higher is more faithful
    seconds: float

    def sentence(self) -> str:
        """The numbers in plain words, e.g. for the line beside the heatmap."""
        start, end = _percent(self.score), _percent(self.after_removal)
        removing = f"Removing the {REMOVED:.0%} of the image this map points at"
        if self.after_removal > self.score:
            return f"{removing} raises the probability of {self.target!r} from {start} to {end}: {_DOUBT}"
        if self.after_removal > self.score * (1 - SMALL_DROP):
            return f"{removing} drops the probability of {self.target!r} only from {start} to {end}: {_DOUBT}"
        return f"{removing} drops the probability of {self.target!r} from {start} to {end}."

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "score": self.score,
            "after_removal": self.after_removal,
            "fractions": list(FRACTIONS),
            "deletion": list(self.deletion),
            "insertion": list(self.insertion),
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "seconds": self.seconds,
            "sentence": self.sentence(),
        }


_DOUBT = "the map may not show what the model used."


def _percent(probability: float) -> str:
    return f"{probability:.1%}" if 0 < probability < 0.01 else f"{probability:.0%}"


def measure(explainer: Explainer, pixels: torch.Tensor, heatmap: np.ndarray, target_index: int) -> Faithfulness:
    """Deletion and insertion curves of `heatmap` (H, W) for the target, on `pixels` (1, 3, H, W)
    as the model sees them (`explainer.classifier.preprocess([image])`): two batched forward passes."""
    from sklearn.metrics import auc

    if pixels.ndim != 4 or pixels.shape[0] != 1:
        raise ExplainError(f"faithfulness measures one image of shape (1, 3, H, W), got {tuple(pixels.shape)}")
    if tuple(heatmap.shape) != tuple(pixels.shape[-2:]):
        raise ExplainError(f"the heatmap's shape {tuple(heatmap.shape)} is not the input's {tuple(pixels.shape[-2:])}")
    names = explainer.classifier.labels.names
    if not 0 <= target_index < len(names):
        raise ExplainError(f"target index {target_index} is not one of the model's {len(names)} labels")
    started = time.perf_counter()
    top_first = _top_first_masks(heatmap)
    baseline = blurred(pixels)
    deleted = torch.where(top_first, baseline, pixels)
    inserted = torch.where(top_first, pixels, baseline)
    deletion, insertion = _probabilities(explainer, deleted, target_index), _probabilities(explainer, inserted, target_index)
    return Faithfulness(
        target=names[target_index],
        score=deletion[0],
        after_removal=deletion[FRACTIONS.index(REMOVED)],
        deletion=deletion,
        insertion=insertion,
        deletion_auc=float(auc(FRACTIONS, deletion)),
        insertion_auc=float(auc(FRACTIONS, insertion)),
        seconds=time.perf_counter() - started,
    )


def blurred(pixels: torch.Tensor) -> torch.Tensor:
    """The baseline that removed pixels get: a strong Gaussian blur of the same image, in model space.

    Removal must not inject what the model never saw in training: black or grey squares are
    out-of-distribution and can lower a probability by themselves, whatever the map said. A blur
    keeps colours and layout and removes the detail the map claims the decision rests on. The
    kernel stops at two sigmas, which keeps the blur a few tens of milliseconds at 224 px.
    """
    from torchvision.transforms.functional import gaussian_blur

    sigma = max(0.5, min(pixels.shape[-2:]) * BLUR_SIGMA_PER_SIDE)
    size = 2 * math.ceil(2 * sigma) + 1
    return gaussian_blur(pixels, [size, size], [sigma, sigma])


def _top_first_masks(heatmap: np.ndarray) -> torch.Tensor:
    """(len(FRACTIONS), 1, H, W) booleans: the top `fraction` of pixels by the map (ties in pixel order)."""
    order = np.argsort(-heatmap.ravel(), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    counts = np.array([round(fraction * order.size) for fraction in FRACTIONS])
    masks = rank[None, :] < counts[:, None]
    return torch.from_numpy(masks).reshape(len(FRACTIONS), 1, *heatmap.shape)


def _probabilities(explainer: Explainer, batch: torch.Tensor, target_index: int) -> tuple[float, ...]:
    return tuple(float(p) for p in explainer.probabilities(batch)[:, target_index])


def randomized_rank_correlation(explainer: Explainer, image: Image.Image, method: str, target: str | None) -> float:
    """Spearman rank correlation between the map of `method` and its map on a copy whose classifier
    head and last stage (Grad-CAM's) are re-initialised: near 1 means the map ignores those weights."""
    from scipy.stats import spearmanr

    original = explainer.explain(image, method=method, target=target)
    randomized = Explainer(explainer.classifier)  # its own deep copy: the original and the serving model stay as they are
    _reinitialize(randomized)
    changed = randomized.explain(image, method=method, target=original.target)
    first, second = original.heatmap.ravel(), changed.heatmap.ravel()
    if first.min() == first.max() or second.min() == second.max():
        return 0.0  # a constant map keeps none of the other's ranking (Spearman is undefined there)
    return float(spearmanr(first, second).statistic)


def _reinitialize(explainer: Explainer) -> None:
    modules = [classifier_head(explainer.model)]
    if explainer.gradcam_stage is not None:
        modules.append(explainer.gradcam_stage[1])
    with torch.random.fork_rng(devices=[]):  # seeded, without moving the process's random state
        torch.manual_seed(RANDOMIZATION_SEED)
        for module in modules:
            for part in module.modules():
                reset = getattr(part, "reset_parameters", None)
                if callable(reset):
                    reset()


def captum_infidelity(explainer: Explainer, pixels: torch.Tensor, attribution: torch.Tensor | np.ndarray, target_index: int) -> float:
    """Captum's infidelity of an attribution (lower is better), for the benchmark, not the app.

    `attribution` is (1, 3, H, W) or a heatmap (H, W), which counts for each channel alike. The
    perturbations are INFIDELITY_SAMPLES copies with Gaussian noise (std INFIDELITY_NOISE in
    normalised input units); `normalize=True` rescales the attribution first, so a map in [0, 1]
    and raw attributions compare alike.
    """
    from captum.metrics import infidelity

    attribution = torch.as_tensor(attribution, dtype=pixels.dtype)
    if attribution.ndim == 2:
        attribution = attribution.expand_as(pixels)
    if tuple(attribution.shape) != tuple(pixels.shape):
        raise ExplainError(f"the attribution's shape {tuple(attribution.shape)} is not the input's {tuple(pixels.shape)}")

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn_like(inputs) * INFIDELITY_NOISE
        return noise, inputs - noise

    with explainer.exclusive(), torch.no_grad():
        value = infidelity(
            explainer.forward, perturb, pixels.contiguous(), attribution.contiguous(), target=target_index,
            n_perturb_samples=INFIDELITY_SAMPLES, max_examples_per_batch=INFIDELITY_SAMPLES, normalize=True,
        )
    return float(value[0])
