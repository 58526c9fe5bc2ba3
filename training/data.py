"""The images a training run learns from and is evaluated on.

Rows come from the project dataset and from any `--dataset SOURCE` (imported once into its own
cached imagefolder, so external data gets the same hashing and dedup). The held-out images are
chosen by `classifr.data.split.held_out` over all of them, label by label: never trained on, only
evaluated. Images that contributors gave more than one label (conflicts) are left out of both
until a maintainer settles them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifr.data.dataset import ProjectDataset
from classifr.data.split import MIN_HELD_OUT, held_out, photos_to_measure
from classifr.core.errors import ClassifrError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    sha256: str
    path: Path
    label: str
    source: str  # import | upload | correction | confirmation


@dataclass(frozen=True)
class TrainingData:
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]
    conflicts_left_out: int = 0
    sources: dict[str, dict] = field(default_factory=dict)  # name -> {"fingerprint", "images", "by_source"}

    @property
    def labels(self) -> list[str]:
        """Labels that have training images, sorted ignoring case (a stable order for new heads)."""
        return sorted({s.label for s in self.train}, key=str.casefold)

    def held_out_report(self) -> dict[str, Any]:
        """metrics.json's `held_out`: held-out images per label, and the labels too small to measure."""
        per_label = Counter(s.label for s in self.test)
        images = Counter(s.label for s in (*self.train, *self.test))
        too_few = [
            {"label": label, "held_out": per_label.get(label, 0), "images": count, "add": photos_to_measure(count)}
            for label, count in sorted(images.items(), key=lambda item: item[0].casefold())
            if per_label.get(label, 0) < MIN_HELD_OUT
        ]
        return {"total": len(self.test), "per_label": dict(sorted(per_label.items())), "min_per_label": MIN_HELD_OUT,
                "too_few": too_few}

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "train": dict(Counter(s.label for s in self.train)),
            "test": dict(Counter(s.label for s in self.test)),
        }


def collect(datasets: Sequence[tuple[str, ProjectDataset]]) -> TrainingData:
    """Train and test samples from named project-style datasets; one row per image (first label wins
    across datasets, conflicting labels within a dataset leave the image out)."""
    samples: dict[str, Sample] = {}
    conflicts = 0
    sources = {}
    for name, dataset in datasets:
        rows = dataset.effective_rows()
        conflicted = {c["sha256"] for c in dataset.conflicts()}
        conflicts += len(conflicted)
        for row in rows:
            if row.sha256 not in conflicted and row.sha256 not in samples:
                samples[row.sha256] = Sample(row.sha256, dataset.root / row.file_name, row.label, row.source)
        sources[name] = {
            "fingerprint": fingerprint(rows),
            "images": len({r.sha256 for r in rows}),
            "by_source": dict(Counter(r.source for r in rows)),
        }
    by_label: dict[str, list[str]] = defaultdict(list)
    for sample in samples.values():
        by_label[sample.label].append(sample.sha256)
    held = held_out(by_label)  # stratified by label over all datasets together (classifr.data.split)
    train = {sha: s for sha, s in samples.items() if sha not in held}
    test = {sha: s for sha, s in samples.items() if sha in held}
    if not train:
        raise ClassifrError("the training data has no image in the train split: add or import images first")
    logger.info("training data: %d train, %d test images, %d conflicted left out", len(train), len(test), conflicts)
    return TrainingData(tuple(train.values()), tuple(test.values()), conflicts, sources)


def fingerprint(rows) -> str:
    """Identifies exactly which (image, label) rows a version was trained on."""
    digest = hashlib.sha256()
    for key in sorted(f"{r.sha256}:{r.label}" for r in rows):
        digest.update(key.encode())
    return digest.hexdigest()[:16]


def external_dataset(source: str, cache_dir: Path, *, known: Sequence[str] = ()) -> ProjectDataset:
    """`--dataset SOURCE` imported once into `cache_dir/external/<hash>` and reused by later runs."""
    folder = cache_dir / "external" / hashlib.sha256(source.encode()).hexdigest()[:16]
    return imported_once(source, folder, datasets_cache=cache_dir / "datasets", known=known)


def imported_once(source: str, folder: Path, *, datasets_cache: Path, limit: int | None = None,
                  known: Sequence[str] = (), progress: bool = True) -> ProjectDataset:
    """`source` imported into `folder` the first time, then reused (`datasets_cache`: the Arrow
    cache and Hub downloads of `datasets`).

    The import writes into a temporary folder renamed into place only when it is complete, so a
    failed or interrupted import is never mistaken for the data next time.
    """
    from classifr.data.importing import import_dataset

    folder = Path(folder)
    if not folder.is_dir():
        partial = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            report = import_dataset(ProjectDataset(partial), source, limit=limit, known=known,
                                    cache_dir=datasets_cache, progress=progress)
            os.replace(partial, folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        logger.info("imported %s: %d images (%d rejected)", source, report.added, report.rejected)
    return ProjectDataset(folder)
