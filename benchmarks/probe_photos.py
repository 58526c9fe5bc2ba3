"""Make a probe folder for `classifr benchmark --probe`: clothing photos as a phone might take them.

    python benchmarks/probe_photos.py /tmp/probe            # then:
    classifr benchmark --quick --dataset ../shared/datasets/clothing-small --probe /tmp/probe

clothing-small's photos are studio-like: one garment, centred, on a plain background. Users'
own photos are not. With no such photos on this machine, the probe takes clothing-small's
*validation* split (never in the benchmark's train or eval images) and re-shoots each photo the
way a phone does: tilted, off-centre and closer, darker or brighter, softer, saved as a small
low-quality JPEG. Seeded, so the same folder every time. A real probe is a folder of your own
labeled photos, `DIR/<label>/<image>`.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = REPO_ROOT.parent / "shared" / "datasets" / "clothing-small" / "validation"


def reshoot(image: Image.Image, rng: random.Random) -> Image.Image:
    """One photo as a hurried phone shot: tilt, off-centre crop, exposure, blur, small size."""
    image = image.convert("RGB").rotate(rng.uniform(-20, 20), resample=Image.Resampling.BICUBIC, expand=False,
                                        fillcolor=(rng.randrange(256),) * 3)
    width, height = image.size
    keep = rng.uniform(0.6, 0.85)  # closer than the studio framing, part of the garment cut off
    crop_w, crop_h = int(width * keep), int(height * keep)
    left, top = rng.randrange(width - crop_w + 1), rng.randrange(height - crop_h + 1)
    image = image.crop((left, top, left + crop_w, top + crop_h))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.55, 1.35))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.3))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    return image.resize((max(1, crop_w * 2 // 3), max(1, crop_h * 2 // 3)), Image.Resampling.BILINEAR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the probe folder to write (<label>/<image>.jpg)")
    parser.add_argument("--per-label", type=int, default=20, help="photos per label (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    written = 0
    for folder in sorted(p for p in SOURCE.iterdir() if p.is_dir()):
        target = args.out / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for photo in sorted(folder.glob("*.jpg"))[: args.per_label]:
            with Image.open(photo) as image:
                reshoot(image, rng).save(target / photo.name, quality=rng.randint(35, 60))
            written += 1
    print(f"wrote {written} probe photos under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
