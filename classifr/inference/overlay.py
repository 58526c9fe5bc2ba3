"""Render explanations as pictures: heatmap overlays, side-by-side views, stage grids.

Heatmaps use matplotlib's perceptually uniform "inferno" colormap (dark = no evidence, bright =
strong evidence), upsampled onto the photo at the size it is given (the caller fits it to the
display first, so memory follows the display size). The part of the photo the model never saw
(outside its center crop) is dimmed, so nobody reads meaning into it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from classifr.inference.explain import Explanation, StageMap

logger = logging.getLogger(__name__)

COLORMAP = "inferno"
OVERLAY_ALPHA = 0.55
UNSEEN_BRIGHTNESS = 0.4
VIEWS = ("overlay", "side-by-side", "heatmap")


@functools.lru_cache(maxsize=4)
def colormap_lut(name: str = COLORMAP) -> np.ndarray:
    """(256, 3) uint8 lookup table of a matplotlib colormap."""
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def colorize(heatmap: np.ndarray) -> Image.Image:
    """A [0, 1] heatmap as an RGB image through the colormap."""
    indices = np.clip(heatmap * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(colormap_lut()[indices])


def overlay(photo: Image.Image, explanation: Explanation, *, decoded_size: tuple[int, int]) -> Image.Image:
    """The heatmap blended onto `photo` at the photo's size.

    `decoded_size` is the size of the image the explanation was computed on (it may be a reduced
    JPEG draft of the photo); the model's input box is scaled from it to the photo.
    """
    scale_x, scale_y = photo.width / decoded_size[0], photo.height / decoded_size[1]
    left, top, right, bottom = explanation.input_box
    box = (round(left * scale_x), round(top * scale_y), round(right * scale_x), round(bottom * scale_y))
    size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
    # Unseen parts of the photo are dimmed; the seen part is blended with the heatmap. Pasting
    # through a constant mask blends in place: one photo-sized buffer besides the photo and the heat.
    result = photo.point([round(v * UNSEEN_BRIGHTNESS) for v in range(256)] * 3)
    result.paste(photo.crop(box), box[:2])
    heat = colorize(explanation.heatmap).resize(size, Image.Resampling.BILINEAR)
    result.paste(heat, box[:2], Image.new("L", size, round(OVERLAY_ALPHA * 255)))
    return result


def side_by_side(photo: Image.Image, overlaid: Image.Image, *, gap: int = 16) -> Image.Image:
    """The photo and its overlay next to each other, on white."""
    canvas = Image.new("RGB", (photo.width + gap + overlaid.width, max(photo.height, overlaid.height)), "white")
    canvas.paste(photo, (0, 0))
    canvas.paste(overlaid, (photo.width + gap, 0))
    return canvas


def render(photo: Image.Image, explanation: Explanation, *, decoded_size: tuple[int, int], view: str) -> Image.Image:
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    if view == "heatmap":
        return colorize(explanation.heatmap)
    overlaid = overlay(photo, explanation, decoded_size=decoded_size)
    return overlaid if view == "overlay" else side_by_side(photo, overlaid)


def fit(image: Image.Image, max_side: int | None) -> Image.Image:
    """Shrink so the longer side is at most `max_side` (for display); never enlarges."""
    if max_side is None or max(image.size) <= max_side:
        return image
    return ImageOps.contain(image, (max_side, max_side), Image.Resampling.BILINEAR)


def stage_grid(model_input: Image.Image, stages: Sequence[StageMap], *, tile: int = 192, columns: int = 4) -> Image.Image:
    """The model's input crop, then each stage's mean activation, as one captioned grid."""
    caption = 18
    tiles = [("input", model_input)] + [
        (f"{stage.name}: {stage.heatmap.shape[1]}x{stage.heatmap.shape[0]}, {stage.channels} ch", colorize(stage.heatmap))
        for stage in stages
    ]
    rows = -(-len(tiles) // columns)
    canvas = Image.new("RGB", (columns * tile, rows * (tile + caption)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, picture) in enumerate(tiles):
        x, y = (i % columns) * tile, (i // columns) * (tile + caption)
        canvas.paste(picture.resize((tile - 8, tile - 8), Image.Resampling.NEAREST), (x + 4, y + caption))
        draw.text((x + 4, y + 3), title, fill="black")
    return canvas
