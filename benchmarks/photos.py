"""The photos every benchmark measures: one real clothing photo and a 12-megapixel JPEG made from it."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTO = next((REPO_ROOT.parent / "shared" / "datasets" / "clothing-small" / "test" / "shoes").glob("07d88b75-*.jpg"))


def make_12mp_jpeg(folder: Path) -> Path:
    """The real photo upscaled to 4000x3000 and saved as a camera-like JPEG (quality 92)."""
    path = folder / "photo-12mp.jpg"
    Image.open(PHOTO).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=92)
    return path
