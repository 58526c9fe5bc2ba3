"""Turn decoded RGB images into the model's input tensor, as the model's own image processor says.

The settings (sizes, crop, interpolation, mean/std) are read from the model's processor config,
never hand-copied. Known processor shapes (timm wrappers, ViT-style fixed size, ConvNeXt-style
crop_pct, shortest-edge + center-crop) run on a fast path: one Pillow resize of just the crop
region straight to the input size, then a fused scale-and-normalise into a channels-last array.
Anything else falls back to calling the processor itself, slower but always right.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from classifr.core.errors import ModelLoadError

logger = logging.getLogger(__name__)

_RESAMPLE_BY_NAME = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class Preprocessor(Protocol):
    min_side: int  # decoding may shrink an image as long as its shorter side stays >= this

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor: ...


def _center_offset(extra: int, round_half: bool) -> int:
    return int(round(extra / 2.0)) if round_half else extra // 2


@dataclass(frozen=True)
class FastPreprocessor:
    """Resize (shortest edge, or warp to a fixed size), center-crop, rescale and normalise."""

    input_size: tuple[int, int]  # (height, width) the model takes
    resize_shortest: int | None  # None: warp the whole image to input_size
    resample: Image.Resampling
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1 / 255
    # torchvision's CenterCrop (timm) rounds the crop offset; transformers' processors floor it.
    round_crop_offset: bool = False

    @property
    def min_side(self) -> int:
        return self.resize_shortest or max(self.input_size)

    @functools.cached_property
    def _scale_and_offset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rescale and normalise folded into one multiply-add per channel, computed once."""
        std = torch.tensor(self.std, dtype=torch.float32)
        return self.rescale_factor / std, -torch.tensor(self.mean, dtype=torch.float32) / std

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region of the source image that ends up in the model input, in source pixels."""
        if self.resize_shortest is None:
            return (0.0, 0.0, float(width), float(height))
        short, long_ = (width, height) if width <= height else (height, width)
        # Same rounding as transformers' get_resize_output_image_size and torchvision's Resize.
        new_long = int(self.resize_shortest * long_ / short)
        new_w, new_h = (self.resize_shortest, new_long) if width <= height else (new_long, self.resize_shortest)
        crop_h, crop_w = self.input_size
        top = _center_offset(new_h - crop_h, self.round_crop_offset)
        left = _center_offset(new_w - crop_w, self.round_crop_offset)
        sx, sy = width / new_w, height / new_h
        return (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)

    def resize(self, image: Image.Image) -> np.ndarray:
        """One image -> uint8 (H, W, 3) at the model's input size."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        height, width = self.input_size
        # Resizing only the crop region gives the resize-then-crop result with less work.
        resized = image.resize((width, height), self.resample, box=self.crop_box(*image.size))
        return np.asarray(resized)

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = torch.from_numpy(np.stack([self.resize(image) for image in images]))  # (N, H, W, C) uint8
        scale, offset = self._scale_and_offset
        # One fused pass (x * scale + offset), a few times faster than the same in numpy.
        normalized = torch.addcmul(offset, pixels.to(torch.float32), scale)
        # A channels-last view, not a copy: convolutions on CPU prefer this layout.
        return normalized.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class ProcessorPreprocessor:
    """Fallback: the model's own image processor, for processor types the fast path does not know."""

    processor: Any
    min_side: int

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]


def _resample_of(value: Any) -> Image.Resampling:
    if isinstance(value, str):
        try:
            return _RESAMPLE_BY_NAME[value.lower()]
        except KeyError:
            raise ModelLoadError(f"unknown interpolation {value!r} in the model's processor config") from None
    return Image.Resampling(int(value))


def _triple(values: Any, name: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values] * 3))
    if len(values) != 3:
        raise ModelLoadError(f"{name} must have 3 values (RGB), got {values}")
    return values  # type: ignore[return-value]


def _from_timm_data_config(data_config: dict) -> FastPreprocessor | None:
    if data_config.get("crop_mode", "center") != "center":
        return None
    _, height, width = data_config["input_size"]
    crop_pct = data_config.get("crop_pct") or 1.0
    # timm's eval transform: Resize(floor(size / crop_pct)) on the shorter side, CenterCrop(size).
    resize_shortest = math.floor(min(height, width) / crop_pct) if height == width else None
    if resize_shortest is None:
        return None
    return FastPreprocessor(
        input_size=(height, width),
        resize_shortest=resize_shortest,
        resample=_resample_of(data_config.get("interpolation", "bilinear")),
        mean=_triple(data_config["mean"], "mean"),
        std=_triple(data_config["std"], "std"),
        round_crop_offset=True,
    )


def _from_transformers_processor(processor: Any) -> FastPreprocessor | None:
    if not (getattr(processor, "do_resize", False) and getattr(processor, "do_normalize", False)):
        return None
    if not getattr(processor, "do_rescale", True):
        return None
    if any(getattr(processor, name, None) is None for name in ("size", "resample", "image_mean", "image_std")):
        return None
    size = dict(processor.size)
    common = dict(
        resample=_resample_of(processor.resample),
        mean=_triple(processor.image_mean, "image_mean"),
        std=_triple(processor.image_std, "image_std"),
        rescale_factor=float(getattr(processor, "rescale_factor", 1 / 255)),
    )
    if size.get("height") and size.get("width") and not getattr(processor, "do_center_crop", False):
        return FastPreprocessor(input_size=(size["height"], size["width"]), resize_shortest=None, **common)
    shortest = size.get("shortest_edge")
    if shortest and hasattr(processor, "crop_pct"):  # ConvNeXt rule
        if shortest >= 384:
            return FastPreprocessor(input_size=(shortest, shortest), resize_shortest=None, **common)
        return FastPreprocessor(
            input_size=(shortest, shortest), resize_shortest=int(shortest / processor.crop_pct), **common
        )
    crop = getattr(processor, "crop_size", None)
    if shortest and getattr(processor, "do_center_crop", False) and crop:
        crop = dict(crop)
        return FastPreprocessor(input_size=(crop["height"], crop["width"]), resize_shortest=shortest, **common)
    return None


def create_preprocessor(processor: Any) -> Preprocessor:
    """The fastest correct preprocessor for a loaded Transformers image processor."""
    data_config = getattr(processor, "data_config", None)
    fast = _from_timm_data_config(data_config) if data_config else _from_transformers_processor(processor)
    if fast is not None:
        return fast
    logger.info("no fast path for %s; using the processor itself", type(processor).__name__)
    size = dict(getattr(processor, "size", None) or {})
    min_side = int(max([v for v in size.values() if isinstance(v, int)], default=512))
    return ProcessorPreprocessor(processor=processor, min_side=min_side)
