"""Which images are held out for evaluation: stratified by label, stable, decided by image content.

Two layers (docs/retraining.md#the-held-out-split):

* Each image's *bucket* is a number 0-99 from its SHA-256. Buckets below `TEST_PERCENT` are the
  `test` split written into the dataset row (`split_of`), for every label alike. That share never
  moves: whatever is added later, such an image stays held out.
* A share alone can leave a small label with no held-out image at all (20 photos: about 1 in 25
  labels gets none). So within each label the images are ranked by (bucket, hash) and at least
  `min(MIN_HELD_OUT, images // 5)` of the first ones are held out: 20% of a small label, 5 once it
  has 25 images. The held-out set of a label is always a prefix of that ranking, so adding photos
  moves an existing image only while the label is small: a new photo ranked before the label's
  last held-out one takes its place, and every fifth photo holds out one more.

Training (training.data), `classifr evaluate` and the dataset's counts use `held_out`; the row's
`split` field keeps the share, which is what `datasets.load_dataset("imagefolder")` users see.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from classifr.core.errors import ClassifrError

logger = logging.getLogger(__name__)

TEST_PERCENT = 15  # share of every label held out by hash bucket
MIN_HELD_OUT = 5  # fewer held-out images cannot measure a label (one image moves recall by 20 points)
SMALL_LABEL_DIVISOR = 5  # a small label holds out at least one image in five (20%)


def bucket_of(sha256: str) -> int:
    """0-99, fixed by the image's hash."""
    try:
        return int(sha256[:8], 16) % 100
    except ValueError:
        raise ClassifrError(f"not a SHA-256 hex digest: {sha256!r}") from None


def split_of(sha256: str) -> str:
    """The split written into the dataset row: `test` for the `TEST_PERCENT` share of buckets."""
    return "test" if bucket_of(sha256) < TEST_PERCENT else "train"


def minimum_held_out(num_images: int) -> int:
    """Images of a label held out at least, whatever their hashes: 20% of a small label, at most 5."""
    return min(MIN_HELD_OUT, num_images // SMALL_LABEL_DIVISOR)


def photos_to_measure(num_images: int) -> int:
    """Photos to add to a label of `num_images` before `MIN_HELD_OUT` of them are surely held out."""
    return max(0, MIN_HELD_OUT * SMALL_LABEL_DIVISOR - num_images)


def held_out_of_label(sha256s: Iterable[str]) -> list[str]:
    """The held-out images of one label, in rank order (bucket, then hash)."""
    ranked = sorted(set(sha256s), key=lambda sha: (bucket_of(sha), sha))
    by_share = sum(1 for sha in ranked if bucket_of(sha) < TEST_PERCENT)
    return ranked[: max(by_share, minimum_held_out(len(ranked)))]


def held_out(sha256s_by_label: Mapping[str, Iterable[str]]) -> set[str]:
    """The hashes held out for evaluation, label by label (see the module docstring)."""
    chosen: set[str] = set()
    for sha256s in sha256s_by_label.values():
        chosen.update(held_out_of_label(sha256s))
    return chosen
