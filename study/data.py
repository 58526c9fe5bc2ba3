"""The images a benchmark compares candidates on: a fixed train/eval split, and the user's probe folder.

Any source the project can import (imagefolder, Parquet, Hub id) is imported once into a cached
project-style folder, so it gets the same hashing, dedup and split as the project dataset: an
image is in the eval split when its SHA-256 says so (about 15%), whatever the seed. The seed only
fixes which images a preset's per-class caps keep, so two runs with the same seed compare the
same images.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from classifr.data.dataset import ProjectDataset
from classifr.core.errors import ClassifrError
from training.data import Sample, collect, imported_once

logger = logging.getLogger(__name__)

PROJECT = "project"  # the source name of the project dataset itself
MIN_IMAGES_PER_LABEL = 2  # a label needs at least this many train images to be learned at all


@dataclass(frozen=True)
class BenchmarkData:
    """Paths and labels of the train and eval images, labels sorted ignoring case."""

    source: str
    labels: tuple[str, ...]
    train_paths: tuple[Path, ...]
    train_labels: tuple[str, ...]
    eval_paths: tuple[Path, ...]
    eval_labels: tuple[str, ...]

    def targets(self, split: str) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[label] for label in (self.train_labels if split == "train" else self.eval_labels)]

    def describe(self) -> dict:
        return {"dataset": self.source, "labels": list(self.labels), "train_images": len(self.train_paths),
                "eval_images": len(self.eval_paths),
                "train_counts": dict(sorted(Counter(self.train_labels).items()))}


def load_benchmark_data(
    source: str | None, cache_dir: Path, dataset_dir: Path, *, seed: int = 0, import_limit: int | None = None,
    max_train_per_class: int | None = None, max_eval_per_class: int | None = None, progress: bool = True,
) -> BenchmarkData:
    """The benchmark's images from `source` (None: the project dataset), capped per class with `seed`."""
    dataset = ProjectDataset(dataset_dir) if source is None else _imported(source, cache_dir, import_limit, progress)
    data = collect([(source or PROJECT, dataset)])
    rng = random.Random(seed)
    train = _capped(data.train, max_train_per_class, rng)
    counts = Counter(s.label for s in train)
    too_few = sorted(label for label, n in counts.items() if n < MIN_IMAGES_PER_LABEL)
    if too_few:
        logger.warning("left out labels with fewer than %d train images: %s", MIN_IMAGES_PER_LABEL, too_few)
    labels = tuple(sorted((label for label, n in counts.items() if n >= MIN_IMAGES_PER_LABEL), key=str.casefold))
    if len(labels) < 2:
        raise ClassifrError(f"a benchmark needs at least 2 labels with {MIN_IMAGES_PER_LABEL}+ train images; "
                            f"{source or 'the project dataset'} has {sorted(counts) or 'none'}")
    kept = set(labels)
    train = [s for s in train if s.label in kept]
    evaluation = _capped([s for s in data.test if s.label in kept], max_eval_per_class, rng)
    if not evaluation:
        raise ClassifrError(f"{source or 'the project dataset'} has no image in the eval split for {list(labels)}")
    logger.info("benchmark data: %d train, %d eval images, %d labels", len(train), len(evaluation), len(labels))
    return BenchmarkData(
        source=source or PROJECT, labels=labels,
        train_paths=tuple(s.path for s in train), train_labels=tuple(s.label for s in train),
        eval_paths=tuple(s.path for s in evaluation), eval_labels=tuple(s.label for s in evaluation),
    )


def _imported(source: str, cache_dir: Path, limit: int | None, progress: bool) -> ProjectDataset:
    """`source` imported once (with at most `limit` images, a fixed sample) into a cached folder."""
    key = hashlib.sha256(f"{source}\0{limit}".encode()).hexdigest()[:16]
    return imported_once(source, Path(cache_dir) / "benchmark-data" / key, datasets_cache=Path(cache_dir) / "datasets",
                         limit=limit, progress=progress)


def _capped(samples: Sequence[Sample], per_class: int | None, rng: random.Random) -> list[Sample]:
    """At most `per_class` samples of each label, a seeded random choice, in a stable order."""
    ordered = sorted(samples, key=lambda s: s.sha256)  # independent of the order the files were listed in
    if per_class is None:
        return ordered
    by_label: dict[str, list[Sample]] = defaultdict(list)
    for sample in ordered:
        by_label[sample.label].append(sample)
    kept = []
    for label in sorted(by_label):
        group = by_label[label]
        kept += group if len(group) <= per_class else rng.sample(group, per_class)
    return sorted(kept, key=lambda s: s.sha256)


@dataclass(frozen=True)
class ProbeImages:
    folder: Path
    paths: tuple[Path, ...]
    labels: tuple[str, ...]
    unknown: dict[str, int]  # folder names that are not benchmark labels -> images left out


def load_probe(folder: Path, labels: Sequence[str]) -> ProbeImages:
    """The user's own labeled photos, `folder/<label>/<image>`; label folders match ignoring case.

    Images under a folder that is not one of `labels` are left out and counted (the models cannot
    predict them); a folder with no usable image at all is an error.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ClassifrError(f"probe folder {folder} does not exist or is not a folder")
    by_name = {label.casefold(): label for label in labels}
    paths, found, unknown = [], [], Counter()
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = sorted(p for p in sub.rglob("*") if p.is_file() and not p.name.startswith("."))
        label = by_name.get(sub.name.casefold())
        if label is None:
            unknown[sub.name] += len(images)
            continue
        paths += images
        found += [label] * len(images)
    if unknown:
        logger.warning("probe: left out folders that are not labels of the benchmark: %s", dict(unknown))
    if not paths:
        raise ClassifrError(f"probe folder {folder} has no image under a label folder; expected "
                            f"{folder}/<label>/<image> with labels from {list(labels)}")
    return ProbeImages(folder, tuple(paths), tuple(found), dict(unknown))
