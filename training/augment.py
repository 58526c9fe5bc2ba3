"""Augmentation for the full strategy: per image on the decoded photo, and per batch (MixUp/CutMix).

Per image, only geometry and colour change, and only before the served preprocessing resizes and
normalises the photo, so every pixel the network trains on went through the same resize as at serving
time (docs/retraining.md, "The full strategy"). The policies are torchvision's (TrivialAugment, one
random operation at a random strength, tuning-free; RandAugment), not home-made ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from PIL import Image

logger = logging.getLogger(__name__)

CROP_SCALE = (0.6, 1.0)  # area fraction kept by the random crop
CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class PhotoAugmentation:
    """Random crop (torchvision's RandomResizedCrop box), a coin-flip mirror, then `policy` on the crop."""

    policy: str = "trivialaugment"  # trivialaugment | randaugment | none

    def __call__(self, image: Image.Image) -> Image.Image:
        from torchvision.transforms.v2 import RandomResizedCrop

        # Only the crop box is drawn here; the served preprocessing then resizes the crop, so there
        # is one resample per image, as at serving time.
        top, left, height, width = RandomResizedCrop.get_params(image, scale=list(CROP_SCALE), ratio=list(CROP_RATIO))
        image = image.crop((left, top, left + width, top + height))
        if torch.rand(()) < 0.5:  # torch RNG: seeded per loader worker, so runs are reproducible
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self._policy()(image) if self.policy != "none" else image

    def _policy(self):
        from torchvision.transforms import v2

        if self.policy == "trivialaugment":
            return v2.TrivialAugmentWide(interpolation=v2.InterpolationMode.BILINEAR)
        if self.policy == "randaugment":
            return v2.RandAugment(interpolation=v2.InterpolationMode.BILINEAR)
        raise ValueError(f"unknown augmentation policy {self.policy!r}: trivialaugment, randaugment or none")


class BatchMixer:
    """MixUp or CutMix (torchvision's), chosen per batch; labels become mixed class probabilities."""

    def __init__(self, *, num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> None:
        from torchvision.transforms import v2

        mixers = []
        if mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self._mix = v2.RandomChoice(mixers) if mixers else None

    @property
    def active(self) -> bool:
        return self._mix is not None

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, targets): targets are class indices when inactive, else (batch, classes) probabilities."""
        if self._mix is None:
            return pixel_values, labels
        return self._mix(pixel_values, labels)
