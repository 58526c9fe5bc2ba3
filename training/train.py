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
import math
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
from classifr.core.errors import ClassifrError
from classifr.core.images import ImageLimits
from classifr.core.labels import LabelSet
from classifr.core.storage import StorageError, append_whole
from classifr.data.dataset import ProjectDataset
from classifr.inference.backbones import (
    OFFLINE_BACKBONES,
    backbone_folder,
    load_backbone,
)
from classifr.inference.classifier import Classifier, configure_runtime
from classifr.inference.version_check import VersionCheckError, check_promotable
from classifr.versions.folder import architecture
from classifr.versions.registry import ModelRegistry
from training import head as head_training
from training.anchors import look_alikes, traffic_anchors
from training.data import TrainingData, collect, external_dataset
from training.embeddings import (
    EmbeddingCache,
    backbone_fingerprint,
    classifier_head,
    embed_files,
)
from training.evaluation import top1, top1_scored_and_among
from training.gate import GateResult, check_gate
from training.metrics import (
    classification_metrics,
    compare_with_parent,
    save_confusion_png,
)
from training.processes import (
    is_main_process,
    one_at_a_time,
    process_state,
    process_tag,
    threads_per_process,
)
from training.publish import VersionFiles, publish
from training.resources import ResourceMeter
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
    batch_size: int = 32  # full strategy: images per optimizer step, over all processes together
    seed: int = 0
    progress: bool = True
    traffic_anchors: bool = True  # use recent predictions from the log as anchors (head strategy, added labels)
    onnx_int8: bool = False  # also keep an int8 ONNX graph when it loses at most 0.5 point on the eval split
    backbone: str | None = None  # an embedded ImageNet backbone to start from instead of the parent's weights

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ClassifrError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.promote not in PROMOTE_CHOICES:
            raise ClassifrError(f"promote must be one of {', '.join(PROMOTE_CHOICES)}, got {self.promote!r}")
        if self.backbone is not None and self.backbone not in OFFLINE_BACKBONES:
            raise ClassifrError(f"backbone must be one of {', '.join(OFFLINE_BACKBONES)}, got {self.backbone!r}")
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
    # Per epoch (full) or the embedding pass (head): loss, accuracy, resources; into metrics.json.
    history: list[dict] = field(default_factory=list)


def run(
    settings: Settings,
    options: TrainOptions,
    *,
    registry: ModelRegistry | None = None,
    on_progress: Callable[[str, float], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainOutcome | None:
    """One training run, published as a new version; see the module docstring.

    Under `accelerate launch` every process loads the data and trains its share; only the main
    process goes on to evaluate, publish and promote: the others get None (docs/training-gpu.md).
    """
    from classifr.app.project import default_version_for, open_registry

    report = on_progress or (lambda _stage, _fraction: None)
    timings: dict[str, float] = {}
    clock = _clock(timings)
    registry = registry or open_registry(settings, default_version=default_version_for(settings))
    parent_version = registry.resolve(options.parent)
    with clock("load"), one_at_a_time():
        parent, start, start_dir = _load_models(registry, parent_version, options, settings)
        datasets = [("project", ProjectDataset(settings.dataset_dir))]
        datasets += [(source, external_dataset(source, settings.cache_dir, known=list(start.labels))) for source in options.datasets]
        data = collect(datasets)
        labels, added = plan_labels(start.labels, data.labels, new_head=options.new_head)
    logger.info("training %s from %s: %d labels, new: %s", options.strategy, parent_version, len(labels), added)
    report("training", 0.1)
    run_name = f"{options.strategy}-from-{parent_version}"
    with RunTracker.start(folder=tracking_folder(settings), run_name=run_name, config=asdict(options)) as tracker:

        def record(values: dict) -> None:
            """An epoch or a stage (the embedding pass) as it ends: to the tracking run and the Train tab."""
            tracker.log(values, step=values.get("steps"))
            if on_epoch is not None:
                on_epoch(values)

        with clock("train"):
            trained = _train(start, parent, data, labels, added, options, settings, report, registry, record)
        if not is_main_process():
            return None
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
                model=trained.model, processor_source=start_dir, labels=labels, labels_added=added, parent=parent_version,
                strategy=options.strategy, hyperparameters=trained.hyperparameters, metrics=metrics.to_json(),
                comparison={**comparison.to_json(), "parent_accuracy": _accuracy(references, trained.parent_predictions)},
                gate=gate.to_json(), datasets=data.sources, train_counts=data.counts()["train"], confusion_png=png,
                held_out=data.held_out_report(), history=trained.history,
                reference_scores=[round(score, 5) for score in trained.scores],
                eval_images=[s.path for s in data.test], eval_labels=references, onnx_int8=options.onnx_int8,
            )
            info = publish(registry, files, metadata={**_metadata(options, data, added, metrics, gate),
                                                      **_start_metadata(start, options)})
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


def _load_models(registry: ModelRegistry, parent_version: str, options: TrainOptions,
                 settings: Settings) -> tuple[Classifier, Classifier, Path]:
    """(parent, start, start folder): the version the candidate is compared with, the model training
    starts from, and the folder whose processor config the new version keeps.

    They are the same model unless another backbone is asked for (`--backbone`): training then starts
    from that embedded ImageNet backbone, with its own preprocessing, and the parent stays what the
    candidate is compared with and what the gate judges.
    """
    parent_dir = registry.local_path(parent_version)
    parent = Classifier.load(parent_dir, version=parent_version)
    if options.backbone is None:
        return parent, parent, parent_dir
    start = load_backbone(options.backbone, settings.cache_dir)
    logger.info("starting from the %s backbone; compared with %s", options.backbone, parent_version)
    return parent, start, backbone_folder(options.backbone, settings.cache_dir)


def _start_metadata(start: Classifier, options: TrainOptions) -> dict[str, Any]:
    """What the new version is built on: its architecture, and the embedded backbone when one was asked for."""
    return {"architecture": architecture(start.model.config.to_dict()), "backbone": options.backbone}


def _promote_checked(registry: ModelRegistry, version: str, settings: Settings) -> tuple[bool, list[str]]:
    """Promote `version` if it passes the app's promotion checks; else keep it a candidate, saying why."""
    try:
        check_promotable(registry.local_path(version), version=version, settings=settings)
    except VersionCheckError as err:
        logger.warning("not promoted: %s", err)
        return False, [f"not promoted: {err}"]
    registry.promote(version)
    return True, []


def _train(start: Classifier, parent: Classifier, data: TrainingData, labels: LabelSet, added: list[str],
           options: TrainOptions, settings: Settings, report: Callable[[str, float], None], registry: ModelRegistry,
           record: Callable[[dict], None]) -> _Trained:
    """Train with the chosen strategy; `record` gets each history record (stage or epoch) as it ends."""
    if options.strategy == "full":
        return _train_full(start, parent, data, labels, added, options, settings, report, registry, record)
    trained = _train_head(start, parent, data, labels, added, options, settings, report, registry)
    for values in trained.history:
        record(values)
    return trained


def _train_head(start: Classifier, parent: Classifier, data: TrainingData, labels: LabelSet, added: list[str],
                options: TrainOptions, settings: Settings, report: Callable[[str, float], None],
                registry: ModelRegistry) -> _Trained:
    """Fit the head on `start`'s frozen features; the parent's own answers on the held-out images are
    what the candidate is compared with."""
    limits = ImageLimits(
        max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
        max_decoded_bytes=settings.max_decoded_bytes,
    )
    cache = EmbeddingCache(settings.cache_dir / "embeddings", backbone_fingerprint(start))
    samples = list(data.train) + list(data.test)
    with ResourceMeter() as meter:  # images/s is high when most features come from the cache
        meter.start()
        features = embed_files(
            start, {s.sha256: s.path for s in samples}, cache, limits=limits, progress=options.progress,
            on_batch=lambda done, total: report("embedding", 0.1 + 0.6 * done / max(total, 1)),
        )
        embedding = {"stage": "embedding", **meter.stop(len(samples))}
    train_x, test_x = features[: len(data.train)], features[len(data.train) :]
    train_y = np.array([labels.id_of(s.label) for s in data.train])
    warnings: list[str] = []
    start_head = classifier_head(start.model)
    if options.new_head:
        weights = head_training.train_new_head(train_x, train_y, len(labels), l2=options.l2)
    else:
        # Served traffic was logged with the parent's features: of no use to another backbone.
        anchors, anchor_counts = _anchors(train_x, data, added, parent.version, settings, registry,
                                          served_traffic=options.traffic_anchors and start is parent)
        if added and len(anchors) < head_training.MIN_ANCHORS:
            warnings.append(
                f"only {len(anchors)} anchor images (not of a new label); with fewer than "
                f"{head_training.MIN_ANCHORS} the new labels may take over other images: add or import more"
            )
        weights = head_training.train_extended_head(
            train_x, train_y, start_head.weight.detach(), start_head.bias.detach(), len(added), anchors,
            l2=options.l2, anchor_weight=options.anchor_weight,
        )
    model = with_head(start.model, labels, weights.weight, weights.bias)
    test = torch.from_numpy(test_x)
    logits = test @ weights.weight.T + weights.bias
    best = logits.softmax(-1).max(-1)
    predictions = best.indices.tolist()
    if start is parent:  # the parent's head on the features already computed
        parent_predictions = [parent.labels.names[i] for i in start_head(test).argmax(-1).tolist()]
    else:
        parent_predictions = top1(parent, [s.path for s in data.test])
    return _Trained(
        model=model,
        predictions=[labels.names[i] for i in predictions],
        parent_predictions=parent_predictions,
        hyperparameters={"l2": options.l2, "anchor_weight": options.anchor_weight, "new_head": options.new_head,
                         "backbone": options.backbone, "optimizer": "L-BFGS", "iterations": weights.iterations,
                         **({} if options.new_head else anchor_counts)},
        warnings=warnings,
        history=[embedding],
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
             registry: ModelRegistry, *, served_traffic: bool) -> tuple[np.ndarray, dict[str, int]]:
    """Images that are not of a new label: the project's own, plus recent traffic from the prediction log."""
    new = {name.casefold() for name in added}
    labels = [s.label.casefold() for s in data.train]
    project = train_x[[label not in new for label in labels]]
    traffic = np.zeros((0, train_x.shape[1]), np.float32)
    look_alike = 0
    if added and served_traffic:
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


def _train_full(start: Classifier, parent: Classifier, data: TrainingData, labels: LabelSet, added: list[str],
                options: TrainOptions, settings: Settings, report: Callable[[str, float], None],
                registry: ModelRegistry, record: Callable[[dict], None]) -> _Trained:
    """Linear probe, then fine-tune: the head strategy's solution is where the whole network starts.

    A head fitted on frozen features first means the backbone is never pulled about by a random (or
    zero-row) head in the first steps (docs/retraining.md, "The full strategy").
    """
    from accelerate import PartialState

    from training.full import FullConfig, train_full

    state = PartialState()
    with state.main_process_first():  # the main process fills the embedding cache; the others then read it
        probe = _train_head(start, parent, data, labels, added, options, settings, report, registry)
    probe_accuracy = _accuracy([s.label for s in data.test], probe.predictions)
    logger.info("linear probe: %.4f held-out accuracy; fine-tuning the whole network", probe_accuracy)
    config = FullConfig(epochs=options.epochs, batch_size=_per_process_batch(options.batch_size, state.num_processes),
                        seed=options.seed)
    epochs = options.epochs
    for values in probe.history:  # the probe's embedding pass, before the epochs
        record(values)

    def epoch_ended(values: dict) -> None:
        record(values)  # learning curves and resources, per epoch
        report("fine-tuning", 0.7 + 0.2 * values["epoch"] / epochs)

    report("fine-tuning", 0.7)
    result = train_full(
        probe.model, start.preprocess, [(s.path, labels.id_of(s.label)) for s in data.train],
        [(s.path, labels.id_of(s.label)) for s in data.test], config=config, min_side=start.min_side,
        progress=options.progress, on_epoch=epoch_ended,
    )
    trained = Classifier(result.model, start.preprocess, version="candidate")
    best, among = top1_scored_and_among(trained, [s.path for s in data.test], parent.labels.names)
    return _Trained(
        model=result.model,
        predictions=[p.label for p in best],
        scores=[p.score for p in best],
        restricted_predictions=among,
        parent_predictions=probe.parent_predictions,
        hyperparameters={**asdict(config), "best_epoch": result.best_epoch, "stop_reason": result.stop_reason,
                         "linear_probe": {**probe.hyperparameters, "accuracy": probe_accuracy},
                         **result.extra},
        warnings=probe.warnings,
        history=[*probe.history, *result.history],
    )


def _per_process_batch(batch_size: int, num_processes: int) -> int:
    """The global batch split between the processes; it must split evenly."""
    if batch_size < num_processes or batch_size % num_processes:
        raise ClassifrError(f"--batch-size {batch_size} does not split evenly between {num_processes} processes")
    return batch_size // num_processes


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


def _epoch_writer(path: Path | None) -> Callable[[dict], None] | None:
    """Appends `{"epoch_record": {...}}` lines beside the progress (the Train tab's epoch table)."""
    if path is None:
        return None

    def write(record: dict) -> None:
        line = json.dumps({"epoch_record": _plain_record(record)}) + "\n"
        try:  # whole lines only (docs/storage.md); a throwaway file, so no fsync
            append_whole(path, line.encode(), what="the training progress", durable=False)
        except StorageError as err:
            logger.warning("%s", err)

    return write


def _plain_record(record: dict) -> dict:
    """Values JSON holds: non-finite numbers as null, anything else (a tensor) as its text; never an error."""
    plain: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif not (value is None or isinstance(value, (str, int, float, bool))):
            value = str(value)
        plain[str(key)] = value
    return plain


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="classifr train", description="Train a new model version.")
    parser.add_argument("--parent", default="production",
                        help="version or alias to start from and compare with (default production)")
    parser.add_argument("--backbone", metavar="NAME",
                        help=f"start from this embedded ImageNet backbone instead of the parent's weights "
                             f"({', '.join(OFFLINE_BACKBONES)}); the parent is still what the candidate is compared with")
    parser.add_argument("--strategy", choices=STRATEGIES, default="head",
                        help="head: frozen backbone, cached features (CPU, seconds); full: the head, then the whole "
                             "network but its lowest layers (minutes an epoch on a CPU; GPUs with accelerate launch)")
    parser.add_argument("--new-head", action="store_true", help="only the labels in the data, on a fresh head")
    parser.add_argument("--dataset", action="append", default=[], metavar="SOURCE",
                        help="also train on this imagefolder, Parquet or Hub dataset (repeatable)")
    parser.add_argument("--promote", choices=PROMOTE_CHOICES, default="auto",
                        help="auto: only when the gate passes (default); always; never")
    parser.add_argument("--l2", type=float, default=head_training.DEFAULT_L2, help="head strategy: L2 strength")
    parser.add_argument("--anchor-weight", type=float, default=head_training.DEFAULT_ANCHOR_WEIGHT,
                        help="head strategy: weight of keeping the parent's answers on anchor images")
    parser.add_argument("--epochs", type=int, default=10, help="full strategy: epochs (early stopping may end sooner)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="full strategy: images per optimizer step over all processes (split between them)")
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
    processes = process_state()
    # The other processes of an `accelerate launch` run log only errors: the main process speaks for the run.
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level if processes.is_main_process else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _train_and_report(args, processes)
    finally:
        # Once, at the very end: train_full leaves the process group up for what follows it.
        processes.destroy_process_group()


def _train_and_report(args: argparse.Namespace, processes) -> int:
    """Train; the main process prints the outcome, the others wait for it to have published."""
    from classifr.app.project import default_version_for, open_registry

    try:
        settings = Settings.from_env()
        configure_runtime(threads_per_process(settings.num_threads))
        torch.manual_seed(args.seed)
        options = TrainOptions(
            parent=args.parent, strategy=args.strategy, new_head=args.new_head, datasets=tuple(args.dataset),
            promote=args.promote, l2=args.l2, anchor_weight=args.anchor_weight, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
            progress=not args.quiet, traffic_anchors=not args.no_traffic_anchors, onnx_int8=args.onnx_int8,
            backbone=args.backbone,
        )
        _check_processes(options, processes.num_processes)
        with one_at_a_time():  # the first bootstraps an empty registry, the others find it
            registry = open_registry(settings, default_version=default_version_for(settings))
        progress = _progress_writer(args.progress_file) if processes.is_main_process else None
        epochs = _epoch_writer(args.progress_file) if processes.is_main_process else None
        outcome = run(settings, options, registry=registry, on_progress=progress, on_epoch=epochs)
    except ClassifrError as err:
        # Exiting non-zero makes the launcher stop the other processes (docs/training-gpu.md).
        print(f"classifr: error{process_tag(processes)}: {err}", file=sys.stderr)
        return 1
    if outcome is not None:
        _print_outcome(outcome, json_output=args.json)
    processes.wait_for_everyone()  # the other processes wait here until the main one has published
    return 0


def _print_outcome(outcome: TrainOutcome, *, json_output: bool) -> None:
    for warning in outcome.warnings:
        print(f"classifr: warning: {warning}", file=sys.stderr)
    if json_output:
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


# --- several processes: docs/training-gpu.md ---------------------------------------------------------


def _check_processes(options: TrainOptions, num_processes: int) -> None:
    """Refuse what several processes cannot share before anything loads: only the full strategy is
    split between them, each taking an equal part of every batch."""
    if num_processes > 1 and options.strategy != "full":
        raise ClassifrError(
            f"the {options.strategy} strategy runs in one process: start it without accelerate launch "
            f"(got {num_processes} processes)"
        )
    if options.strategy == "full":
        _per_process_batch(options.batch_size, num_processes)


if __name__ == "__main__":
    sys.exit(main())
