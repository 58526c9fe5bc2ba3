"""Train a new model version from a parent version on the project dataset (and external datasets).

    python -m training.train [--strategy head|full] [--new-head] [--dataset SOURCE]... [--promote auto|always|never] [--json]
    classifr train ...                                   # the same, from the classifr command
    accelerate launch -m training.train --strategy full  # full fine-tune on every GPU / node accelerate is configured for

The run: load the parent (default: production) -> collect train/test images -> plan the labels
(parent labels + new ones, or only the data's with --new-head) -> train (head on cached frozen
features, or the whole network) -> evaluate on the held-out test split against the parent ->
publish as `candidate` -> promote when asked (or, with auto, when the gate passes).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classifr.core.config import Settings
from classifr.data.dataset import ProjectDataset
from classifr.core.errors import ClassifrError
from classifr.core.images import ImageLimits
from classifr.core.labels import LabelSet
from classifr.core.storage import StorageError, append_whole
from classifr.inference.classifier import Classifier, configure_runtime
from classifr.inference.version_check import VersionCheckError, check_promotable
from classifr.versions.registry import ModelRegistry
from training import head as head_training
from training.anchors import look_alikes, traffic_anchors
from training.data import TrainingData, collect, external_dataset
from training.embeddings import EmbeddingCache, backbone_fingerprint, classifier_head, embed_files
from training.evaluation import top1, top1_scored_and_among
from training.gate import GateResult, check_gate
from training.metrics import classification_metrics, compare_with_parent, save_confusion_png
from training.publish import VersionFiles, publish
from training.tracking import RunTracker, tracking_folder
from training.versions import plan_labels, with_head

logger = logging.getLogger(__name__)

STRATEGIES = ("head", "full")
PROMOTE_CHOICES = ("auto", "always", "never")


@dataclass(frozen=True)
class TrainOptions:
    parent: str = "production"
    strategy: str = "head"
    new_head: bool = False
    datasets: tuple[str, ...] = ()
    promote: str = "auto"
    l2: float = head_training.DEFAULT_L2
    anchor_weight: float = head_training.DEFAULT_ANCHOR_WEIGHT
    epochs: int = 10
    seed: int = 0
    progress: bool = True
    traffic_anchors: bool = True  # use recent predictions from the log as anchors (head strategy, added labels)
    onnx_int8: bool = False  # also keep an int8 ONNX graph when it loses at most 0.5 point on the eval split

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ClassifrError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.promote not in PROMOTE_CHOICES:
            raise ClassifrError(f"promote must be one of {', '.join(PROMOTE_CHOICES)}, got {self.promote!r}")
        if not self.l2 >= 0 or not self.anchor_weight >= 0:
            raise ClassifrError(f"l2 and anchor weight must be >= 0, got {self.l2!r} and {self.anchor_weight!r}")


@dataclass
class TrainOutcome:
    """What `classifr train --json` prints (the docs/cli.md shape plus details)."""

    version: str
    parent: str
    labels_added: list[str]
    metrics: dict[str, Any]
    comparison: dict[str, Any]
    gate: dict[str, Any]
    promoted: bool
    strategy: str
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Trained:
    model: torch.nn.Module
    predictions: list[str]
    parent_predictions: list[str]
    hyperparameters: dict[str, Any]
    warnings: list[str]
    scores: list[float]  # top-1 probability on each eval image: the reference for drift monitoring
    # The best label among the parent's labels only, per eval image: forgetting is measured on it.
    restricted_predictions: list[str] | None = None


def run(
    settings: Settings,
    options: TrainOptions,
    *,
    registry: ModelRegistry | None = None,
    on_progress: Callable[[str, float], None] | None = None,
) -> TrainOutcome:
    """One training run, published as a new version; see the module docstring."""
    from classifr.app.project import default_version_for, open_registry

    report = on_progress or (lambda _stage, _fraction: None)
    timings: dict[str, float] = {}
    clock = _clock(timings)
    registry = registry or open_registry(settings, default_version=default_version_for(settings))
    parent_version = registry.resolve(options.parent)
    parent_dir = registry.local_path(parent_version)
    with clock("load"):
        parent = Classifier.load(parent_dir, version=parent_version)
        datasets = [("project", ProjectDataset(settings.dataset_dir))]
        datasets += [(source, external_dataset(source, settings.cache_dir, known=list(parent.labels))) for source in options.datasets]
        data = collect(datasets)
        labels, added = plan_labels(parent.labels, data.labels, new_head=options.new_head)
    logger.info("training %s from %s: %d labels, new: %s", options.strategy, parent_version, len(labels), added)
    report("training", 0.1)
    run_name = f"{options.strategy}-from-{parent_version}"
    with RunTracker.start(folder=tracking_folder(settings), run_name=run_name, config=asdict(options)) as tracker:
        with clock("train"):
            trained = _train(parent, data, labels, added, options, settings, report, tracker, registry)
        references = [s.label for s in data.test]
        if not references:
            raise ClassifrError("no image is held out for testing yet: add more images to each label")
        with clock("evaluate"):
            evaluate_cache = settings.cache_dir / "evaluate"  # evaluate's module cache stays in the project
            metrics = classification_metrics(references, trained.predictions, labels=labels.names, cache_dir=evaluate_cache)
            comparison = compare_with_parent(
                references, trained.predictions, trained.parent_predictions,
                parent_labels=parent.labels.names, restricted_predictions=trained.restricted_predictions,
                new_labels=added, cache_dir=evaluate_cache,
            )
            images_per_label = Counter(s.label for s in (*data.train, *data.test))
            gate = check_gate(comparison, added, images_per_label=images_per_label)
        report("publishing", 0.9)
        with clock("publish"), tempfile.TemporaryDirectory() as tmp:
            png = save_confusion_png(metrics, Path(tmp) / "confusion.png", title=f"{options.strategy} from {parent_version}")
            files = VersionFiles(
                model=trained.model, processor_source=parent_dir, labels=labels, labels_added=added, parent=parent_version,
                strategy=options.strategy, hyperparameters=trained.hyperparameters, metrics=metrics.to_json(),
                comparison={**comparison.to_json(), "parent_accuracy": _accuracy(references, trained.parent_predictions)},
                gate=gate.to_json(), datasets=data.sources, train_counts=data.counts()["train"], confusion_png=png,
                held_out=data.held_out_report(),
                reference_scores=[round(score, 5) for score in trained.scores],
                eval_images=[s.path for s in data.test], eval_labels=references, onnx_int8=options.onnx_int8,
            )
            info = publish(registry, files, metadata=_metadata(options, data, added, metrics, gate))
        promoted = options.promote == "always" or (options.promote == "auto" and gate.passed)
        refusals: list[str] = []
        if promoted:
            promoted, refusals = _promote_checked(registry, info.version, settings)
        report("done", 1.0)
        outcome = TrainOutcome(
            version=info.version, parent=parent_version, labels_added=added, metrics=metrics.to_json(),
            comparison=files.comparison, gate=gate.to_json(), promoted=promoted, strategy=options.strategy,
            warnings=trained.warnings + gate.warnings + refusals, timings=timings,
        )
        tracker.log({"metrics": outcome.metrics, "comparison": outcome.comparison, "timings": timings,
                     "gate_passed": outcome.gate["passed"], "promoted": outcome.promoted})
    return outcome


def _promote_checked(registry: ModelRegistry, version: str, settings: Settings) -> tuple[bool, list[str]]:
    """Promote `version` if it passes the app's promotion checks; else keep it a candidate, saying why."""
    try:
        check_promotable(registry.local_path(version), version=version, settings=settings)
    except VersionCheckError as err:
        logger.warning("not promoted: %s", err)
        return False, [f"not promoted: {err}"]
    registry.promote(version)
    return True, []


def _train(parent: Classifier, data: TrainingData, labels: LabelSet, added: list[str], options: TrainOptions,
           settings: Settings, report: Callable[[str, float], None], tracker: RunTracker,
           registry: ModelRegistry) -> _Trained:
    if options.strategy == "full":
        return _train_full(parent, data, labels, added, options, tracker)
    return _train_head(parent, data, labels, added, options, settings, report, registry)


def _train_head(parent: Classifier, data: TrainingData, labels: LabelSet, added: list[str], options: TrainOptions,
                settings: Settings, report: Callable[[str, float], None], registry: ModelRegistry) -> _Trained:
    limits = ImageLimits(
        max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
        max_decoded_bytes=settings.max_decoded_bytes,
    )
    cache = EmbeddingCache(settings.cache_dir / "embeddings", backbone_fingerprint(parent))
    samples = list(data.train) + list(data.test)
    features = embed_files(
        parent, {s.sha256: s.path for s in samples}, cache, limits=limits, progress=options.progress,
        on_batch=lambda done, total: report("embedding", 0.1 + 0.6 * done / max(total, 1)),
    )
    train_x, test_x = features[: len(data.train)], features[len(data.train) :]
    train_y = np.array([labels.id_of(s.label) for s in data.train])
    warnings: list[str] = []
    parent_head = classifier_head(parent.model)
    if options.new_head:
        weights = head_training.train_new_head(train_x, train_y, len(labels), l2=options.l2)
    else:
        anchors, anchor_counts = _anchors(train_x, data, added, parent.version, settings, registry, options)
        if added and len(anchors) < head_training.MIN_ANCHORS:
            warnings.append(
                f"only {len(anchors)} anchor images (not of a new label); with fewer than "
                f"{head_training.MIN_ANCHORS} the new labels may take over other images: add or import more"
            )
        weights = head_training.train_extended_head(
            train_x, train_y, parent_head.weight.detach(), parent_head.bias.detach(), len(added), anchors,
            l2=options.l2, anchor_weight=options.anchor_weight,
        )
    model = with_head(parent.model, labels, weights.weight, weights.bias)
    test = torch.from_numpy(test_x)
    logits = test @ weights.weight.T + weights.bias
    best = logits.softmax(-1).max(-1)
    predictions = best.indices.tolist()
    parent_predictions = parent_head(test).argmax(-1).tolist()
    return _Trained(
        model=model,
        predictions=[labels.names[i] for i in predictions],
        parent_predictions=[parent.labels.names[i] for i in parent_predictions],
        hyperparameters={"l2": options.l2, "anchor_weight": options.anchor_weight, "new_head": options.new_head,
                         "optimizer": "L-BFGS", "iterations": weights.iterations,
                         **({} if options.new_head else anchor_counts)},
        warnings=warnings,
        scores=best.values.tolist(),
        restricted_predictions=_best_among(logits, labels, parent.labels.names),
    )


def _best_among(logits: torch.Tensor, labels: LabelSet, allowed: Sequence[str]) -> list[str] | None:
    """Each row's best label among `allowed` only (None when the model has none of them)."""
    allowed_set = set(allowed)
    columns = [i for i, name in enumerate(labels.names) if name in allowed_set]
    if not columns:
        return None
    best = logits[:, columns].argmax(-1).tolist()
    return [labels.names[columns[i]] for i in best]


def _anchors(train_x: np.ndarray, data: TrainingData, added: list[str], parent_version: str, settings: Settings,
             registry: ModelRegistry, options: TrainOptions) -> tuple[np.ndarray, dict[str, int]]:
    """Images that are not of a new label: the project's own, plus recent traffic from the prediction log."""
    new = {name.casefold() for name in added}
    labels = [s.label.casefold() for s in data.train]
    project = train_x[[label not in new for label in labels]]
    traffic = np.zeros((0, train_x.shape[1]), np.float32)
    look_alike = 0
    if added and options.traffic_anchors:
        found = traffic_anchors(settings, registry, parent_version, exclude_labels=added,
                                exclude_sha256={s.sha256 for s in (*data.train, *data.test)})
        if len(found) and found.shape[1] == train_x.shape[1]:
            by_label = [train_x[[label == name.casefold() for label in labels]] for name in added]
            mask = look_alikes(found, by_label)
            traffic, look_alike = found[~mask], int(mask.sum())
    counts = {"project_anchors": len(project), "traffic_anchors": len(traffic), "traffic_look_alikes_left_out": look_alike}
    logger.info("anchors: %d project images, %d from served traffic (%d look like a new label, left out)",
                len(project), len(traffic), look_alike)
    return np.concatenate([project, traffic]) if len(traffic) else project, counts


def _train_full(parent: Classifier, data: TrainingData, labels: LabelSet, added: list[str], options: TrainOptions,
                tracker: RunTracker) -> _Trained:
    from training.full import FullConfig, train_full

    head = classifier_head(parent.model)
    # Start from the head strategy's layout: parent rows kept (or a fresh head), new rows at zero.
    start = LabelSet(labels.names)
    weight = torch.zeros(len(start), head.in_features)
    bias = torch.zeros(len(start))
    if not options.new_head:
        weight[: len(parent.labels)] = head.weight.detach()
        bias[: len(parent.labels)] = head.bias.detach()
    model = with_head(parent.model, start, weight, bias)
    config = FullConfig(epochs=options.epochs, seed=options.seed)
    result = train_full(
        model, parent.preprocess, [(s.path, labels.id_of(s.label)) for s in data.train],
        [(s.path, labels.id_of(s.label)) for s in data.test], config=config, min_side=parent.min_side,
        progress=options.progress,
        on_epoch=lambda record: tracker.log(record, step=record["steps"]),  # learning curves, per epoch
    )
    trained = Classifier(result.model, parent.preprocess, version="candidate")
    best, among = top1_scored_and_among(trained, [s.path for s in data.test], parent.labels.names)
    return _Trained(
        model=result.model,
        predictions=[p.label for p in best],
        scores=[p.score for p in best],
        restricted_predictions=among,
        parent_predictions=top1(parent, [s.path for s in data.test]),
        hyperparameters={**asdict(config), "best_epoch": result.best_epoch},
        warnings=[],
    )


def _accuracy(references: Sequence[str], predictions: Sequence[str]) -> float:
    return sum(r == p for r, p in zip(references, predictions)) / len(references)


def _metadata(options: TrainOptions, data: TrainingData, added: list[str], metrics, gate: GateResult) -> dict[str, Any]:
    return {
        "strategy": options.strategy,
        "labels_added": added,
        "accuracy": metrics.accuracy,
        "macro_f1": metrics.macro_f1,
        "gate_passed": gate.passed,
        "datasets": data.sources,
    }


def _clock(timings: dict[str, float]):
    """`with clock("stage"):` records the stage's wall time in `timings`."""

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            timings[name] = round(time.perf_counter() - started, 3)

    return timed


def _progress_writer(path: Path | None) -> Callable[[str, float], None] | None:
    if path is None:
        return None

    def write(stage: str, fraction: float) -> None:
        line = json.dumps({"stage": stage, "fraction": round(fraction, 4)}) + "\n"
        try:  # whole lines only (docs/storage.md); a throwaway file, so no fsync
            append_whole(path, line.encode(), what="the training progress", durable=False)
        except StorageError as err:  # progress is a convenience: the run goes on without it
            logger.warning("%s", err)

    return write


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="classifr train", description="Train a new model version.")
    parser.add_argument("--parent", default="production", help="version or alias to start from (default production)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="head",
                        help="head: frozen backbone, cached features (CPU, seconds); full: fine-tune everything (GPU)")
    parser.add_argument("--new-head", action="store_true", help="only the labels in the data, on a fresh head")
    parser.add_argument("--dataset", action="append", default=[], metavar="SOURCE",
                        help="also train on this imagefolder, Parquet or Hub dataset (repeatable)")
    parser.add_argument("--promote", choices=PROMOTE_CHOICES, default="auto",
                        help="auto: only when the gate passes (default); always; never")
    parser.add_argument("--l2", type=float, default=head_training.DEFAULT_L2, help="head strategy: L2 strength")
    parser.add_argument("--anchor-weight", type=float, default=head_training.DEFAULT_ANCHOR_WEIGHT,
                        help="head strategy: weight of keeping the parent's answers on anchor images")
    parser.add_argument("--epochs", type=int, default=10, help="full strategy: epochs (early stopping may end sooner)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--onnx-int8", action="store_true",
                        help="also export a dynamically quantized int8 ONNX graph, kept if within 0.5 point of float32")
    parser.add_argument("--no-traffic-anchors", action="store_true",
                        help="head strategy: do not use recent served predictions as anchors when adding labels")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--progress-file", type=Path, metavar="FILE",
                        help="append progress as JSON lines {stage, fraction} (the app's Train tab reads it)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        configure_runtime(settings.num_threads)
        torch.manual_seed(args.seed)
        options = TrainOptions(
            parent=args.parent, strategy=args.strategy, new_head=args.new_head, datasets=tuple(args.dataset),
            promote=args.promote, l2=args.l2, anchor_weight=args.anchor_weight, epochs=args.epochs, seed=args.seed,
            progress=not args.quiet, traffic_anchors=not args.no_traffic_anchors, onnx_int8=args.onnx_int8,
        )
        outcome = run(settings, options, on_progress=_progress_writer(args.progress_file))
    except ClassifrError as err:
        print(f"classifr: error: {err}", file=sys.stderr)
        return 1
    for warning in outcome.warnings:
        print(f"classifr: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(outcome.to_json(), indent=2))
    else:
        state = "promoted to production" if outcome.promoted else "candidate (not promoted)"
        print(
            f"{outcome.version} from {outcome.parent}: accuracy {outcome.metrics['accuracy']:.1%} on "
            f"{outcome.metrics['num_images']} held-out images, macro F1 {outcome.metrics['macro_f1']:.1%}, "
            f"new labels {outcome.labels_added or 'none'}; {state}"
        )
        print(f"gate: {'passed' if outcome.gate['passed'] else 'not passed'}")
        for line in outcome.gate["summary"]:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
