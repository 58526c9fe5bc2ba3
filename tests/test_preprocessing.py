"""The fast preprocessing path agrees with each model's own image processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from classifr.core.preprocessing import FastPreprocessor, ProcessorPreprocessor, create_preprocessor


def _photos(clothing_dir, count):
    paths = sorted((clothing_dir / "test").rglob("*.jpg"))[:count]
    return [Image.open(p).convert("RGB") for p in paths]


def _assert_close_to_processor(folder, images):
    processor = AutoImageProcessor.from_pretrained(folder)
    fast = create_preprocessor(processor)
    assert isinstance(fast, FastPreprocessor)
    ours = fast(images)
    theirs = processor(images=images, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape
    # Pillow and torchvision resize kernels differ by rounding only; a wrong crop or a wrong
    # mean/std would differ by tenths.
    assert (ours - theirs).abs().mean() < 0.02
    assert torch.quantile((ours - theirs).abs().flatten()[:1_000_000], 0.99) < 0.1
    return fast


@pytest.mark.slow
def test_default_model_preprocessing_matches_timm(default_model_dir, clothing_dir):
    images = _photos(clothing_dir, 6) + [Image.new("RGB", (640, 427), (200, 30, 30))]
    fast = _assert_close_to_processor(default_model_dir, images)
    assert fast.input_size == (224, 224) and fast.resize_shortest == 256


def test_vit_preprocessing_matches(tiny_vit_dir, clothing_dir):
    fast = _assert_close_to_processor(tiny_vit_dir, _photos(clothing_dir, 4))
    assert fast.resize_shortest is None  # ViT warps the whole image to its input size


def test_convnext_preprocessing_matches(tiny_convnext_dir, clothing_dir):
    fast = _assert_close_to_processor(tiny_convnext_dir, _photos(clothing_dir, 4))
    assert fast.resize_shortest == int(64 / 0.875)


def test_landscape_and_portrait_crop_the_center():
    pre = FastPreprocessor(input_size=(4, 4), resize_shortest=4, resample=Image.Resampling.NEAREST, mean=(0, 0, 0), std=(1, 1, 1))
    assert pre.crop_box(8, 4) == (2.0, 0.0, 6.0, 4.0)
    assert pre.crop_box(4, 8) == (0.0, 2.0, 4.0, 6.0)


def test_output_is_channels_last_and_normalised():
    pre = FastPreprocessor(input_size=(8, 8), resize_shortest=None, resample=Image.Resampling.BILINEAR, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = pre([Image.new("RGB", (10, 10), (255, 0, 128))])
    assert batch.shape == (1, 3, 8, 8)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(batch[0, :, 0, 0].numpy(), [1.0, -1.0, 128 / 255 * 2 - 1], atol=1e-6)


def test_unknown_processor_falls_back_to_the_processor_itself():
    class OddProcessor:
        size = {"longest_edge": 300}
        do_resize = True
        do_normalize = True
        calls = 0

        def __call__(self, images, return_tensors):
            OddProcessor.calls += 1
            return {"pixel_values": torch.zeros(len(images), 3, 4, 4)}

    pre = create_preprocessor(OddProcessor())
    assert isinstance(pre, ProcessorPreprocessor) and pre.min_side == 300
    assert pre([Image.new("RGB", (5, 5))]).shape == (1, 3, 4, 4) and OddProcessor.calls == 1
