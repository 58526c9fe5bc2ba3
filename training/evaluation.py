"""Evaluate a version on the project's held-out images, against another version.

    classifr evaluate [V] [--against REF] [--json]        # default: candidate (else production) against production
    python -m training.evaluation ...                     # the same

Every test image goes through the served path (decode, preprocessing, forward on the backend
serving would use), so the numbers are what users get; the metrics are those of `classifr train` (training.metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Collection, Sequence
from typing import Any

from classifr.core.config import Settings
from classifr.data.dataset import ProjectDataset
from classifr.core.errors import ClassifrError, VersionNotFoundError
from classifr.core.images import read_image
from classifr.inference.classifier import Classifier, Prediction, configure_runtime
from classifr.inference.onnx_backend import load_classifier
from training.data import collect
from training.metrics import classification_metrics, compare_with_parent

logger = logging.getLogger(__name__)

BATCH_SIZE = 32


def top1(classifier: Classifier, paths: Sequence) -> list[str]:
    """The top label of every image, through the same decode and preprocessing as serving."""
    return [prediction.label for prediction in top1_scored(classifier, paths)]


def top1_scored(classifier: Classifier, paths: Sequence) -> list[Prediction]:
    """The top label and its probability for every image, decoded and preprocessed as when serving."""
    best: list[Prediction] = []
    for start in range(0, len(paths), BATCH_SIZE):
        images = [read_image(p, min_side=classifier.min_side).image for p in paths[start : start + BATCH_SIZE]]
        best += [ranked[0] for ranked in classifier.predict(images, top_k=1)]
    return best


def top1_scored_and_among(
    classifier: Classifier, paths: Sequence, allowed: Collection[str]
) -> tuple[list[Prediction], list[str] | None]:
    """Each image's top label (with its probability) and its best label within `allowed` (the
    candidate choosing among its parent's labels only); None for the latter when no label is allowed."""
    allowed = set(allowed) & set(classifier.labels.names)
    best: list[Prediction] = []
    among: list[str] = []
    for start in range(0, len(paths), BATCH_SIZE):
        images = [read_image(p, min_side=classifier.min_side).image for p in paths[start : start + BATCH_SIZE]]
        for ranked in classifier.predict(images, top_k=len(classifier.labels)):
            best.append(ranked[0])
            among.append(next((p.label for p in ranked if p.label in allowed), ""))
    return best, (among if allowed else None)


def evaluate_version(settings: Settings, ref: str | None, *, against: str = "production") -> dict[str, Any]:
    from classifr.app.project import open_registry

    registry = open_registry(settings)
    if ref is None:
        try:
            ref = registry.resolve("candidate")
        except VersionNotFoundError:
            ref = "production"
    version, other = registry.resolve(ref), registry.resolve(against)
    # The backend serving would use (ONNX Runtime for a verified export, unless CLASSIFR_BACKEND says otherwise).
    model = load_classifier(registry.local_path(version), version=version, backend=settings.backend,
                            num_threads=settings.num_threads)
    baseline = load_classifier(registry.local_path(other), version=other, backend=settings.backend,
                               num_threads=settings.num_threads)
    data = collect([("project", ProjectDataset(settings.dataset_dir))])
    test = data.test
    if not test:
        raise ClassifrError("the project dataset has no held-out images yet: add more images to each label")
    paths, references = [s.path for s in test], [s.label for s in test]
    best, among = top1_scored_and_among(model, paths, baseline.labels.names)
    predictions = [p.label for p in best]
    added = [name for name in model.labels.names if name not in set(baseline.labels.names)]
    cache = settings.cache_dir / "evaluate"
    metrics = classification_metrics(references, predictions, labels=model.labels.names, cache_dir=cache)
    comparison = compare_with_parent(
        references, predictions, top1(baseline, paths), parent_labels=baseline.labels.names,
        restricted_predictions=among, new_labels=added, cache_dir=cache,
    )
    return {"version": version, "against": other, "backend": model.backend, "metrics": metrics.to_json(),
            "held_out": data.held_out_report(), "comparison": comparison.to_json()}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="classifr evaluate", description="Evaluate a version on the held-out images.")
    parser.add_argument("version", nargs="?", metavar="V", help="version or alias (default: candidate, else production)")
    parser.add_argument("--against", default="production", metavar="REF", help="compare with this version (default production)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        configure_runtime(settings.num_threads)
        result = evaluate_version(settings, args.version, against=args.against)
    except ClassifrError as err:
        print(f"classifr: error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        m, c = result["metrics"], result["comparison"]
        print(f"{result['version']}: accuracy {m['accuracy']:.1%}, macro F1 {m['macro_f1']:.1%} on {m['num_images']} held-out images; "
              f"churn against {result['against']} {c['churn']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
